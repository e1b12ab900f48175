"""Every refusal through the HTTP pipeline is one event, one counter increment and one
refused answer: a property over random request mixes, on asyncio and on trio, in virtual
time (issue 14's acceptance test for events)."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import brace
from brace.asgi import BraceMiddleware, Rule
from brace.events import REASONS, Event, Refused
from brace.testing import virtual_time

# the reason a client reads from a refused answer: 429 and 504 by status, 503 by body
_BODY_REASONS = {
    "queue_full": "queue_full",
    "dropped": "dropped",
    "queue_timeout": "queue_timeout",
    "memory_pressure": "memory",
    "overloaded": "load",
    "shutting_down": "shutting_down",
    "circuit_open": "circuit_open",
}

ROUTES = ("/limited", "/breaker", "/slow", "/high", "/low")


class Draws:
    """The load monitor's shedding draws: 0.0 (shed) or 1.0 (keep), in turn, cycling."""

    def __init__(self, shed: list[bool]) -> None:
        self._draws = itertools.cycle([0.0 if s else 1.0 for s in shed])

    def random(self) -> float:
        return next(self._draws)


@dataclass(frozen=True)
class Request:
    route: str
    at: float  # seconds after the previous request was sent
    sleep: float  # how long the application takes to start its response
    status: int


_REQUESTS = st.builds(
    Request,
    route=st.sampled_from((*ROUTES, "/breaker", "/breaker")),
    at=st.sampled_from([0.0, 0.0, 0.1, 0.5, 1.0, 3.0]),
    sleep=st.sampled_from([0.0, 0.2, 1.0, 2.5, 6.0]),
    status=st.sampled_from([200, 500]),
)


@dataclass(frozen=True)
class Mix:
    requests: list[Request]
    shed: list[bool]  # the load monitor's draws, in turn: shed or not
    memory_critical: tuple[float, float]  # [start, end) of a window of critical memory
    shutdown_at: float | None


_MIXES = st.builds(
    Mix,
    requests=st.lists(_REQUESTS, min_size=1, max_size=40),
    shed=st.lists(st.sampled_from([False, False, False, False, True]), min_size=1, max_size=10),
    memory_critical=st.tuples(
        st.sampled_from([0.0, 2.0, 5.0, 100.0]), st.sampled_from([1.0, 4.0, 10.0])
    ).map(lambda window: (window[0], window[0] + window[1])),
    shutdown_at=st.one_of(st.none(), st.sampled_from([1.0, 5.0, 15.0])),
)


