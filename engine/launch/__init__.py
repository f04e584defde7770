"""Starting training elsewhere: a detached process, or ranks on several hosts via mlx.launch."""
