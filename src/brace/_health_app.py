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
from ._health_body import SCHEMA_VERSION, Defaults, Snapshot, checks, milliseconds
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
        "defaults",
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
        executor: str | None = None,
        breaker: str | None = None,
    ) -> None:
        check_type(registry, Registry, "registry")
        check_type(health, Health, "health")
        for value, parameter in ((executor, "executor"), (breaker, "breaker")):
            if value is not None and (not isinstance(value, str) or not value):
                raise ValueError(
                    f"{parameter} must be the name of a registered primitive or None, got {value!r}"
                )
        self.registry = registry
        self.health = health
        self.defaults = Defaults(executor=executor, breaker=breaker)
        self._client = ClientAddress(trusted_proxies, header=forwarded_header, ipv6_prefix=128)
        self._allow_test: Callable[[Scope], bool] | None = None
        self._allow_networks: TrustedProxies | None = None
        if callable(allow):
            self._allow_test = allow
        elif allow is not None:
            self._allow_networks = TrustedProxies(allow)
        self._probe = ProcessMemoryProbe()
        self._started = time.monotonic()

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
        status, code = "ok", 200
        if self.health is not None:
            report = await self.health.liveness()
            status, code = report.status.value, report.http_status
        await _respond(send, code, {"schemaVersion": SCHEMA_VERSION, "status": status}, _NO_STORE)

    async def _full(self, send: Send) -> None:
        status, code, found = "ok", 200, {}
        if self.health is not None:
            report = await self.health.readiness()
            status, code, found = report.status.value, report.http_status, checks(report)
        snapshot = self._snapshot()
        body = {
            "schemaVersion": SCHEMA_VERSION,
            "status": status,
            "uptime": self._uptime(),
            "memory": snapshot.memory(self._rss()),
            "checks": found,
            "shutdown": snapshot.shutdown(),
            "queue": snapshot.queue(snapshot.default_executor),
            "circuitBreakers": snapshot.circuit_breakers(),
            "rateLimit": snapshot.rate_limit(),
            "executors": {name: snapshot.executor(name) for name in snapshot.executors},
            "rateLimiters": snapshot.rate_limiters(),
            "defaults": snapshot.defaults(),
        }
        await _respond(send, code, body, _NO_STORE)

    def _queue(self) -> dict[str, Any]:
        snapshot = self._snapshot()
        return {
            "schemaVersion": SCHEMA_VERSION,
            "queue": snapshot.queue(snapshot.default_executor),
            "middleware": snapshot.middleware(snapshot.memory(self._rss())["heapUsed"]),
            "rateLimit": snapshot.rate_limit(),
            "executors": {name: snapshot.executor(name) for name in snapshot.executors},
            "circuitBreakers": snapshot.circuit_breakers(),
            "rateLimiters": snapshot.rate_limiters(),
            "defaults": snapshot.defaults(),
        }

    def _metrics(self) -> dict[str, Any]:
        times = os.times()
        try:
            load_average: list[float] | None = list(os.getloadavg())
        except OSError:
            load_average = None
        snapshot = self._snapshot()
        return {
            "schemaVersion": SCHEMA_VERSION,
            "process": {
                "pid": os.getpid(),
                "uptime": self._uptime(),
                "cpuUser": milliseconds(times.user),
                "cpuSystem": milliseconds(times.system),
                "threads": threading.active_count(),
                "python": sys.version.split()[0],
            },
            "memory": snapshot.memory(self._rss()),
            "loadAverage": load_average,
            "cpuCount": os.cpu_count(),
            "eventLoop": snapshot.event_loop(),
            "statistics": {} if self.registry is None else self.registry.snapshot(),
        }

    def _snapshot(self) -> Snapshot:
        return Snapshot(self.registry, self.defaults)

    def _uptime(self) -> float:
        return milliseconds(time.monotonic() - self._started) or 0.0

    def _rss(self) -> int | None:
        try:
            return self._probe().usage
        except Exception:
            logger.debug("the memory probe failed", exc_info=True)
            return None


_DETAILED = {"/health/full": "full", "/health/queue": "queue", "/health/metrics": "metrics"}
_NO_STORE = [("cache-control", "no-store")]


def health_app(
    registry: Registry | None = None,
    *,
    health: Health | None = None,
    allow: Allow = None,
    trusted_proxies: Iterable[str] | TrustedProxies = (),
    forwarded_header: ForwardedHeader = "x-forwarded-for",
    executor: str | None = None,
    breaker: str | None = None,
) -> HealthApp:
    """An ASGI app serving ``/health``, ``/health/full``, ``/health/queue`` and
    ``/health/metrics`` below wherever it is mounted (``Mount("/api", health_app(...))``
    serves ``/api/health/full``), in the specification's JSON shapes: camelCase,
    durations in milliseconds, memory in MB; every body has ``schemaVersion`` (the schema
    is ``docs/schema/health-v1.json``; see the "Health endpoints" page).

    ``/health``: liveness (``health.liveness()``, or plain ``ok``). ``/health/full``:
    readiness with every check (``health.readiness()``, 503 when failing), memory, uptime,
    every breaker, the queue and the rate limits. ``/health/queue``: the specification's
    queue metrics (``queue``, ``middleware``, ``rateLimit``) and every executor, breaker
    and rate limiter by name beside them. ``/health/metrics``: process figures (CPU,
    memory, threads, load average, event-loop lag) and ``registry.snapshot()`` as it is.

    ``executor`` / ``breaker``: the registered names the specification's single ``queue``
    and ``circuitBreakerState`` describe (default: the first registered of each kind).
    ``allow`` restricts the three detailed endpoints: CIDRs (``["127.0.0.1/32",
    "10.0.0.0/8"]``) or a callable ``(scope) -> bool``; others get 403. Everyone may see
    them by default.
    """
    return HealthApp(
        registry,
        health=health,
        allow=allow,
        trusted_proxies=trusted_proxies,
        forwarded_header=forwarded_header,
        executor=executor,
        breaker=breaker,
    )
