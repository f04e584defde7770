"""Training a stage: its preparation, compute levers and loss path, the compiled step, the loop,
evaluation, what a checkpoint saves, reports, and chains of stages (engine/training/trainer.py
says which module holds which)."""
