"""The old name of the local server, now `gptnb.serve` (``local_server``, ``LocalServer``), and of the data check,
now `gptnb.datacheck.prepare` (``prepare_data``, ``PrepareError``); kept, with the old submodule names in this
folder, until nothing uses them (issue 24)."""

from ..datacheck.prepare import PrepareError, prepare_data
from ..serve import LocalServer, local_server

__all__ = ["LocalServer", "PrepareError", "local_server", "prepare_data"]
