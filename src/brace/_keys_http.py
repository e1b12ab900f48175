"""Key functions for limits and users: a header, a bearer token's subject, an API key, a
cookie.

Each helper returns a callable ``(request) -> str | None`` for `Limit(per=...)` or a
middleware's ``user=``. The request may be an ASGI scope (``BraceMiddleware``), or any
request object with a ``scope`` (Starlette, FastAPI, Litestar) or with ``raw_headers``
(aiohttp). Header values are untrusted: each helper reads at most `MAX_VALUE` bytes of a
value, and a value it cannot read (too long, not decodable, malformed) is treated as
absent (``None``: the limit is skipped, or the request counts per address).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl

__all__ = ("MAX_VALUE", "by_api_key", "by_bearer_subject", "by_cookie", "by_header")

#: The longest header value (bytes) a key helper reads; a longer one counts as absent.
MAX_VALUE = 8192

KeyFunction = Callable[[Any], str | None]


def _headers(request: Any) -> Iterable[Any]:
    raw = getattr(request, "raw_headers", None)  # aiohttp (a Mapping of its own storage)
    if raw is None:
        scope = request if isinstance(request, Mapping) else getattr(request, "scope", None)
        raw = scope.get("headers") if isinstance(scope, Mapping) else None
    return raw if isinstance(raw, (list, tuple)) else ()


def _header(request: Any, name: bytes) -> str | None:
    """The last value of header ``name`` (lower-case bytes), or ``None``."""
    found: bytes | None = None
    for item in _headers(request):
        if isinstance(item, (tuple, list)) and len(item) == 2:
            key, value = item
            if isinstance(key, bytes) and isinstance(value, bytes) and key.lower() == name:
                found = value
    if found is None or len(found) > MAX_VALUE:
        return None
    text = found.decode("latin-1").strip()
    return text or None


def _check_name(name: object, parameter: str) -> bytes:
    if not isinstance(name, str) or not name or not name.isascii() or not name.isprintable():
        raise ValueError(f"{parameter} must be a header name such as 'x-api-key', got {name!r}")
    return name.strip().lower().encode("ascii")


def by_header(name: str) -> KeyFunction:
    """The value of header ``name`` (its last field line), or ``None`` when absent."""
    header = _check_name(name, "name")

    def key(request: Any) -> str | None:
        return _header(request, header)

    return key


def by_api_key(header: str = "x-api-key", *, query: str | None = None) -> KeyFunction:
    """An API key from header ``header``, or else from query parameter ``query`` (when
    given). The key is used as it is sent: check it in your application, not here."""
    name = _check_name(header, "header")
    if query is not None and (not isinstance(query, str) or not query):
        raise ValueError(f"query must be a query parameter name or None, got {query!r}")

    def key(request: Any) -> str | None:
        found = _header(request, name)
        if found is not None or query is None:
            return found
        raw = _query_string(request)
        if raw is None or len(raw) > MAX_VALUE:
            return None
        for parameter, value in parse_qsl(raw.decode("latin-1"), keep_blank_values=False):
            if parameter == query:
                return value
        return None

    return key


def _query_string(request: Any) -> bytes | None:
    text = getattr(request, "query_string", None)  # aiohttp
    if isinstance(text, str):
        return text.encode("latin-1", "replace")
    scope = request if isinstance(request, Mapping) else getattr(request, "scope", None)
    raw = scope.get("query_string") if isinstance(scope, Mapping) else None
    return raw if isinstance(raw, bytes) else None


def by_cookie(name: str) -> KeyFunction:
    """The value of cookie ``name`` from the ``Cookie`` header, or ``None``."""
    if not isinstance(name, str) or not name or "=" in name or ";" in name:
        raise ValueError(f"name must be a cookie name, got {name!r}")

    def key(request: Any) -> str | None:
        cookies = _header(request, b"cookie")
        if cookies is None:
            return None
        for pair in cookies.split(";"):
            cookie, sep, value = pair.strip().partition("=")
            if sep and cookie == name:
                value = value.strip()
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1]
                return value or None
        return None

    return key


def by_bearer_subject(claim: str = "sub") -> KeyFunction:
    """The subject (the ``claim`` claim, ``sub`` by default) of a JWT sent as
    ``Authorization: Bearer <token>``.

    The token is decoded, **not verified**: anyone can send a token with any subject.
    That is fine for fairness between honest clients, and a forged subject only moves a
    client into another client's budget; it is not authentication. Verify the token in
    your application (or key by a verified identity through ``user=``) where it matters.
    A token that is not a readable JWT counts as absent.
    """
    if not isinstance(claim, str) or not claim:
        raise ValueError(f"claim must be a JWT claim name such as 'sub', got {claim!r}")

    def key(request: Any) -> str | None:
        authorization = _header(request, b"authorization")
        if authorization is None:
            return None
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return None
        parts = token.strip().split(".")
        if len(parts) != 3:
            return None
        payload = parts[1]
        try:
            decoded = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            claims = json.loads(decoded)
        except (binascii.Error, ValueError, RecursionError):
            return None
        if not isinstance(claims, dict):
            return None
        subject = claims.get(claim)
        if isinstance(subject, bool) or not isinstance(subject, (str, int)):
            return None
        text = str(subject)
        return text or None

    return key
