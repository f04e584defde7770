"""The app's two themes, its stylesheet, and the remembered theme choice.

The palette follows Apple's system colours (the app is for MLX on Macs) on neutral greys.
Every colour the stylesheet uses comes from theme variables, so any theme, built-in ones
included, restyles the whole app. On terminals with only 256 colours, Textual maps these
values to the nearest ones; text colours here have a contrast of at least 4:1 on the surface.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from textual.app import App
from textual.theme import BUILTIN_THEMES, Theme

from engine.files import atomic_write_json

APP_CSS = Path(__file__).with_name("app.tcss")
"""The app-level stylesheet, for ``App.CSS_PATH``."""

TUNER_DARK = Theme(
    name="tuner-dark",
    primary="#409CFF",  # the accessible variant of Apple's dark-mode blue
    secondary="#5E5CE6",
    accent="#64D2FF",
    warning="#FF9F0A",
    error="#FF453A",
    success="#30D158",
    foreground="#F2F2F7",
    background="#1C1C1E",
    surface="#242426",
    panel="#3A3A3C",
    dark=True,
    variables={"border-blurred": "#48484A"},  # Textual's default is barely off the surface
)

TUNER_LIGHT = Theme(
    name="tuner-light",
    primary="#0066CC",
    secondary="#5856D6",
    accent="#AF52DE",
    warning="#C93400",  # Apple's darker, accessible orange, readable on white
    error="#D70015",
    success="#248A3D",
    foreground="#1D1D1F",
    background="#F2F2F7",
    surface="#FFFFFF",
    panel="#E5E5EA",
    dark=False,
    variables={"border-blurred": "#C7C7CC"},
)

# The editor's syntax colours are a TextArea theme of their own, which CSS cannot set: one for
# dark app themes, one for light ones.
EDITOR_THEMES = {True: "monokai", False: "github_light"}

THEMES = (TUNER_DARK, TUNER_LIGHT)
THEME_NAMES = tuple(theme.name for theme in THEMES)
DEFAULT_THEME = TUNER_DARK.name


def register_themes(app: App) -> None:
    """Make both themes selectable (e.g. from the command palette's "Theme" entry)."""
    for theme in THEMES:
        app.register_theme(theme)


def editor_theme(app: App) -> str:
    """The TextArea theme that matches the app's current theme."""
    return EDITOR_THEMES[app.current_theme.dark]


def settings_path() -> Path:
    """``$TUNER_CONFIG_DIR/settings.json``, else ``~/.config/tuner/settings.json``."""
    folder = os.environ.get("TUNER_CONFIG_DIR") or Path.home() / ".config" / "tuner"
    return Path(folder) / "settings.json"


def _read_settings() -> dict:
    """The settings file as a dict; empty when missing or unreadable, which is never fatal."""
    try:
        settings = json.loads(settings_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return settings if isinstance(settings, dict) else {}


def load_keymap() -> dict[str, str]:
    """User key remapping: ``{"keymap": {"train-start": "T", ...}}`` by binding id (see F1)."""
    keymap = _read_settings().get("keymap")
    if not isinstance(keymap, dict):
        return {}
    return {str(k): str(v) for k, v in keymap.items() if isinstance(v, str)}


def load_theme_choice() -> str:
    """The saved theme name if it is one of ours or a Textual built-in, else the default."""
    name = _read_settings().get("theme")
    if isinstance(name, str) and (name in THEME_NAMES or name in BUILTIN_THEMES):
        return name
    return DEFAULT_THEME


def save_theme_choice(name: str) -> None:
    """Remember ``name``, keeping any other settings in the file (written atomically, so a crash
    mid-write never leaves it half-written). Raises OSError if the folder cannot be written."""
    settings = _read_settings()
    settings["theme"] = name
    atomic_write_json(settings_path(), settings)
