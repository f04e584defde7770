"""A one-line text field whose editing keys act in the order they were sent (see keys_in_order)."""

from __future__ import annotations

from textual.widgets import Input

from .keys_in_order import KeysInOrder


class OrderedInput(KeysInOrder, Input):
    """Textual's Input, with Backspace, arrows and Home/End never overtaken by typed characters."""
