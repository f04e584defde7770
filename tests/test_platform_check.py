"""The Linux-only process settings: what they report, and that they stay off elsewhere."""

import sys

import pytest

from engine import platform_check


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_glibc_takes_the_memory_settings():
    assert platform_check.keep_freed_memory() is True


def test_the_memory_settings_are_left_alone_off_linux(monkeypatch):
    monkeypatch.setattr(sys, "platform", "darwin")
    assert platform_check.keep_freed_memory() is False
