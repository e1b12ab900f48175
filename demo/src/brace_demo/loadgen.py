"""A lean, bounded HTTP/1.1 load generator for the overload demo (asyncio streams).

It speaks just enough HTTP/1.1 over keep-alive connections to 127.0.0.1 to cost little CPU
per request (a general client such as ``httpx.AsyncClient`` does much more), so the client
is not the bottleneck. Two ways to drive a server:

- `LoadGenerator.measure_capacity`: closed loop, a ramp of ``1, 2, 4, ...`` clients each
  sending its next request when the last one is answered; the capacity is the best rate
  of 2xx answers, found when adding clients stops helping.
- `LoadGenerator.open_loop`: requests arrive at a fixed rate whatever happens to the
  earlier ones (as real users do), each timed from the moment it was due.

Everything is bounded: at most ``max_connections`` connections (a request due when all of
them are busy is counted as *not sent*), at most ``timeout`` seconds per request (then its
connection is closed and it counts as a *timeout*), and a run lasts the seconds asked.
Each simulated user (``users`` of them, round robin) sends an ``X-User`` header, so the
server's per-user rate limits see many users rather than one address.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
from array import array
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = (
    "DEFAULT_MIX",
    "NO_RETRY_AFTER",
    "PRIORITIES",
    "CapacityResult",
    "CapacityStep",
    "LoadGenerator",
    "Recorder",
    "RequestKind",
    "percentile",
)

PRIORITIES = ("HIGH", "MEDIUM", "LOW")

#: pseudo-statuses recorded for requests that got no HTTP answer
TIMEOUT = 0
ERROR = 1
NOT_SENT = 2

#: appended to the reason of a 429 or 503 answered without a Retry-After header
NO_RETRY_AFTER = " (no Retry-After)"


@dataclass(frozen=True, slots=True)
class RequestKind:
    """One kind of request of the mix, its share (``weight``) and its priority class."""

    name: str
    priority: str
    method: str
    path: str
    body: bytes = b""
    weight: float = 1.0


#: HIGH 10 % (health checks and logins), MEDIUM 70 % (reads), LOW 20 % (writes)
DEFAULT_MIX: tuple[RequestKind, ...] = (
    RequestKind("health", "HIGH", "GET", "/health", weight=0.05),
    RequestKind("auth", "HIGH", "POST", "/api/auth", b'{"password":"hunter2"}', 0.05),
    RequestKind("read", "MEDIUM", "GET", "/api/items", weight=0.70),
    RequestKind(
        "write",
        "LOW",
        "POST",
        "/api/items",
        b'{"name":"widget","note":"' + b"x" * 200 + b'"}',
        0.20,
    ),
)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The ``fraction`` quantile (nearest rank) of ``values``; NaN when there are none."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = min(len(ordered) - 1, max(0, int(fraction * len(ordered) + 0.999999) - 1))
    return ordered[rank]


class Recorder:
    """What happened to every request of one phase, in compact arrays (bounded by the
    phase's requests), plus running totals for the progress lines."""

    def __init__(self, start: float) -> None:
        self.start = start
        self.due = array("d")  # seconds since start the request was due
        self.done = array("d")  # seconds since start it was answered (or given up)
        self.status = array("h")  # HTTP status, or TIMEOUT / ERROR / NOT_SENT
        self.priority = array("b")  # index in PRIORITIES
        # (status, reason, priority index) of every refusal and connection error
        self.reasons: collections.Counter[tuple[int, str, int]] = collections.Counter()
        # running totals: 2xx, 429, 503, other 5xx, timeouts, errors, not sent, all
        self.totals = [0] * 8
        self.recent_high: list[float] = []  # HIGH 2xx latencies since the last progress line

    def record(
        self, due: float, done: float, status: int, priority: int, reason: str | None
    ) -> None:
        self.due.append(due - self.start)
        self.done.append(done - self.start)
        self.status.append(status)
        self.priority.append(priority)
        totals = self.totals
        totals[7] += 1
        if 200 <= status < 300:
            totals[0] += 1
            if priority == 0:
                self.recent_high.append(done - due)
        elif status == 429:
            totals[1] += 1
        elif status == 503:
            totals[2] += 1
        elif status >= 500:
            totals[3] += 1
        elif status == TIMEOUT:
            totals[4] += 1
        elif status == ERROR:
            totals[5] += 1
        elif status == NOT_SENT:
            totals[6] += 1
        if reason is not None:
            self.reasons[(status, reason, priority)] += 1

    def __len__(self) -> int:
        return len(self.status)


@dataclass(frozen=True, slots=True)
class CapacityStep:
    """One step of the closed-loop ramp: ``clients`` in a loop, their 2xx ``rate``."""

    clients: int
    rate: float
    p50: float
    p99: float
    errors: int


@dataclass(frozen=True, slots=True)
class CapacityResult:
    """The measured ``capacity`` (best 2xx rate of the ramp) and every ``steps``."""

    capacity: float
    steps: tuple[CapacityStep, ...]


#: a connection idle this long is closed rather than reused: servers close idle keep-alive
#: connections (uvicorn after 5 s), and a request sent as they do would fail
MAX_IDLE = 4.0


class _Connection:
    __slots__ = ("idle_since", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.idle_since = 0.0

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.writer.close()


class LoadGenerator:
    """Sends the request mix to ``host:port`` over at most ``max_connections``."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        mix: Sequence[RequestKind] = DEFAULT_MIX,
        users: int = 20_000,
        max_connections: int = 4096,
        timeout: float = 10.0,
        seed: int = 1,
    ) -> None:
        if not mix:
            raise ValueError("mix must hold at least one RequestKind")
        if users < 1:
            raise ValueError(f"users must be >= 1, got {users!r}")
        if not 1 <= max_connections <= 60_000:
            raise ValueError(f"max_connections must be in [1, 60000], got {max_connections!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.host = host
        self.port = port
        self.mix = tuple(mix)
        self.users = users
        self.max_connections = max_connections
        self.timeout = timeout
        self._random = random.Random(seed)
        total = sum(kind.weight for kind in self.mix)
        self._cumulative: list[float] = []
        running = 0.0
        for kind in self.mix:
            running += kind.weight / total
            self._cumulative.append(running)
        self._prefixes = [
            f"{kind.method} {kind.path} HTTP/1.1\r\nhost: {host}:{port}\r\n".encode()
            for kind in self.mix
        ]
        self._suffixes = [
            (
                f"content-type: application/json\r\ncontent-length: {len(kind.body)}\r\n\r\n"
                if kind.body or kind.method != "GET"
                else "\r\n"
            ).encode()
            + kind.body
            for kind in self.mix
        ]
        self._priorities = [PRIORITIES.index(kind.priority) for kind in self.mix]
        self._idle: list[_Connection] = []
        self._open = 0  # connections open or opening
        self._busy = 0  # requests in flight
        self._count = 0

    @property
    def in_flight(self) -> int:
        """Requests sent and not yet answered."""
        return self._busy

    # -- one request ---------------------------------------------------------------------

    def _pick(self) -> tuple[int, bytes]:
        draw = self._random.random()
        index = 0
        cumulative = self._cumulative
        while index < len(cumulative) - 1 and draw >= cumulative[index]:
            index += 1
        user = self._count % self.users
        self._count += 1
        payload = self._prefixes[index] + b"x-user: u%d\r\n" % user + self._suffixes[index]
        return index, payload

    async def _one(self, recorder: Recorder, due: float) -> None:
        loop = asyncio.get_running_loop()
        index, payload = self._pick()
        priority = self._priorities[index]
        connection = self._reusable(loop.time())
        if connection is None and self._open >= self.max_connections:
            recorder.record(due, loop.time(), NOT_SENT, priority, None)
            return
        task = asyncio.current_task()
        assert task is not None
        expired = False

        def expire() -> None:
            nonlocal expired
            expired = True
            task.cancel()

        timer = loop.call_at(due + self.timeout, expire)
        self._busy += 1
        try:
            if connection is None:
                self._open += 1
                try:
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                except BaseException:
                    self._open -= 1
                    raise
                connection = _Connection(reader, writer)
            connection.writer.write(payload)
            head = await connection.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length = 0
            close = False
            retry_after = False
            for line in head.split(b"\r\n")[1:]:
                lower = line.lower()
                if lower.startswith(b"content-length:"):
                    length = int(line[15:])
                elif lower.startswith(b"connection:") and b"close" in lower:
                    close = True
                elif lower.startswith(b"retry-after:"):
                    retry_after = True
            body = await connection.reader.readexactly(length) if length else b""
        except asyncio.CancelledError:
            if not expired:
                if connection is not None:
                    self._discard(connection)
                raise
            if connection is not None:
                self._discard(connection)
            recorder.record(due, loop.time(), TIMEOUT, priority, None)
            return
        except (
            OSError,
            ValueError,
            asyncio.IncompleteReadError,
            asyncio.LimitOverrunError,
        ) as error:
            if connection is not None:
                self._discard(connection)
            recorder.record(due, loop.time(), ERROR, priority, type(error).__name__)
            return
        finally:
            timer.cancel()
            self._busy -= 1
        reason = None if status < 400 else _reason(body)
        if reason is not None and status in (429, 503) and not retry_after:
            reason += NO_RETRY_AFTER
        recorder.record(due, loop.time(), status, priority, reason)
        if close:
            self._discard(connection)
        else:
            connection.idle_since = loop.time()
            self._idle.append(connection)

    def _reusable(self, now: float) -> _Connection | None:
        """The most recently used idle connection, closing those idle too long (the
        stack's freshest is on top: when it is stale, every one below is too)."""
        idle = self._idle
        if idle and now - idle[-1].idle_since > MAX_IDLE:
            self.close()
        return idle.pop() if idle else None

    def _discard(self, connection: _Connection) -> None:
        connection.close()
        self._open -= 1

    def close(self) -> None:
        """Close every idle connection (busy ones close as their requests end)."""
        while self._idle:
            self._discard(self._idle.pop())

    # -- closed loop -----------------------------------------------------------------------

    async def closed_loop(self, clients: int, seconds: float) -> Recorder:
        """``clients`` each sending request after request for ``seconds``."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        stop = start + seconds
        recorder = Recorder(start)

        async def client() -> None:
            while loop.time() < stop:
                await self._one(recorder, loop.time())

        await asyncio.gather(*(client() for _ in range(min(clients, self.max_connections))))
        return recorder

    async def measure_capacity(
        self,
        *,
        step: float = 1.0,
        max_clients: int = 256,
        on_step: Callable[[CapacityStep], None] | None = None,
    ) -> CapacityResult:
        """Ramp ``1, 2, 4, ...`` closed-loop clients, ``step`` seconds each (after a short
        warm-up), until the 2xx rate stops growing (two steps under +5 %) or
        ``max_clients``."""
        await self.closed_loop(2, min(step, 0.5))  # warm up: connections, caches (not counted)
        steps: list[CapacityStep] = []
        best = 0.0
        flat = 0
        clients = 1
        while clients <= max_clients:
            recorder = await self.closed_loop(clients, step)
            elapsed = max(max(recorder.done, default=step), step)
            latencies = [
                done - due
                for due, done, status in zip(
                    recorder.due, recorder.done, recorder.status, strict=True
                )
                if 200 <= status < 300
            ]
            errors = sum(1 for status in recorder.status if not 200 <= status < 300)
            result = CapacityStep(
                clients,
                len(latencies) / elapsed,
                percentile(latencies, 0.5),
                percentile(latencies, 0.99),
                errors,
            )
            steps.append(result)
            if on_step is not None:
                on_step(result)
            if result.rate > best * 1.05:
                flat = 0
            else:
                flat += 1
            best = max(best, result.rate)
            if flat >= 2:
                break
            clients *= 2
        return CapacityResult(best, tuple(steps))

    # -- open loop -------------------------------------------------------------------------

    async def open_loop(
        self,
        rate: float,
        seconds: float,
        *,
        recorder: Recorder | None = None,
        grace: float | None = None,
    ) -> Recorder:
        """Requests due at ``rate`` per second for ``seconds``; then wait at most ``grace``
        seconds (default: the request timeout) for the last answers."""
        if not rate > 0:
            raise ValueError(f"rate must be > 0 per second, got {rate!r}")
        loop = asyncio.get_running_loop()
        start = loop.time()
        if recorder is None:
            recorder = Recorder(start)
        else:
            recorder.start = start
        tasks: set[asyncio.Task[None]] = set()
        launched = 0
        total = int(rate * seconds)
        while launched < total:
            elapsed = loop.time() - start
            due_now = min(total, int(rate * elapsed) + 1)
            while launched < due_now:
                task = loop.create_task(self._one(recorder, start + launched / rate))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                launched += 1
            await asyncio.sleep(0.002)
        if tasks:
            await asyncio.wait(set(tasks), timeout=self.timeout if grace is None else grace)
        for task in list(tasks):
            task.cancel()
        if tasks:
            await asyncio.wait(set(tasks))
        return recorder


def _reason(body: bytes) -> str:
    """The ``error`` (or ``reason``) field of a JSON error body, else ``"other"``."""
    try:
        document = json.loads(body)
    except ValueError:
        return "other"
    if isinstance(document, dict):
        for key in ("error", "reason"):
            value = document.get(key)
            if isinstance(value, str) and value:
                return value[:40]
    return "other"
