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

    In offline mode (including ``GPTNB_OFFLINE=1``) the answer is no without trying. Either way, when the
    answer is no, huggingface_hub's offline mode is switched on for this process: without it a missing model
    costs ~25 s of retries per load before failing, and `local_files_only=True` alone is not enough
    (transformers 5 still asks the hub for ``adapter_config.json``).
    """
    if offline():
        go_offline()
        return False
    url = urlparse(constants.ENDPOINT)
    try:
        port = url.port or (80 if url.scheme == "http" else 443)
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        go_offline()
        return False


def go_offline() -> None:
    """Switch huggingface_hub (and so transformers and datasets) to offline mode, here and in child processes."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    constants.HF_HUB_OFFLINE = True
