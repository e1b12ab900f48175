"""An HTTP scope as an ASGI server builds one, for tests that call an app directly, and an
httpx client that calls an ASGI app in process."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import httpx


def http_scope(
    path: str = "/",
    *,
    method: str = "GET",
    headers: Sequence[tuple[bytes, bytes]] = (),
    query: bytes = b"",
    client: tuple[str, int] | None = ("203.0.113.7", 1234),
) -> dict[str, Any]:
    """A GET (or ``method``) of ``path`` from ``client`` with ``headers``."""
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query,
        "headers": list(headers),
        "client": client,
        "server": ("test", 80),
    }


def client(app: Any, peer: str = "203.0.113.7") -> httpx.AsyncClient:
    """An httpx client calling ``app`` through httpx's ASGI transport, from ``peer``."""
    transport = httpx.ASGITransport(app=app, client=(peer, 1234))
    return httpx.AsyncClient(transport=transport, base_url="http://test")
