"""Without a network, hub ids fail (or load from the cache) at once instead of after retries."""

import huggingface_hub.constants
import pytest

from engine import hub


def test_an_unresolvable_host_is_unreachable():
    assert hub.hub_reachable("no-such-host.invalid", timeout=2.0) is False


def test_an_unreachable_hub_puts_the_libraries_offline(monkeypatch):
    import datasets.config

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "HUB_HOST", "no-such-host.invalid")
    assert hub.offline_unless_reachable() is True
    assert huggingface_hub.constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE
    import os

    assert os.environ["HF_HUB_OFFLINE"] == "1"
    monkeypatch.delenv("HF_HUB_OFFLINE")


@pytest.mark.parametrize("value, offline", [("1", True), ("0", False)])
def test_the_users_own_setting_is_left_alone(monkeypatch, value, offline):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: pytest.fail("probed despite HF_HUB_OFFLINE"))
    assert hub.offline_unless_reachable() is offline
