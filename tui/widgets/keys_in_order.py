"""Key bindings that run in the order the keys were sent, for widgets that also take typed text.

Textual runs a focused widget's key *bindings* (arrows, backspace, home ...) only once the key
event has bubbled up to the app, one message queue per parent, while a TextArea or an Input
inserts a typed character at once. In a burst of keys (fast typing over SSH, a paste of
keystrokes) a character therefore overtakes the keys sent before it: Down×10 then X put X on
line 1 of the editor (issue 21, point 7), and Backspace then 5 in the "how many more steps"
prompt deleted the 5 it had just typed. A widget with this mixin runs its own bindings as soon as
the key reaches it.
"""

from __future__ import annotations

from textual import events
from textual.binding import NoBinding


class KeysInOrder:
    """Mix in before a Textual widget class: its bindings run when their key arrives."""

    async def _on_key(self, event: events.Key) -> None:
        try:
            bindings = self._bindings.get_bindings_for_key(event.key)
        except NoBinding:
            await super()._on_key(event)
            return
        event.stop()
        event.prevent_default()
        await self.run_action(bindings[0].action)
