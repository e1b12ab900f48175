"""The health and metrics endpoints as an ASGI app: `health_app` (``brace.asgi``)."""

from __future__ import annotations

import ipaddress
import logging
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, MutableMapping
from typing import Any

from ._client_ip import ClientAddress, ForwardedHeader, TrustedProxies
from ._health import Health
from ._pipeline import Answer, check_type
from ._probes import ProcessMemoryProbe
from ._registry import Registry

__all__ = ("HealthApp", "health_app")

logger = logging.getLogger("brace.asgi")

Scope = MutableMapping[str, Any]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]


async def _respond(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[str, str]]
) -> None:
    await send_answer(send, Answer(status, body, headers))


async def send_answer(send: Send, answer: Answer) -> None:
    """Send ``answer`` as an ASGI response."""
    payload = answer.payload()
    start = {"type": "http.response.start", "status": answer.status}
    start["headers"] = answer.raw_headers(payload)
    await send(start)
    await send({"type": "http.response.body", "body": payload})


Allow = Iterable[str] | Callable[[Any], bool] | None


class HealthApp:
    """The ASGI app made by `health_app`."""

    __slots__ = (
        "_allow_networks",
        "_allow_test",
        "_client",
        "_probe",
        "_started",
        "health",
        "registry",
    )

    def __init__(
        self,
        registry: Registry | None = None,
        *,
        health: Health | None = None,
        allow: Allow = None,
        trusted_proxies: Iterable[str] | TrustedProxies = (),
        forwarded_header: ForwardedHeader = "x-forwarded-for",
    ) -> None:
        check_type(registry, Registry, "registry")
        check_type(health, Health, "health")
        self.registry = registry
        self.health = health
        self._client = ClientAddress(trusted_proxies, header=forwarded_header, ipv6_prefix=128)
        self._allow_test: Callable[[Scope], bool] | None = None
        self._allow_networks: TrustedProxies | None = None
        if callable(allow):
            self._allow_test = allow
        elif allow is not None:
            self._allow_networks = TrustedProxies(allow)
        self._probe = ProcessMemoryProbe()
        self._started = time.time()

    def allowed(self, scope: Scope) -> bool:
        """Whether the detailed endpoints may answer this request."""
        if self._allow_test is not None:
            try:
                return bool(self._allow_test(scope))
            except Exception:
                logger.exception("the health allow callable raised; refusing")
                return False
        networks = self._allow_networks
        if networks is None:
            return True
        try:
            address = ipaddress.ip_address(self._client(scope).split("/")[0])
        except ValueError:
            return False
        return address in networks

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                kind = message.get("type")
                if kind == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif kind == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        path: str = scope["path"]
        root = scope.get("root_path") or ""
        if root and path.startswith(root):
            path = path[len(root) :]
        path = path.rstrip("/") or "/"
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, {"error": "method_not_allowed"}, [("allow", "GET, HEAD")])
            return
        if path in ("/health", "/"):
            await self._basic(send)
            return
        detail = _DETAILED.get(path)
        if detail is None:
            await _respond(send, 404, {"error": "not_found"}, [])
            return
        if not self.allowed(scope):
            await _respond(send, 403, {"error": "forbidden"}, [])
            return
        if detail == "full":
            await self._full(send)
        elif detail == "queue":
            await _respond(send, 200, self._queue(), _NO_STORE)
        else:
            await _respond(send, 200, self._metrics(), _NO_STORE)

    async def _basic(self, send: Send) -> None:
        if self.health is None:
            await _respond(send, 200, {"status": "ok"}, _NO_STORE)
            return
        report = await self.health.liveness()
        await _respond(send, report.http_status, {"status": report.status.value}, _NO_STORE)

    async def _full(self, send: Send) -> None:
        if self.health is None:
            await _respond(send, 200, {"status": "ok", "checks": {}}, _NO_STORE)
            return
        report = await self.health.readiness()
        await _respond(send, report.http_status, report.to_dict(), _NO_STORE)

    def _queue(self) -> dict[str, Any]:
        return {} if self.registry is None else self.registry.snapshot()

    def _metrics(self) -> dict[str, Any]:
        times = os.times()
        try:
            memory: dict[str, Any] = {"rss": self._probe().usage}
        except Exception:
            memory = {"rss": None}
        try:
            load_average: list[float] | None = list(os.getloadavg())
        except OSError:
            load_average = None
        snapshot = self._queue()
        return {
            "process": {
                "pid": os.getpid(),
                "uptime": round(time.time() - self._started, 3),
                "cpu_user": times.user,
                "cpu_system": times.system,
                "threads": threading.active_count(),
                "python": sys.version.split()[0],
            },
            "memory": memory,
            "load_average": load_average,
            "cpu_count": os.cpu_count(),
            "brace": {key: snapshot[key] for key in ("memory", "load") if key in snapshot},
        }


_DETAILED = {"/health/full": "full", "/health/queue": "queue", "/health/metrics": "metrics"}
_NO_STORE = [("cache-control", "no-store")]


def health_app(
    registry: Registry | None = None,
    *,
    health: Health | None = None,
    allow: Allow = None,
    trusted_proxies: Iterable[str] | TrustedProxies = (),
    forwarded_header: ForwardedHeader = "x-forwarded-for",
) -> HealthApp:
    """An ASGI app serving ``/health``, ``/health/full``, ``/health/queue`` and
    ``/health/metrics`` below wherever it is mounted (``Mount("/api", health_app(...))``
    serves ``/api/health/full``).

    ``/health``: liveness (``health.liveness()``, or plain ``ok``). ``/health/full``:
    readiness with every check (``health.readiness()``), 503 when failing.
    ``/health/queue``: ``registry.snapshot()``. ``/health/metrics``: process figures (CPU,
    memory, threads, load average) and the registry's memory and load sections. ``allow``
    restricts the three detailed ones: CIDRs (``["127.0.0.1/32", "10.0.0.0/8"]``) or a
    callable ``(scope) -> bool``; others get 403. Everyone may see them by default.
    """
    return HealthApp(
        registry,
        health=health,
        allow=allow,
        trusted_proxies=trusted_proxies,
        forwarded_header=forwarded_header,
    )
