"""Who may call: the ``Origin`` and ``Host`` checks that keep web pages out.

Web pages. A page the user visits in a browser can send requests to the server (a form or
``fetch`` POST needs no CORS preflight) and, by DNS rebinding (a name of the attacker's that
resolves to 127.0.0.1), read the answers. Two headers, which a browser sets and a page cannot
forge, stop both:

- ``Host``, when the server listens on a loopback address (127.0.0.1, ::1, localhost: the
  default): it must name this machine (``localhost``, ``127.0.0.1``, ``[::1]``, with or without
  the port), else 403 (400 when malformed). A rebinding page's requests name the attacker's host.
  When the user binds another address on purpose (``--host 0.0.0.0`` or a LAN address, for a
  classroom), clients reach the server by whatever name or address the network gives it, so
  Host is not checked; the API key is what protects such a server.
- ``Origin``, always: a request that carries one must come from a page of this machine
  (``http://localhost:8888``, a local Jupyter), else 403. Browsers add Origin to every
  cross-site request that could change something (POSTs, forms included); the openai SDK,
  httpx, curl and a notebook's Python, on this machine or a learner's, send none, so in a
  classroom nothing legitimate carries a foreign Origin (Jupyter's browser page does not call
  the API itself; the notebook's kernel does). A page on another machine therefore cannot
  drive a LAN server either, even one without a key. The price: FastAPI's ``/docs`` page
  can try the API out only when opened on this machine.
"""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from ..protocol import APIError

HOST_HEADER = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::\d{1,5})?")


def is_loopback(host: str) -> bool:
    """Whether `host` (a name, an IP address, or an IPv6 address in brackets) is this machine's loopback."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def foreign_caller(headers: dict[bytes, bytes], check_host: bool) -> APIError | None:
    """Why a request from a web page (a foreign ``Origin``) or by a foreign name (``Host``) is refused, or None."""
    origin = headers.get(b"origin")
    if origin is not None and not _local_origin(origin.decode("latin-1")):
        return APIError(
            403,
            f"requests from web pages of other sites are refused (Origin: {origin.decode('latin-1')}); "
            "call the API from Python (the openai client) or another non-browser client",
            code="forbidden_origin",
        )
    if not check_host:
        return None
    host = headers.get(b"host", b"").decode("latin-1")
    name = HOST_HEADER.fullmatch(host)
    if not name:
        return APIError(
            400, f"the Host header ({host!r}) is missing or not a host name or address", code="invalid_host"
        )
    if not is_loopback(name[1]):
        return APIError(
            403,
            f"this server listens on this machine only and answers to localhost, 127.0.0.1 or [::1], not to {host}",
            code="forbidden_host",
        )
    return None


def _local_origin(origin: str) -> bool:
    try:
        parts = urlsplit(origin)
    except ValueError:  # an unclosed [ of an IPv6 address
        return False
    return parts.scheme in ("http", "https") and is_loopback(parts.hostname or "")
