"""Models: loading (local folders, hub ids, GGUF files, the built-in demo model), the dtype the
engine computes in, trainable layers (LoRA, DoRA, full) and adapter files mlx-lm reads."""
