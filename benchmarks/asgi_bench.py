"""Per-request overhead of brace.asgi.BraceMiddleware against a bare app and slowapi.

Standalone: ``python benchmarks/asgi_bench.py [--requests 20000] [--rounds 7]``.

Every case is the same Starlette app (one route answering ``ok``), called directly as an
ASGI app with a synthetic scope, ``receive`` and ``send`` (no sockets, no HTTP client), on
asyncio, for ``--requests`` requests spread over 1,000 client addresses. The cases are run
in interleaved rounds; the table gives the median time per request and the overhead over
the bare app, on the wall clock and on the thread's CPU clock, and the spread of the
overhead over the rounds (``rounds``: the least and the most a case cost over the bare
app run just before it in the same round). The loop turns once between
requests (``await asyncio.sleep(0)``, in every case), as a server's loop does when it
reads the next request; without the turns every timer a middleware cancels stays in the
loop's heap for the whole run, which no server sees. Rate limiting is the same in brace and slowapi: one limit per client
address, high enough never to refuse (60,000/minute), with rate-limit headers on every
response (brace: the IETF ``RateLimit`` fields; slowapi: ``headers_enabled=True``).

The target (issue 6): brace's overhead at most one third of slowapi's. The last case is a
reference, not a product: a middleware that only asks brace's limiter and adds the two
``RateLimit`` fields (`FloorMiddleware`), the least "one limit + headers" can cost here.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

import brace
from brace._headers import PolicyField, ratelimit_member
from brace._limiter import local_hit
from brace._rate import parse_rate
from brace.asgi import BraceMiddleware, Limit, Rule

App = Callable[..., Awaitable[None]]
LIMIT = "60000/minute"
CLIENTS = 1000
#: the loop turns once every TURN + 1 requests (a mask): a server's loop turns at least once
#: a request (it reads the socket), and in that turn drops the timers cancelled meanwhile;
#: a loop that never turns keeps every cancelled timer of the run in its heap
TURN = 0


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def starlette() -> Starlette:
    return Starlette(routes=[Route("/api/items", ok)])


def bare() -> App:
    return starlette()


def brace_no_rules() -> App:
    """The middleware with nothing to do: no rules, no executor (its floor)."""
    return BraceMiddleware(starlette())


def brace_limits() -> App:
    return BraceMiddleware(starlette(), default=Rule(limits=[LIMIT]))


def brace_limits_no_headers() -> App:
    return BraceMiddleware(starlette(), default=Rule(limits=[LIMIT]), headers_on_success=False)


def brace_full() -> App:
    """Limits plus the executor slot and the memory guard (the demo server's stack)."""
    return BraceMiddleware(
        starlette(),
        default=Rule(limits=[LIMIT]),
        executor=brace.PriorityExecutor(concurrency=10, max_queue=1000),
        memory=brace.MemoryGuard(high=2**40),
    )


def brace_full_rule() -> App:
    """A fully configured rule: two limits (per client and per address), a priority, a
    timeout and a breaker, with the executor slot and the memory guard."""
    rule = Rule(
        limits=[Limit(LIMIT), Limit(LIMIT, per="ip")],
        priority=brace.Priority.MEDIUM,
        timeout=30.0,
        breaker=brace.CircuitBreaker(failure_threshold=15, recovery_time=30.0),
    )
    return BraceMiddleware(
        starlette(),
        default=rule,
        executor=brace.PriorityExecutor(concurrency=10, max_queue=1000),
        memory=brace.MemoryGuard(high=2**40),
    )


class FloorMiddleware:
    """The least any rate-limiting middleware with the IETF fields does (a reference, not
    a product): one hit of brace's own limiter keyed by the peer address (the hit the
    middleware makes, answering with the fields rather than a `brace.Decision`), then
    the two fields on the response. No rule lookup, counting, timing, forwarding header,
    refusal or error handling: its overhead is the floor under "one limit + headers"
    on the machine and interpreter of the run."""

    def __init__(self, app: App) -> None:
        self.app = app
        found = local_hit(brace.RateLimiter(LIMIT))
        assert found is not None
        self.hit, self.clock = found
        rate = parse_rate(LIMIT)
        self.policy = PolicyField("default", rate.limit, rate.period)
        self.raw_policy = (b"ratelimit-policy", self.policy.member.encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        hit = self.hit("ip:" + scope["client"][0], 1, self.clock())
        assert not isinstance(hit, brace.Decision)  # never refused here
        remaining, reset = hit
        extra = [self.raw_policy, (b"ratelimit", ratelimit_member(self.policy, remaining, reset))]

        def wrapper(message: dict[str, Any]) -> Awaitable[None]:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            return send(message)  # type: ignore[no-any-return]

        await self.app(scope, receive, wrapper)


def floor_limit_headers() -> App:
    return FloorMiddleware(starlette())


def slowapi_limits() -> App | None:
    try:
        from slowapi import Limiter, _rate_limit_exceeded_handler
        from slowapi.errors import RateLimitExceeded
        from slowapi.middleware import SlowAPIASGIMiddleware
        from slowapi.util import get_remote_address
    except ImportError:
        return None
    app = starlette()
    limiter = Limiter(key_func=get_remote_address, default_limits=[LIMIT], headers_enabled=True)
    app.state.limiter = limiter
    app.add_exception_handler(RateLimitExceeded, _rate_limit_exceeded_handler)  # type: ignore[arg-type]
    app.add_middleware(SlowAPIASGIMiddleware)
    return app


CASES: dict[str, Callable[[], App | None]] = {
    "bare Starlette app": bare,
    "brace (no rules)": brace_no_rules,
    "brace (limit + headers)": brace_limits,
    "brace (limit, no headers)": brace_limits_no_headers,
    "brace (limit + executor + memory)": brace_full,
    "brace (fully configured rule)": brace_full_rule,
    "slowapi (limit + headers)": slowapi_limits,
    "floor: limiter + fields only": floor_limit_headers,
}


def scopes() -> list[dict[str, Any]]:
    return [
        {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/api/items",
            "raw_path": b"/api/items",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"bench"), (b"user-agent", b"asgi-bench")],
            "client": (f"10.{n // 250}.{n % 250}.1", 40000),
            "server": ("bench", 80),
        }
        for n in range(CLIENTS)
    ]


