"""Training: the PLW loss, the step, evaluation, checkpoints and the loop that runs a stage."""
