"""One line of help per config key, shown beside the editor and by ``tuner validate``'s readers.

The wording targets the confusions users report most: LoRA scale versus alpha, what PLW does,
and which unit a step count is in.
"""

KEY_HELP: dict[str, str] = {
    "model": "Base model: a local folder, a Hugging Face id, or builtin:tiny-llama (the offline demo model).",
    "data": "A folder with train/valid/test .jsonl (.json, .csv, .parquet), one such file, or a Hugging Face dataset id.",
    "hf_dataset": "Hugging Face datasets to mix: path (or name), train_split, valid_split, test_split, *_feature, config.",
    "prompt_feature": "Column holding the prompt of prompt/completion records.",
    "completion_feature": "Column holding the completion of prompt/completion records.",
    "text_feature": "Column holding plain text (every token is trained).",
    "chat_feature": "Column holding a chat: a list of {role, content} messages.",
    "valid_fraction": "Share held out for validation when the data has no valid split.",
    "mask_prompt": "mlx-lm's switch: true means prompt_loss_weight 0, false means 1. An explicit prompt_loss_weight wins.",
    "prompt_loss_weight": "PLW: weight of prompt tokens in the loss (completion tokens weigh 1). 0 masks the prompt; "
    "0.01-0.1 helped short-completion data in published experiments.",
    "fine_tune_type": "lora (low-rank adapters), dora (weight-decomposed LoRA) or full (train the top blocks' weights).",
    "num_layers": "How many transformer blocks, counted from the top, are trained; -1 for all.",
    "lora_parameters": "rank (adapter size), scale (mlx-lm's multiplier: NOT alpha; scale = alpha / rank), dropout, keys.",
    "iters": "Training length in steps; one step is one batch.",
    "epochs": "Training length in passes over the training set, converted to steps (the last partial batch is trained).",
    "batch_size": "Examples per step, grouped by similar token length.",
    "grad_accumulation_steps": "Steps per optimizer update; schedules count updates, not steps.",
    "max_seq_length": "Tokens kept per example; longer ones are truncated and counted, empty completions dropped.",
    "learning_rate": "Peak learning rate (used as is when there is no lr_schedule).",
    "lr_schedule": "name (an mlx.optimizers.schedulers function), arguments, warmup and warmup_init; in optimizer updates.",
    "optimizer": "adam, adamw, muon, sgd or adafactor.",
    "optimizer_config": "Keyword arguments per optimizer, e.g. {adamw: {weight_decay: 0.01}}.",
    "max_grad_norm": "Clip the gradient's global norm to this value before each update.",
    "skip_nonfinite_batches": "A NaN/inf loss or gradient stops the run (weights untouched); allow this many skipped batches first.",
    "early_stopping_patience": "Stop after this many evaluations without a better validation completion loss.",
    "memory_limit_percent": "System memory use (%) at which the run checkpoints, then pauses (app) or stops (headless).",
    "swap_growth_gb": "Swap growth (GB) during the run that checkpoints, then pauses or stops it, before the machine stalls.",
    "compute_dtype": "auto: float32 on the CPU (the only fast dtype there), the model's own dtype on Metal.",
    "grad_checkpoint": "Recompute activations in the backward pass: less memory, about a third slower.",
    "clear_cache_threshold": "Accepted for mlx-lm compatibility; has no effect.",
    "seed": "Seeds data order, dropout and LoRA initialisation.",
    "steps_per_report": "Steps between training reports.",
    "steps_per_eval": "Steps between validations (evals_per_epoch wins when training by epochs).",
    "evals_per_epoch": "Validations per epoch when training by epochs.",
    "val_batches": "Validation batches per evaluation; -1 for the whole split.",
    "samples_per_eval": "Validation prompts to answer greedily at each evaluation.",
    "sample_max_tokens": "Longest generated sample, in tokens.",
    "save_every": "Steps between checkpoints.",
    "test": "Evaluate on the test split after training.",
    "test_batches": "Test batches; -1 for the whole split.",
    "name": "Run folder name under runs_dir (default: config name and time).",
    "runs_dir": "Folder holding one folder per run.",
    "adapter_path": "Where adapters are written (default: the run folder's adapters/).",
    "resume_adapter_file": "Start from these weights (later stages start from the previous stage's adapters).",
    "fuse": "After training, also write the base model with the adapters fused in.",
    "report_to": "Accepted for mlx-lm compatibility; tuner writes metrics.jsonl instead.",
    "project_name": "Accepted for mlx-lm compatibility.",
    "trust_remote_code": "Allow a model's own Python code from the Hugging Face hub.",
    "train": "Accepted for mlx-lm compatibility (tuner always trains).",
    "config": "Accepted for mlx-lm compatibility.",
    "training_mode": "Accepted for mlx-lm compatibility (only normal).",
}


def help_for(key: str) -> str:
    return KEY_HELP.get(key, "")