async def application(scope: dict[str, Any], receive: Callable[..., Any], send: Any) -> None:
    """Sleeps ``sleep`` seconds, then answers ``status``."""
    if scope["type"] != "http":
        return
    query = parse_qs(scope["query_string"].decode())
    await anyio.sleep(float(query["sleep"][0]))
    await send({"type": "http.response.start", "status": int(query["status"][0]), "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def client_reason(response: httpx.Response) -> str | None:
    """The refusal reason a client reads from an answer (``None``: not refused)."""
    if response.status_code == 429:
        return "rate_limited"
    if response.status_code == 504:
        return "timeout"
    if response.status_code == 503 and response.headers.get("content-type") == ("application/json"):
        return _BODY_REASONS[response.json()["error"]]
    return None


async def serve(mix: Mix) -> tuple[Counter[str], dict[str, int], Counter[str], dict[str, Any]]:
    """Send the mix; the events by reason, the counter deltas, the clients' refusals and
    the per-rule counters."""
    now = anyio.current_time
    start = now()
    load = brace.LoadMonitor(max_lag=0.1, random=Draws(mix.shed), clock=now)
    for _ in range(50):
        load.observe(0.15)  # a steady shedding probability between 0 and 1
    assert 0.0 < load.shed_probability < 1.0

    def usage() -> int:
        low, high = mix.memory_critical
        return 10**9 if low <= now() - start < high else 10**6

    memory = brace.MemoryGuard(
        5 * 10**8, critical=8 * 10**8, probe=usage, interval=0.5, on_high="shed", clock=now
    )
    executor = brace.PriorityExecutor(
        concurrency=2,
        max_queue=3,
        queue_timeout=4.0,
        on_full="drop_less_important",
        clock=now,
    )
    breaker = brace.CircuitBreaker(failure_threshold=2, recovery_time=5.0, clock=now)
    shutdown = brace.GracefulShutdown(timeout=1.0, clock=now)
    events: list[Event] = []
    app = BraceMiddleware(
        application,
        rules=[
            Rule("/limited", limits=["3/10 seconds"], timeout=5.0, name="limited"),
            Rule("/breaker", breaker=breaker, timeout=5.0, name="breaker"),
            Rule("/slow", timeout=2.0, priority=brace.Priority.LOW, name="slow"),
            Rule("/high", priority=brace.Priority.HIGH, timeout=5.0, name="high"),
        ],
        default=Rule(priority=brace.Priority.LOW, timeout=5.0, name="low"),
        executor=executor,
        memory=memory,
        load=load,
        shutdown=shutdown,
        slow_request=None,
        clock=now,
        on_event=events.append,
    )
    before = app.statistics().refusals
    seen: Counter[str] = Counter()

    async def one(http: httpx.AsyncClient, request: Request) -> None:
        response = await http.get(
            request.route, params={"sleep": request.sleep, "status": request.status}
        )
        reason = client_reason(response)
        if reason is not None:
            seen[reason] += 1

    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 1234))
    async with (
        httpx.AsyncClient(transport=transport, base_url="http://test") as http,
        anyio.create_task_group() as tasks,
    ):
        for request in mix.requests:
            await anyio.sleep(request.at)
            due = mix.shutdown_at is not None and now() - start >= mix.shutdown_at
            if due and not shutdown.shutting_down:
                shutdown.trigger()
            tasks.start_soon(one, http, request)
    statistics = app.statistics()
    deltas: dict[str, int] = {
        reason: statistics.refusals[reason] - before[reason] for reason in REASONS
    }
    emitted: Counter[str] = Counter(event.reason for event in events if isinstance(event, Refused))
    by_rule = {rule: dict(counts) for rule, counts in statistics.refusals_by_rule.items()}
    return emitted, deltas, seen, by_rule


def run_backend(backend: str, mix: Mix) -> Any:
    return anyio.run(serve, mix, backend=backend, backend_options=virtual_time(backend))


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mix=_MIXES)
def test_each_refusal_is_one_event_one_count_and_one_refused_answer(backend: str, mix: Mix) -> None:
    """For every reason: the Refused events = the refusals counter's delta = the refused
    answers clients got; the per-rule counts add up to the totals."""
    emitted, deltas, seen, by_rule = run_backend(backend, mix)
    for reason in sorted(seen):
        event(f"refused: {reason}")
    for reason in REASONS:
        assert emitted[reason] == deltas[reason] == seen[reason], reason
    for reason in REASONS:
        assert sum(counts[reason] for counts in by_rule.values()) == deltas[reason]


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_a_busy_mix_gives_every_reason(backend: str) -> None:
    """A hand-made mix reaches every one of the nine reasons (the property is not vacuous)."""
    low = [Request("/low", 0.1, 6.0, 200), *(Request("/low", 0.0, 6.0, 200) for _ in range(4))]
    mix = Mix(
        requests=[
            *(Request("/limited", 0.0, 0.0, 200) for _ in range(4)),  # rate_limited
            *(Request("/breaker", 0.1, 0.0, 500) for _ in range(3)),  # circuit_open
            Request("/slow", 0.1, 3.0, 200),  # timeout (2 s)
            *low,  # 1 runs, 3 wait, 1 finds the queue full; two wait past queue_timeout
            Request("/high", 0.0, 0.0, 200),  # more important: the oldest LOW is dropped
            Request("/low", 7.5, 0.0, 200),  # t = 8: memory is critical from 7 to 9 s
            Request("/low", 2.0, 0.0, 200),  # the 14th draw of the load monitor: shed
            Request("/low", 6.0, 0.0, 200),  # t = 16: shutting down from 15 s
        ],
        shed=[False] * 13 + [True] + [False] * 10,
        memory_critical=(7.0, 9.0),
        shutdown_at=15.0,
    )
    emitted, deltas, seen, _ = run_backend(backend, mix)
    assert emitted == Counter(deltas) == seen
    assert {reason for reason, count in seen.items() if count} == set(REASONS), seen
