"""``tuner generate``: one answer from a run's adapter (any checkpoint), or from a base model,
streamed to the terminal as it is generated, through the model's chat template.

The same engine as the app's Playground screen (:mod:`engine.playground`); MLX is imported when
the command runs, not with the command line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.errors import UserError


def add_generate_parser(sub) -> argparse.ArgumentParser:
    generate = sub.add_parser(
        "generate", help="answer a prompt with a run's adapter (or the base model), streamed as it is generated")
    generate.add_argument("source", metavar="RUN_DIR|MODEL",
                          help="a run folder (its final adapter unless --checkpoint or --base), or a model")
    generate.add_argument("--checkpoint", type=int, metavar="STEP", help="the run's checkpoint at this step")
    generate.add_argument("--base", action="store_true", help="the run's base model, without its adapter")
    generate.add_argument("--prompt", required=True, help="the user's message")
    generate.add_argument("--system", help="a system prompt before it")
    generate.add_argument("--temp", type=float, default=0.0, help="sampling temperature; 0 is greedy (default)")
    generate.add_argument("--top-p", type=float, default=1.0, help="nucleus sampling: keep this share of the "
                          "probability (default 1: all)")
    generate.add_argument("--max-tokens", type=int, default=256, help="longest answer in tokens (default 256)")
    return generate


def cmd_generate(args) -> int:
    """Print the answer as it streams, then one line on stderr: tokens, speed and why it ended."""
    from engine.playground.stream import Finished, Sampling, chat_messages

    sampling = Sampling(temp=args.temp, top_p=args.top_p, max_tokens=args.max_tokens)  # checked before loading
    if args.base and args.checkpoint is not None:
        raise UserError("--base and --checkpoint: choose one (the base has no checkpoints)")
    from engine.playground.generate import generate, prompt_ids
    from engine.playground.weights import BASE, FINAL, is_run_folder, open_playground, run_checkpoints, weights_file

    run = is_run_folder(args.source)
    if not run and args.checkpoint is not None:
        raise UserError(f"{args.source}: --checkpoint needs a run folder (one with a config.yaml)")
    which = BASE if args.base or not run else FINAL if args.checkpoint is None else args.checkpoint
    if which != BASE:  # a missing checkpoint is said before the model loads
        weights_file(run_checkpoints(Path(args.source).expanduser()), which)
    playground = open_playground(args.source)
    if run:
        playground.use(which)
    ids = prompt_ids(playground.tokenizer, chat_messages(args.prompt, args.system))
    for item in generate(playground.model, playground.tokenizer, ids, sampling):
        if isinstance(item, Finished):
            print(flush=True)
            print(f"[{describe(playground)}: {item.tokens} tokens, {item.tokens_per_second:.1f} tokens/s, "
                  f"{ENDINGS[item.reason]}]", file=sys.stderr)
        else:
            print(item.text, end="", flush=True)
    return 0


ENDINGS = {"stop": "the model ended its answer", "length": "max tokens reached", "stopped": "stopped"}


def describe(playground) -> str:
    using = playground.using
    if playground.run_dir is None or using == "base":
        return "base model"
    return "final adapter" if using == "final" else f"checkpoint {using}"
