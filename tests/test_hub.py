"""Without a network, hub ids fail (or load from the cache) at once instead of after retries."""

import os
import socket

import huggingface_hub.constants
import pytest

from engine import hub


@pytest.fixture
def online(monkeypatch):
    """Online mode everywhere, as at the start of a session, restored afterwards."""
    import datasets.config

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    for name in (*hub.PROXY_VARIABLES, "HF_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(hub, "_switched_by_us", False)
    yield
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)


def test_an_unresolvable_host_is_unreachable():
    assert hub.hub_reachable("no-such-host.invalid", timeout=2.0) is False


def test_a_listening_port_is_reachable():
    server = socket.create_server(("127.0.0.1", 0))
    try:
        assert hub.hub_reachable("127.0.0.1", timeout=2.0, port=server.getsockname()[1]) is True
    finally:
        server.close()


def test_an_unreachable_hub_puts_the_libraries_offline_and_back(monkeypatch, online):
    import datasets.config

    monkeypatch.setattr(hub, "HUB_HOST", "no-such-host.invalid")
    assert hub.offline_unless_reachable() is True
    assert huggingface_hub.constants.HF_HUB_OFFLINE and datasets.config.HF_HUB_OFFLINE
    assert os.environ["HF_HUB_OFFLINE"] == "1"
    assert hub.explain_failure(ValueError("bad"), "model") == "bad (the hub cannot be reached from here, so only the local cache was tried)"
    # the network comes back while the app is still open: the next load goes online again
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: True)
    assert hub.offline_unless_reachable() is False
    assert "HF_HUB_OFFLINE" not in os.environ
    assert not huggingface_hub.constants.HF_HUB_OFFLINE and not datasets.config.HF_HUB_OFFLINE
    assert hub.explain_failure(ValueError("bad"), "model") == "bad"


@pytest.mark.parametrize("value, offline", [("1", True), ("0", False)])
def test_the_users_own_setting_is_left_alone(monkeypatch, online, value, offline):
    monkeypatch.setenv("HF_HUB_OFFLINE", value)
    monkeypatch.setattr(hub, "hub_reachable", lambda *a, **k: pytest.fail("probed despite HF_HUB_OFFLINE"))
    assert hub.offline_unless_reachable() is offline
    assert os.environ["HF_HUB_OFFLINE"] == value


@pytest.mark.parametrize("env, address", [
    ({}, ("huggingface.co", 443)),
    ({"HF_ENDPOINT": "https://hf-mirror.example.org"}, ("hf-mirror.example.org", 443)),
    ({"HF_ENDPOINT": "http://10.0.0.5:8080/"}, ("10.0.0.5", 8080)),
    ({"HTTPS_PROXY": "http://proxy.corp:3128", "HF_ENDPOINT": "https://hf-mirror.example.org"}, ("proxy.corp", 3128)),
    ({"https_proxy": "proxy.corp:8000"}, ("proxy.corp", 8000)),
])
def test_the_probe_goes_where_requests_would(monkeypatch, online, env, address):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert hub.probe_address() == address


class LocalEntryNotFoundError(Exception):
    """Named as huggingface_hub's: the files are not in the cache."""


@pytest.mark.parametrize("ours, reason", [(True, "the hub cannot be reached from here"), (False, "HF_HUB_OFFLINE is set")])
def test_offline_failures_say_why_in_one_line(monkeypatch, online, ours, reason):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "_switched_by_us", ours)
    try:
        try:
            raise LocalEntryNotFoundError("Cannot find the requested files in the disk cache.")
        except LocalEntryNotFoundError as inner:
            raise OSError("We couldn't connect to load this model.\nCheck your connection.") from inner
    except OSError as error:
        assert hub.explain_failure(error, "model") == f"the model is not in the local cache, and {reason}"
    other = ValueError("Model type foo not supported.\nmore detail")
    assert hub.explain_failure(other, "model") == f"Model type foo not supported. ({reason}, so only the local cache was tried)"
    monkeypatch.delenv("HF_HUB_OFFLINE")
    assert hub.explain_failure(other, "model") == "Model type foo not supported."
