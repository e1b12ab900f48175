"""Per-request overhead of brace.httpx.ResilientTransport against a bare httpx client, and
the cost of parse_retry_after on hostile values.

Standalone: ``python benchmarks/client_bench.py [--requests 5000] [--rounds 7]
[--backend asyncio|trio]``.

Every case is an ``httpx.AsyncClient`` over the same ``httpx.MockTransport`` answering 200
(no sockets), bare or wrapped in a `ResilientTransport`; ``--requests`` GETs spread over
10 hosts, in interleaved rounds. The table gives the median time per request over the
rounds, the spread (min-max of the rounds) and the ratio to the bare client; a second
table calls the transports' ``handle_async_request`` directly (no client around them),
which shows brace's own cost with less of httpx's around it; a third times a 503 carrying
128 KB of hostile headers (a 64 KB ``Retry-After`` of Unicode digits), read once. Then
``parse_retry_after`` on a short value, an HTTP-date and hostile values up to 64 KB:
median ns per call (its work is bounded: it reads at most 64 characters). Times are the
process's CPU time (``time.process_time``): every case is CPU work in this process.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

if __package__ in (None, ""):  # run as ``python benchmarks/client_bench.py``
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

import anyio
import httpx

import brace
from brace.httpx import ResilientTransport, parse_retry_after

HOSTS = [f"http://host{index}.test/items" for index in range(10)]
# Every case is CPU work in this process (no sockets): timed in CPU time, which other
# processes on a shared machine do not inflate the way they inflate wall-clock time.
cpu = time.process_time


def answer(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=b"ok")


def mock() -> httpx.MockTransport:
    return httpx.MockTransport(answer)


def bare() -> httpx.AsyncBaseTransport:
    return mock()


def retry_only() -> httpx.AsyncBaseTransport:
    return ResilientTransport(mock())


def per_host_breaker_and_limit() -> httpx.AsyncBaseTransport:
    """A breaker and a token bucket per host (the default key), never refusing."""
    return ResilientTransport(
        mock(),
        breaker=brace.CircuitBreaker(),
        limiter=brace.TokenBucket(1e9, burst=1_000_000),
    )


def one_breaker_and_limit() -> httpx.AsyncBaseTransport:
    """The same with key=None: one breaker and one bucket for every host."""
    return ResilientTransport(
        mock(),
        breaker=brace.CircuitBreaker(),
        limiter=brace.TokenBucket(1e9, burst=1_000_000),
        key=None,
    )


CASES: dict[str, Callable[[], httpx.AsyncBaseTransport]] = {
    "bare (MockTransport)": bare,
    "ResilientTransport (retry)": retry_only,
    "+ breaker + bucket per host": per_host_breaker_and_limit,
    "+ breaker + bucket, key=None": one_breaker_and_limit,
}


async def run(client: httpx.AsyncClient, requests: int) -> float:
    """Seconds per request for ``requests`` GETs (each checked to be a 200)."""
    count = len(HOSTS)
    start = cpu()
    for index in range(requests):
        response = await client.get(HOSTS[index % count])
        if response.status_code != 200:
            raise RuntimeError(f"got {response.status_code}")
    return (cpu() - start) / requests


async def run_transport(transport: httpx.AsyncBaseTransport, requests: int) -> float:
    """Seconds per ``handle_async_request`` call, without a client."""
    prepared = [httpx.Request("GET", url) for url in HOSTS]
    count = len(prepared)
    start = cpu()
    for index in range(requests):
        response = await transport.handle_async_request(prepared[index % count])
        if response.status_code != 200:
            raise RuntimeError(f"got {response.status_code}")
    return (cpu() - start) / requests


def table(title: str, times: dict[str, list[float]]) -> None:
    base = statistics.median(next(iter(times.values())))
    print(f"| {title:<30} | {'per request':>12} | {'spread':>17} | {'ratio':>6} |")
    print(f"|{'-' * 32}|{'-' * 14}|{'-' * 19}|{'-' * 8}|")
    for name, values in times.items():
        median = statistics.median(values)
        spread = f"{min(values) * 1e6:.1f}-{max(values) * 1e6:.1f} us"
        print(f"| {name:<30} | {median * 1e6:>9.1f} us | {spread:>17} | {median / base:>6.2f} |")
    print()


async def transports(requests: int, rounds: int) -> None:
    clients = {name: httpx.AsyncClient(transport=make()) for name, make in CASES.items()}
    times: dict[str, list[float]] = {name: [] for name in clients}
    for client in clients.values():  # warm up
        await run(client, min(requests, 1000))
    for _ in range(rounds):
        for name, client in clients.items():
            times[name].append(await run(client, requests))
    for client in clients.values():
        await client.aclose()
    table("through httpx.AsyncClient", times)
    bare_transports = {name: make() for name, make in CASES.items()}
    times = {name: [] for name in bare_transports}
    for _ in range(rounds):
        for name, transport in bare_transports.items():
            times[name].append(await run_transport(transport, requests * 4))
    table("handle_async_request only", times)


def retry_after_values() -> dict[str, str]:
    return {
        "delay-seconds '120'": "120",
        "IMF-fixdate": "Wed, 21 Oct 2015 07:28:00 GMT",
        "'²' (Unicode digit)": "²",
        "64 KB of digits": "9" * 65536,
        "64 KB of '²'": "²" * 65536,
        "64 KB of spaces, then '1'": " " * 65535 + "1",
    }


HOSTILE = [(b"retry-after", "\u00b2".encode() * 32768), (b"x-junk", b"\xff" * 65536)]


def hostile(request: httpx.Request) -> httpx.Response:
    """A 503 with a 64 KB Retry-After of Unicode digits and 64 KB of junk."""
    return httpx.Response(503, headers=HOSTILE, content=b"busy")


async def run_hostile(transport: httpx.AsyncBaseTransport, requests: int) -> float:
    """Seconds per call answered by ``hostile``."""
    request = httpx.Request("GET", HOSTS[0])
    start = cpu()
    for _ in range(requests):
        response = await transport.handle_async_request(request)
        if response.status_code != 503:
            raise RuntimeError(f"got {response.status_code}")
        await response.aread()
    return (cpu() - start) / requests


async def hostile_headers(requests: int, rounds: int) -> None:
    """The cost of an answer with 128 KB of hostile headers, read once (one attempt)."""
    cases: dict[str, httpx.AsyncBaseTransport] = {
        "bare (MockTransport)": httpx.MockTransport(hostile),
        "ResilientTransport, 1 attempt": ResilientTransport(
            httpx.MockTransport(hostile), retry=brace.Retry(1)
        ),
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, transport in cases.items():
            times[name].append(await run_hostile(transport, requests))
    table("503 + 128 KB hostile headers", times)


def parse_costs(calls: int, rounds: int) -> None:
    print(f"| {'parse_retry_after on':<30} | {'per call':>10} | {'result':>10} |")
    print(f"|{'-' * 32}|{'-' * 12}|{'-' * 12}|")
    for name, value in retry_after_values().items():
        samples = []
        for _ in range(rounds):
            start = cpu()
            for _ in range(calls):
                parse_retry_after(value)
            samples.append((cpu() - start) / calls)
        result = parse_retry_after(value)
        shown = "None" if result is None else f"{result:.0f}"
        print(f"| {name:<30} | {statistics.median(samples) * 1e9:>7.0f} ns | {shown:>10} |")


def main(requests: int, rounds: int, backend: str) -> int:
    print(
        f"Python {sys.version.split()[0]}, httpx {httpx.__version__}, {backend}, "
        f"{requests} requests x {rounds} rounds, medians\n"
    )
    anyio.run(transports, requests, rounds, backend=backend)
    anyio.run(hostile_headers, max(requests // 10, 100), rounds, backend=backend)
    parse_costs(max(requests, 1000), rounds)
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5_000, help="requests per round")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument("--backend", choices=("asyncio", "trio"), default="asyncio")
    arguments = parser.parse_args()
    sys.exit(main(arguments.requests, arguments.rounds, arguments.backend))
