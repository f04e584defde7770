"""Loading from the Hugging Face hub when the hub cannot be reached.

Without a network, ``datasets`` and ``huggingface_hub`` retry each request with back-off before
giving up: about 25 seconds before a one-line "could not reach" error, or before they fall back
to the local cache. One quick probe tells us the hub is unreachable; then the libraries are put
in offline mode, so a cached dataset or model loads at once and a missing one fails at once.
"""

from __future__ import annotations

import os
import socket
import threading

HUB_HOST = "huggingface.co"
PROBE_SECONDS = 3.0


def hub_reachable(host: str | None = None, timeout: float = PROBE_SECONDS) -> bool:
    """Whether a TCP connection to the hub opens within ``timeout`` (DNS included)."""
    result: list[bool] = []

    def probe() -> None:  # getaddrinfo has no timeout of its own, hence the thread
        try:
            socket.create_connection((host or HUB_HOST, 443), timeout=timeout).close()
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


def offline_unless_reachable() -> bool:
    """Switch the hub libraries to offline mode when the hub cannot be reached; True if offline.

    An explicit ``HF_HUB_OFFLINE`` from the user is left alone.
    """
    if os.environ.get("HF_HUB_OFFLINE"):
        return is_offline()
    if hub_reachable():
        return False
    os.environ["HF_HUB_OFFLINE"] = "1"
    import huggingface_hub.constants

    huggingface_hub.constants.HF_HUB_OFFLINE = True  # the libraries read the variable at import
    try:
        import datasets.config

        datasets.config.HF_HUB_OFFLINE = True
    except ImportError:
        pass
    return True
