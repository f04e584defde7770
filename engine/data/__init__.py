"""Datasets: reading sources (files, folders, Hugging Face ids), tokenising with the model's chat
template into per-token roles, batching, and the statistics the inspector shows."""
