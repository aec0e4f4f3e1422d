"""Is the Hugging Face hub reachable? Asked once per process; when it is not, the hub library goes offline.

Offline mode is huggingface_hub's own switch: it reads ``HF_HUB_OFFLINE`` and ``TRANSFORMERS_OFFLINE``
when imported, and transformers and datasets ask it before every request. This module imports nothing
from gptnb, so models, data and the notebook banner can all ask it.
"""

from __future__ import annotations

import os
import socket
from functools import lru_cache
from urllib.parse import urlparse

from huggingface_hub import constants


def offline() -> bool:
    """Whether the hub is not to be asked: huggingface_hub's offline mode, or ``GPTNB_OFFLINE=1``."""
    return constants.is_offline_mode() or os.environ.get("GPTNB_OFFLINE", "").upper() in constants.ENV_VARS_TRUE_VALUES


@lru_cache(maxsize=1)
def hub_reachable(timeout: float = 2.0) -> bool:
    """Whether the Hugging Face hub (``HF_ENDPOINT``) answers, decided in at most `timeout` seconds.

    In offline mode the answer is no without trying. When the hub does not answer, offline mode is
    switched on for this process: without it a missing model costs ~50 s of retries before failing,
    and `local_files_only=True` alone is not enough (transformers 5 still asks for adapter files).
    """
    if offline():
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        with socket.create_connection((url.hostname, url.port or 443), timeout=timeout):
            return True
    except OSError:
        go_offline()
        return False


def go_offline() -> None:
    """Switch huggingface_hub (and so transformers and datasets) to offline mode, here and in child processes."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
