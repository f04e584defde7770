"""The Linux-only process settings: what they report, and that they stay off elsewhere."""

import platform
import sys

from engine.levers import platform_check


def test_glibc_takes_the_memory_settings():
    """True exactly where glibc's mallopt exists (Linux with glibc, as in CI), False elsewhere."""
    on_glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert platform_check.keep_freed_memory() is on_glibc


def test_the_memory_settings_are_left_alone_off_linux(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert platform_check.keep_freed_memory() is False
