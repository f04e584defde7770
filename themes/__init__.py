"""Textual themes and the app's stylesheet (filled in with the terminal app)."""
