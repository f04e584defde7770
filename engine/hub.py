"""The Hugging Face hub: telling its ids from local paths, and loading when it cannot be reached.

A model or dataset is named by a local path or a hub id, and the two share the ``a/b`` shape;
:func:`looks_like_local_path` is the one rule that tells them apart, for models and data alike.

Without a network, ``datasets`` and ``huggingface_hub`` retry each request with back-off before
giving up: about 25 seconds before a one-line "could not reach" error, or before they fall back
to the local cache. One quick probe tells us the hub is unreachable; then the libraries are put
in offline mode, so a cached dataset or model loads at once and a missing one fails at once.
"""

from __future__ import annotations

import os
import socket
import threading
from urllib.parse import urlsplit

from engine.errors import first_line

HUB_HOST = "huggingface.co"
PROBE_SECONDS = 3.0
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")

_switched_by_us = False  # offline mode that we set, and may take back when the hub is back


def looks_like_local_path(value: str, suffixes: tuple[str, ...] = ()) -> bool:
    """Whether ``value``, which names nothing here, was meant as a local path rather than a hub id.

    Hub ids are ``name`` or ``owner/name``; these say "a path": a start of ``.``, ``/`` or ``~``, a
    trailing slash, more than one slash, a backslash, or an ending in one of ``suffixes`` (the
    file types the caller reads).
    """
    return (
        value.startswith((".", "/", "~"))
        or value.endswith("/")
        or value.lower().endswith(suffixes)
        or value.count("/") > 1
        or "\\" in value
    )


def probe_address() -> tuple[str, int]:
    """Where a request to the hub would first connect: the proxy when one is set, else the
    ``HF_ENDPOINT`` mirror when one is set, else huggingface.co; (host, port)."""
    for name in PROXY_VARIABLES:
        if os.environ.get(name):
            url = urlsplit(os.environ[name] if "://" in os.environ[name] else "http://" + os.environ[name])
            if url.hostname:
                return url.hostname, url.port or (443 if url.scheme == "https" else 80)
    endpoint = urlsplit(os.environ.get("HF_ENDPOINT", ""))
    if endpoint.hostname:
        return endpoint.hostname, endpoint.port or (80 if endpoint.scheme == "http" else 443)
    return HUB_HOST, 443


def hub_reachable(host: str | None = None, timeout: float = PROBE_SECONDS, port: int = 443) -> bool:
    """Whether a TCP connection to ``host`` (default: :func:`probe_address`) opens within
    ``timeout`` (DNS included)."""
    if host is None:
        host, port = probe_address()
    result: list[bool] = []

    def probe() -> None:  # getaddrinfo has no timeout of its own, hence the thread
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(result and result[0])


def is_offline() -> bool:
    """Whether the hub libraries are in offline mode (set by the user, or by us)."""
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false", "False")


def _set_libraries_offline(offline: bool) -> None:
    """Set the hub libraries' own offline flag, which they read from the environment only once.

    They are imported here, not at the top: they take a second or more to import, and a run on a local
    model and local data never needs them.
    """
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = offline  # the libraries read the variable at import
    try:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = offline
    except ImportError:
        pass


def offline_unless_reachable() -> bool:
    """Switch the hub libraries to offline mode when the hub cannot be reached; True if offline.

    Probed on every call, so a long-lived app that went offline goes back online once the
    network returns. An explicit ``HF_HUB_OFFLINE`` from the user is left alone.
    """
    global _switched_by_us
    if os.environ.get("HF_HUB_OFFLINE") and not _switched_by_us:
        return is_offline()
    reachable = hub_reachable()
    if reachable and _switched_by_us:
        os.environ.pop("HF_HUB_OFFLINE", None)
        _set_libraries_offline(False)
        _switched_by_us = False
    elif not reachable and not _switched_by_us:
        os.environ["HF_HUB_OFFLINE"] = "1"
        _set_libraries_offline(True)
        _switched_by_us = True
    return not reachable


def _missing_from_cache(error: BaseException) -> bool:
    """Whether ``error`` (or what caused it) says the files are not in the local cache."""
    seen = 0
    while error is not None and seen < 8:
        text = f"{type(error).__name__} {error}"
        if any(mark in text for mark in ("LocalEntryNotFound", "OfflineModeIsEnabled", "cached snapshot folder")):
            return True
        error, seen = error.__cause__ or error.__context__, seen + 1
    return False


def explain_failure(error: BaseException, what: str) -> str:
    """One line on why loading ``what`` (a model, a dataset) from the hub failed; in offline mode
    it says that only the local cache was looked at, and why."""
    why = first_line(error)
    if not is_offline():
        return why
    reason = "the hub cannot be reached from here" if _switched_by_us else "HF_HUB_OFFLINE is set"
    if _missing_from_cache(error):
        return f"the {what} is not in the local cache, and {reason}"
    return f"{why} ({reason}, so only the local cache was tried)"