async def run(app: App, requests: int, templates: list[dict[str, Any]]) -> float:
    """Seconds per request for ``requests`` requests (each checked to be a 200)."""
    return (await run_clocks(app, requests, templates))[0]


async def run_clocks(
    app: App, requests: int, templates: list[dict[str, Any]]
) -> tuple[float, float]:
    """Seconds per request on the wall clock and on the thread's CPU clock (which a
    neighbour taking the other core disturbs less)."""
    request_message = {"type": "http.request", "body": b"", "more_body": False}
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return request_message

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    count = len(templates)
    cpu = time.thread_time()
    start = time.perf_counter()
    for index in range(requests):
        await app(dict(templates[index % count]), receive, send)
        if index & TURN == 0:
            await asyncio.sleep(0)  # the loop turns, as a server's does between requests
    elapsed = time.perf_counter() - start
    cpu = time.thread_time() - cpu
    if any(status != 200 for status in statuses):
        raise RuntimeError(f"non-200 answers: {set(statuses)}")
    return elapsed / requests, cpu / requests


def forwarded_scopes(size: int) -> list[dict[str, Any]]:
    """Requests from a trusted proxy whose ``Forwarded`` header is ``size`` bytes: junk a
    client wrote, then the client address the proxy appended (1,000 distinct clients)."""
    junk = b'for="1.1.1.1";by=x, ' * max(0, (size - 40) // 21)
    return [
        {
            **template,
            "client": ("10.0.0.1", 40000),
            "headers": [
                *template["headers"],
                (b"forwarded", junk + f"for=198.51.{n // 250}.{n % 250}".encode()),
            ],
        }
        for n, template in enumerate(scopes())
    ]


def brace_forwarded() -> App:
    return BraceMiddleware(
        starlette(),
        default=Rule(limits=[LIMIT]),
        trusted_proxies=["10.0.0.0/8"],
        forwarded_header="forwarded",
    )


FORWARDED_SIZES = {"small": 40, "64 KB": 64 * 1024, "1 MB": 1024 * 1024}


async def forwarded(requests: int, rounds: int) -> None:
    """The cost of a huge forwarding header (issue 19, item 6): brace reads only its end."""
    app = brace_forwarded()
    cases = {name: forwarded_scopes(size) for name, size in FORWARDED_SIZES.items()}
    times: dict[str, list[float]] = {name: [] for name in cases}
    for templates in cases.values():
        await run(app, min(requests, 1000), templates)
    for _ in range(rounds):
        for name, templates in cases.items():
            times[name].append(await run(app, requests, templates))
    print("\nForwarded header from a trusted proxy (brace, limit + headers), medians\n")
    print(f"| {'Forwarded header':<36} | {'per request':>12} |")
    print(f"|{'-' * 38}|{'-' * 14}|")
    for name, values in times.items():
        print(f"| {name:<36} | {statistics.median(values) * 1e6:>9.1f} us |")


def spread(case: list[float], bare: list[float]) -> tuple[float, float]:
    """The least and the most a case cost over the bare app within one round (the two ran
    a moment apart, in the same order every round): how far one run's overhead can be
    from the median's on this machine."""
    overheads = [ours - theirs for ours, theirs in zip(case, bare, strict=True)]
    return min(overheads), max(overheads)


async def main(requests: int, rounds: int) -> int:
    templates = scopes()
    apps = {name: make() for name, make in CASES.items()}
    times: dict[str, list[float]] = {name: [] for name, app in apps.items() if app is not None}
    cpu_times: dict[str, list[float]] = {name: [] for name in times}
    for app in apps.values():  # warm up: caches, keys, imports
        if app is not None:
            await run(app, min(requests, 2000), templates)
    for _ in range(rounds):
        for name, app in apps.items():
            if app is not None:
                wall, cpu = await run_clocks(app, requests, templates)
                times[name].append(wall)
                cpu_times[name].append(cpu)
    base = statistics.median(times["bare Starlette app"])
    cpu_base = statistics.median(cpu_times["bare Starlette app"])
    print(f"Python {sys.version.split()[0]}, {requests} requests x {rounds} rounds, medians\n")
    print(
        f"| {'case':<36} | {'per request':>12} | {'overhead':>10} | {'rounds':>19} "
        f"| {'cpu clock':>10} | {'cpu overhead':>12} |"
    )
    print(f"|{'-' * 38}|{'-' * 14}|{'-' * 12}|{'-' * 21}|{'-' * 12}|{'-' * 14}|")
    medians = {name: statistics.median(values) for name, values in times.items()}
    for name, median in medians.items():
        overhead = median - base
        low, high = spread(times[name], times["bare Starlette app"])
        rounds_text = f"{low * 1e6:.1f} to {high * 1e6:.1f} us"
        cpu = statistics.median(cpu_times[name])
        print(
            f"| {name:<36} | {median * 1e6:>9.1f} us | {overhead * 1e6:>7.1f} us "
            f"| {rounds_text:>19} "
            f"| {cpu * 1e6:>7.1f} us | {(cpu - cpu_base) * 1e6:>9.1f} us |"
        )
    for name, app in apps.items():
        if app is None:
            print(
                f"| {name:<36} | {'not installed':>12} | {'':>10} | {'':>19} "
                f"| {'':>10} | {'':>12} |"
            )
    slow = medians.get("slowapi (limit + headers)")
    if slow is not None:
        ours = medians["brace (limit + headers)"] - base
        theirs = slow - base
        ratio = ours / theirs if theirs > 0 else float("inf")
        verdict = "met" if ratio <= 1 / 3 else "NOT met"
        print(f"\nbrace overhead / slowapi overhead = {ratio:.3f} (target <= 0.333: {verdict})")
    await forwarded(max(requests // 10, 100), rounds)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    arguments = parser.parse_args()
    sys.exit(asyncio.run(main(arguments.requests, arguments.rounds)))
