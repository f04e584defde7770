"""Talking to a trained model: a base model with a run's adapters at any checkpoint, streamed.

The "deliver" layer, with :mod:`engine.export`: above training (it reads run folders and loads
what training wrote), below the command line and the app, which both drive it.

- :mod:`.stream`: what a generation yields (frozen values) and its settings, without MLX, so the
  app can import them at start;
- :mod:`.weights`: the model loaded once, switched between the base and any checkpoint;
- :mod:`.chat`: a chat's turns as messages, and the oldest dropped when they no longer fit;
- :mod:`.generate`: the prompt through the chat template, and the tokens as they come;
- :mod:`.prompts`: a run's validation prompts with their reference answers.
"""
