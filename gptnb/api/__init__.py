"""The old name of the local server, now `gptnb.serve` (``local_server``, ``LocalServer``), and of the data check,
now `gptnb.datacheck.prepare` (``prepare_data``, ``PrepareError``): code written for earlier versions of the course
keeps working. Everything else lives under the new names only."""

from ..datacheck.prepare import PrepareError, prepare_data
from ..serve import LocalServer, local_server

__all__ = ["LocalServer", "PrepareError", "local_server", "prepare_data"]
