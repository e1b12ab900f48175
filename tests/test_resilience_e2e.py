"""compose(Fallback, Retry, CircuitBreaker, Hedge, Timeout) end to end against a flaky HTTP
server on 127.0.0.1, through brace.httpx.ResilientTransport, on asyncio and trio.

Real sockets need real time (see tests/redis_server.py), so these tests run their own
loops with ``anyio.run``, briefly (about a second each).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

import brace
from brace.httpx import ResilientTransport

BACKENDS = ["asyncio", "trio"]


class FlakyServer:
    """A minimal HTTP/1.1 server (one request per connection) whose answer to the n-th
    request is chosen by ``behaviour(n)``: ``"ok"``, ``"503"``, ``"slow"`` (answers after
    ``slow`` seconds) or ``"drop"`` (closes the connection without answering)."""

    def __init__(self, behaviour: Callable[[int], str], slow: float = 1.0) -> None:
        self.behaviour = behaviour
        self.slow = slow
        self.requests = 0
        self.active = 0
        self.idle = anyio.Event()  # replaced whenever a request arrives at an idle server
        self.port = 0

    async def serve(self, task_status: anyio.abc.TaskStatus[None]) -> None:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        self.port = listener.extra(anyio.abc.SocketAttribute.local_port)
        async with listener:
            task_status.started()
            await listener.serve(self.handle)

    async def handle(self, stream: anyio.abc.SocketStream) -> None:
        if self.active == 0:
            self.idle = anyio.Event()
        self.active += 1
        try:
            async with stream:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = await stream.receive(65536)
                    data += chunk
                self.requests += 1
                kind = self.behaviour(self.requests)
                if kind == "drop":
                    return
                if kind == "slow":
                    await anyio.sleep(self.slow)
                status, body = (
                    (b"503 Service Unavailable", b"busy")
                    if kind == "503"
                    else (
                        b"200 OK",
                        f"ok {self.requests}".encode(),
                    )
                )
                await stream.send(
                    b"HTTP/1.1 "
                    + status
                    + b"\r\nContent-Length: "
                    + str(len(body)).encode()
                    + b"\r\nConnection: close\r\n\r\n"
                    + body
                )
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # the client went away (a cancelled hedge)
        finally:
            self.active -= 1
            if self.active == 0:
                self.idle.set()


def flaky(n: int) -> str:
    """Every 5th request from the 2nd answers 503, every 5th from the 4th is slow, every
    7th is dropped; the rest answer 200."""
    if n % 7 == 0:
        return "drop"
    return {1: "503", 3: "slow"}.get(n % 5, "ok")


def make_policy(
    seen: list[brace.FallbackDetails[Any]],
) -> tuple[brace.Policy, brace.Hedge, brace.Retry, brace.CircuitBreaker]:
    retry = brace.Retry(
        4,
        backoff=brace.Backoff.constant(0.01),
        retry_on=(httpx.HTTPError, brace.TimeoutExceeded),
    )
    breaker = brace.CircuitBreaker(failure_threshold=5, recovery_time=30.0)
    hedge = brace.Hedge(0.1, budget=brace.RetryBudget(ratio=0.5, min_per_second=1.0, window=10.0))
    policy = brace.compose(
        brace.Fallback("fallback", on_fallback=seen.append),
        retry,
        breaker,
        hedge,
        brace.Timeout(0.5),
    )
    return policy, hedge, retry, breaker


@pytest.mark.parametrize("backend", BACKENDS)
def test_composed_policies_answer_every_call_from_a_flaky_server(backend: str) -> None:
    """Against a server that drops, stalls and refuses some requests, every call is
    answered by the server (retries and hedges do their work), hedges win the stalled
    calls, and nothing is left running on either side."""
    server = FlakyServer(flaky)
    seen: list[brace.FallbackDetails[Any]] = []
    policy, hedge, retry, breaker = make_policy(seen)

    async def main() -> list[str]:
        async with anyio.create_task_group() as group:
            await group.start(server.serve)
            transport = ResilientTransport(retry=brace.Retry(1))
            async with httpx.AsyncClient(transport=transport) as client:

                async def fetch() -> str:
                    response = await client.get(f"http://127.0.0.1:{server.port}/")
                    response.raise_for_status()
                    return response.text

                answers = [await policy.run(fetch) for _ in range(30)]
            with anyio.fail_after(5):
                if server.active:
                    await server.idle.wait()
            group.cancel_scope.cancel()
        return answers

    answers = anyio.run(main, backend=backend)
    assert seen == []
    assert all(answer.startswith("ok ") for answer in answers)
    stats = hedge.statistics()
    assert stats.hedge_wins >= 1
    assert stats.attempts <= 2 * stats.calls
    assert retry.statistics().retries >= 1
    assert breaker.state is brace.CircuitState.CLOSED


@pytest.mark.parametrize("backend", BACKENDS)
def test_fallback_answers_when_the_server_is_down(backend: str) -> None:
    """When every request fails, retries give up, the breaker opens, and from then on the
    Fallback answers at once with the breaker's CircuitOpen as the cause."""
    server = FlakyServer(lambda n: "503")
    seen: list[brace.FallbackDetails[Any]] = []
    policy, hedge, retry, breaker = make_policy(seen)

    async def main() -> list[str]:
        async with anyio.create_task_group() as group:
            await group.start(server.serve)
            transport = ResilientTransport(retry=brace.Retry(1))
            async with httpx.AsyncClient(transport=transport) as client:

                async def fetch() -> str:
                    response = await client.get(f"http://127.0.0.1:{server.port}/")
                    response.raise_for_status()
                    return response.text

                answers = [await policy.run(fetch) for _ in range(6)]
            group.cancel_scope.cancel()
        return answers

    answers = anyio.run(main, backend=backend)
    assert answers == ["fallback"] * 6
    assert retry.statistics().failures >= 1
    assert hedge.statistics().failures >= 1
    assert breaker.state is brace.CircuitState.OPEN
    assert isinstance(seen[-1].exception, brace.CircuitOpen)
    assert server.requests < 6 * 4 * 2  # the open circuit stopped sending
