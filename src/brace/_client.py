"""The client loop of `brace.httpx` and `brace.aiohttp`: one outgoing request, made politely.

Theory of operation
-------------------
A request has a *key*: by default its ``host:port``, so that every host has its own circuit
breaker and its own rate limit (``key=`` changes that; ``key=None`` sends every request
through the breaker and limiter given, as they are). Each attempt waits for the key's rate
limit, asks the key's breaker (an open circuit raises `brace.CircuitOpen` without sending,
and is never retried), sends, and settles the breaker from the outcome: a 5xx status is a
failure, any other status a success, an exception is classified by the breaker.

Only a request whose method is in ``retry_methods`` and whose body can be sent again is
retried. An answer with a ``retry_statuses`` status is then read (at most ``max_body``
bytes; a longer one is handed back whole, unretried) and released, and raised as
`_RetryableStatus`, on which `brace.Retry` sleeps at least its ``Retry-After``; an
answer asking to wait longer than ``max_retry_after`` is handed back at once. When
retrying stops, the last answer is handed back from what was read.

The adapters (httpx transport, aiohttp client middleware) are subclasses of
`ResilientClient` that say how to read a status, a header and a body; the loop is here.

Per-key state is bounded. Limits live in a `brace.RateLimiter` (its store holds at most
``max_keys`` keys and never lets an evicted key above its limit). Breakers live in a table
of at most ``max_keys`` keys, least recently used first out: a breaker at rest (closed,
no failure in a row) is simply dropped; any other is *spilled* into a fixed-size sketch
of ``max(max_keys, 1024)`` slots, indexed by the key's hash, each keeping the latest
time until which a key spilled there was open and the longest run of failures. A new
breaker starts from its slot: with that run of failures (up to one short of opening)
and open for the rest of that time. So an evicted host comes back at least as closed to
traffic as it left; a host sharing its slot may start a little stricter. A slot also
remembers the hash of the one key spilled there (or that several were): when that key
comes back, its state moves back into its breaker and the slot is emptied, so a run of
failures it later recovers from is not held against it at its next return. (A breaker's
rate window is not spilled: only its state and its run of failures are.)
"""

from __future__ import annotations

import abc
import email.utils
import functools
import logging
import math
import time
from array import array
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any, ClassVar, Generic, TypeVar, cast

import anyio
from typing_extensions import TypedDict

from ._breaker import CircuitBreaker
from ._bucket import TokenBucket
from ._compose import CallPolicy, Policy, compose
from ._core.breaker import CircuitState
from ._events import EventHook, Refused, event_hook
from ._exceptions import CircuitOpen, Rejected
from ._limiter import RateLimiter
from ._retry import Backoff, Retry
from ._window import SlidingWindow

__all__ = (
    "IDEMPOTENT_METHODS",
    "MAX_RETRY_AFTER",
    "ClientOptions",
    "ResilientClient",
    "host_key",
    "parse_retry_after",
)

#: Methods retried by default (RFC 9110 idempotent methods).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE", "TRACE"})

#: The longest wait a ``Retry-After`` is read as, in seconds (2**31 - 1, about 68 years);
#: a larger delay-seconds value is read as this.
MAX_RETRY_AFTER = 2**31 - 1

# A Retry-After value longer than this is not read at all: an IMF-fixdate is 29
# characters, the obsolete date forms are shorter than 40, and delay-seconds of more
# than MAX_RETRY_AFTER are clamped anyway.
_RETRY_AFTER_MAX_CHARS = 64

_DEFAULT_PORTS = {"http": 80, "https": 443, "ws": 80, "wss": 443}

# A tiny table still gets a sketch of this many slots, so that collisions stay rare.
_MIN_SLOTS = 1024
# The run of failures spilled for a breaker that was open or half-open: on its return
# it is one failure away from opening again.
_OPEN_RUN = 2**62
# The owner of a sketch slot that more than one key was spilled into (``hash()`` is never
# -1: CPython reserves it for errors). A slot is empty while its run of failures is 0:
# every breaker spilled has a run of at least 1.
_SHARED = -1

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` value, or ``None`` when absent or unreadable.

    RFC 9110: delay-seconds (ASCII digits only, clamped to `MAX_RETRY_AFTER`) or an
    HTTP-date (a date in the past gives 0; ``now`` is the wall-clock time to count from,
    default `time.time`). Anything else (a sign, a fraction, an exponent, non-ASCII
    digits, a value over 64 characters) is ``None``. Never raises; reads at most 64
    characters.
    """
    if value is None or len(value) > _RETRY_AFTER_MAX_CHARS or not value.isascii():
        return None
    value = value.strip(" \t")
    if value.isdigit():  # ASCII only (checked above): 1*DIGIT
        return float(min(int(value), MAX_RETRY_AFTER))
    try:
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), float(MAX_RETRY_AFTER))


def host_key(request: Any) -> str:
    """The default key: ``host:port`` of the request's URL (the scheme's port if none)."""
    url = request.url
    port = url.port or _DEFAULT_PORTS.get(url.scheme, 0)
    return f"{url.host or '-'}:{port}"


class ClientOptions(TypedDict, total=False):
    """The options of every resilient client adapter (see `ResilientClient`)."""

    retry: Retry | None
    breaker: CircuitBreaker | None
    limiter: Any
    retry_statuses: Iterable[int]
    respect_retry_after: bool
    max_retry_after: float
    retry_methods: Iterable[str]
    key: Callable[[Any], str] | None
    max_keys: int
    max_body: int
    chaos: Any
    on_event: EventHook | Iterable[EventHook] | None


logger = logging.getLogger("brace.client")


class _RetryableStatus(Rejected, Generic[ResponseT]):
    """An answer with a retryable status, read and released while the next attempt is made."""

    def __init__(self, status: int, kept: ResponseT, retry_after: float | None) -> None:
        super().__init__(f"HTTP {status}", retry_after=retry_after)
        self.kept = kept


class _Stopped:
    """An attempt that must end the loop: the circuit was open (never retried)."""

    __slots__ = ("error",)

    def __init__(self, error: CircuitOpen) -> None:
        self.error = error


class ResilientClient(abc.ABC, Generic[RequestT, ResponseT]):
    """The loop and options shared by `brace.httpx.ResilientTransport` and
    `brace.aiohttp.ResilientMiddleware`.

    Args:
        retry: a `brace.Retry` (default: 3 attempts, exponential backoff 0.1 s .. 10 s,
            retrying transport errors and retryable statuses). Its ``retry_on`` decides
            which errors are retried; answers with a ``retry_statuses`` status are retried
            too.
        breaker: a `brace.CircuitBreaker`: with a ``key`` (the default), a template: each
            key gets a breaker with its arguments, named ``"<name> <key>"`` (or the key);
            with ``key=None``, this breaker itself. It is asked before each attempt; 5xx
            answers and transport errors count as failures; when it is open the request
            raises `brace.CircuitOpen` without being sent.
        limiter: client-side rate limit before each attempt, waiting its turn: a
            `brace.RateLimiter` (keyed by ``key``), or a `brace.TokenBucket` /
            `brace.SlidingWindow` (with a ``key``, a template: each key gets its own; with
            ``key=None``, this one), or anything with ``async acquire()`` (shared).
        retry_statuses: statuses retried like errors (HTTP statuses 100-599).
        respect_retry_after: sleep at least the answer's ``Retry-After`` before retrying.
        max_retry_after: an answer asking to wait longer than this (seconds) is returned,
            not retried.
        retry_methods: methods retried (default: the idempotent ones), upper case. A
            request whose body is a stream is never retried: it could not be sent again.
        key: a function of the request naming its breaker and rate limit (default:
            ``host:port``); ``None``: one breaker and one limit for every request.
        max_keys: the most keys whose breakers and limits are held (an int >= 1).
        max_body: the most bytes of a retryable answer's body read and kept to be handed
            back should retrying stop (an int >= 0); a longer answer is handed back at
            once, unread.
        chaos: fault injection for each attempt: a `brace.chaos` strategy (or any
            policy with ``async call(fn)``, e.g. ``brace.compose(...)`` of several), or a
            sequence of them, composed in order. Applied around each send, inside the
            rate limit and the breaker and under the retry, so an injected connection
            error, 5xx answer (``brace.chaos.outcome(factory=...)``) or latency goes
            through the same loop as a real one.
        on_event: a hook, or hooks, called with a `brace.events.Refused` (reason
            ``"circuit_open"``, ``source="client"``, ``key``: the request's key) each
            time an open circuit stops a request before it is sent; logged at DEBUG on
            ``brace.client``. (The breakers' and the retry's own ``on_event`` hooks see
            their state changes and retries.)
    """

    #: The adapter's transport errors, retried by the default `brace.Retry`.
    transport_errors: ClassVar[tuple[type[Exception], ...]] = ()
    #: The name of the default `brace.Retry`.
    retry_name: ClassVar[str] = "client"

    def __init__(
        self,
        *,
        retry: Retry | None = None,
        breaker: CircuitBreaker | None = None,
        limiter: Any = None,
        retry_statuses: Iterable[int] = (429, 502, 503, 504),
        respect_retry_after: bool = True,
        max_retry_after: float = 60.0,
        retry_methods: Iterable[str] = IDEMPOTENT_METHODS,
        key: Callable[[Any], str] | None = host_key,
        max_keys: int = 10_000,
        max_body: int = 1 << 20,
        chaos: Any = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
    ) -> None:
        self.on_event = event_hook(on_event)
        if retry is None:
            retry = Retry(
                3,
                backoff=Backoff.exponential(base=0.1, cap=10.0),
                retry_on=(*self.transport_errors, _RetryableStatus),
                name=self.retry_name,
            )
        elif not isinstance(retry, Retry):
            raise TypeError(f"retry must be a brace.Retry or None, got {retry!r}")
        self.retry = retry
        if breaker is not None and not isinstance(breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a brace.CircuitBreaker or None, got {breaker!r}")
        self.breaker = breaker
        if limiter is not None and not callable(getattr(limiter, "acquire", None)):
            raise TypeError(
                "limiter must be a brace.TokenBucket, brace.SlidingWindow or brace.RateLimiter, "
                f"got {limiter!r}"
            )
        self.limiter = limiter
        self.retry_statuses = _check_statuses(retry_statuses)
        if not isinstance(respect_retry_after, bool):
            raise TypeError(f"respect_retry_after must be a bool, got {respect_retry_after!r}")
        self.respect_retry_after = respect_retry_after
        if isinstance(max_retry_after, bool) or not isinstance(max_retry_after, (int, float)):
            raise TypeError(f"max_retry_after must be a number, got {max_retry_after!r}")
        if not max_retry_after >= 0:
            raise ValueError(
                f"max_retry_after must be a number of seconds >= 0, got {max_retry_after!r}"
            )
        self.max_retry_after = float(max_retry_after)
        self.retry_methods = _check_methods(retry_methods)
        if key is not None and not callable(key):
            raise TypeError(f"key must be a callable (request) -> str or None, got {key!r}")
        self.key = key
        self.max_keys = _check_count(max_keys, "max_keys", 1)
        self.max_body = _check_count(max_body, "max_body", 0)
        self.chaos = _check_chaos(chaos)
        keyed = key is not None
        self._breakers = _BreakerTable(breaker, max_keys) if breaker is not None and keyed else None
        self._acquire = _acquirer(limiter, keyed=keyed, max_keys=max_keys)
        # the key is computed only when something is kept per key
        self._key_of = key if self._breakers is not None or self._acquire is not None else None

    @property
    def breakers(self) -> Mapping[str, CircuitBreaker]:
        """The per-key breakers held now, by key (empty without a ``key`` or a breaker)."""
        return MappingProxyType({} if self._breakers is None else self._breakers.held)

    # -- what an adapter says about its responses ------------------------------------------

    @abc.abstractmethod
    def _status(self, response: ResponseT) -> int:
        """The response's status code."""

    @abc.abstractmethod
    def _retry_after(self, response: ResponseT) -> str | None:
        """The response's ``Retry-After`` value, if it has one."""

    @abc.abstractmethod
    async def _keep(self, response: ResponseT, limit: int) -> ResponseT | None:
        """Read the body (at most ``limit`` bytes) and release the connection: a response
        to hand back later, or ``None`` when the body is longer (``response`` is then left
        readable whole)."""

    # -- the loop --------------------------------------------------------------------------

    async def _handle(
        self,
        request: RequestT,
        send: Callable[[], Awaitable[ResponseT]],
        *,
        method: str,
        replayable: bool,
    ) -> ResponseT:
        """Send ``request`` (through ``send``) as configured; the response to hand back."""
        key_of = self._key_of
        key = "*" if key_of is None else key_of(request)
        if not isinstance(key, str):
            raise TypeError(f"key must return a str, got {type(key).__name__}")
        chaos = self.chaos
        if chaos is not None:
            send = functools.partial(chaos.call, send)
        if method not in self.retry_methods or not replayable:
            outcome = await self._attempt(send, key, retrying=False)
        else:
            try:
                outcome = await self.retry.call(self._attempt, send, key, retrying=True)
            except _RetryableStatus as last:
                return cast(ResponseT, last.kept)  # retrying stopped: the last answer
        if isinstance(outcome, _Stopped):
            raise outcome.error
        return outcome

    async def _attempt(
        self,
        send: Callable[[], Awaitable[ResponseT]],
        key: str,
        *,
        retrying: bool,
    ) -> ResponseT | _Stopped:
        acquire = self._acquire
        if acquire is not None:
            await acquire(key)
        table = self._breakers  # looked up per attempt: the key's breaker of the moment
        breaker = self.breaker if table is None else table.get(key)
        ticket = None
        if breaker is not None:
            try:
                ticket = breaker.try_enter()
            except CircuitOpen as refused:
                logger.debug("client: circuit open for %s; not sent", key)
                if self.on_event is not None:
                    self.on_event(
                        Refused(
                            breaker.name,
                            anyio.current_time(),
                            "circuit_open",
                            "client",
                            refused.retry_after,
                            key=key,
                        )
                    )
                if retrying:
                    return _Stopped(refused)  # an open circuit is not retried
                raise
        try:
            response = await send()
        except BaseException as error:
            if ticket is not None:
                ticket.record_exception(error)
            raise
        status = self._status(response)
        if ticket is not None:
            if status >= 500:
                ticket.failure()
            else:
                ticket.success()
        if not retrying or status not in self.retry_statuses:
            return response
        retry_after = parse_retry_after(self._retry_after(response))
        if retry_after is not None and retry_after > self.max_retry_after:
            return response
        kept = await self._keep(response, self.max_body)
        if kept is None:
            return response  # too long to keep: handed back, not retried
        raise _RetryableStatus(status, kept, retry_after if self.respect_retry_after else None)


def _check_chaos(chaos: object) -> Policy | None:
    """``None``, or one policy applying every chaos strategy given, in order."""
    if chaos is None:
        return None
    if isinstance(chaos, (list, tuple)):
        return compose(*chaos) if chaos else None
    if not callable(getattr(chaos, "call", None)):
        raise TypeError(
            "chaos must be a brace.chaos strategy (anything with async call(fn)), a sequence "
            f"of them, or None, got {chaos!r}"
        )
    return compose(cast(CallPolicy, chaos))


def _check_statuses(statuses: object) -> frozenset[int]:
    if isinstance(statuses, (str, bytes)) or not isinstance(statuses, Iterable):
        raise TypeError(f"retry_statuses must be a collection of ints, got {statuses!r}")
    checked = frozenset(statuses)
    for status in checked:
        if isinstance(status, bool) or not isinstance(status, int) or not 100 <= status <= 599:
            raise ValueError(f"retry_statuses must be HTTP statuses (100-599), got {status!r}")
    return checked


def _check_methods(methods: object) -> frozenset[str]:
    if isinstance(methods, (str, bytes)) or not isinstance(methods, Iterable):
        raise TypeError(
            f"retry_methods must be a collection of method names such as ('GET',), got {methods!r}"
        )
    checked = set()
    for method in methods:
        if not isinstance(method, str) or not method.isascii() or not method.isalpha():
            raise ValueError(
                f"retry_methods must hold HTTP method names (ASCII letters), got {method!r}"
            )
        checked.add(method.upper())
    return frozenset(checked)


def _check_count(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _acquirer(
    limiter: Any, *, keyed: bool, max_keys: int
) -> Callable[[str], Awaitable[object]] | None:
    """What waits for the rate limit of a key, once per attempt."""
    if limiter is None:
        return None
    if isinstance(limiter, RateLimiter):
        acquire: Callable[[str], Awaitable[object]] = limiter.acquire
        return acquire
    if keyed and isinstance(limiter, (TokenBucket, SlidingWindow)):
        # a TokenBucket / SlidingWindow as a template: one of its kind per key, same clock
        return RateLimiter(limiter, max_keys=max_keys, clock=limiter.clock).acquire
    shared = limiter.acquire

    async def acquire_shared(key: str) -> object:
        return await shared()

    return acquire_shared


class _BreakerTable:
    """The breakers of the keys seen: at most ``max_keys``, the least recently used out
    first, spilled into a sketch unless at rest (see the module's theory of operation)."""

    __slots__ = (
        "_clock",
        "_failures",
        "_owners",
        "_until",
        "evictions",
        "held",
        "max_keys",
        "template",
    )

    def __init__(self, template: CircuitBreaker, max_keys: int) -> None:
        self.template = template
        self.max_keys = max_keys
        self.held: OrderedDict[str, CircuitBreaker] = OrderedDict()
        self.evictions = 0
        self._clock: Callable[[], float] = template.clock
        self._until: array[float] | None = None  # both allocated on the first spill
        self._failures: array[int] | None = None
        # the hash of the one key spilled into a nonempty slot, or _SHARED
        self._owners: array[int] | None = None

    def get(self, key: str) -> CircuitBreaker:
        """The breaker of ``key``, made (from its slot of the sketch) if it has none."""
        held = self.held
        breaker = held.get(key)
        if breaker is not None:
            held.move_to_end(key)
            return breaker
        if len(held) >= self.max_keys:
            self._evict(*held.popitem(last=False))
        name = self.template.name
        breaker = self.template.replica(name=key if name is None else f"{name} {key}")
        if self._until is not None:
            self._restore(key, breaker)
        held[key] = breaker
        return breaker

    def _slot(self, key: str) -> int:
        return hash(key) % max(self.max_keys, _MIN_SLOTS)

    def _evict(self, key: str, breaker: CircuitBreaker) -> None:
        stats = breaker.statistics()
        if stats.state is CircuitState.CLOSED and not stats.consecutive_failures:
            return  # at rest: a new breaker knows as much
        self.evictions += 1
        if self._until is None or self._failures is None or self._owners is None:
            slots = max(self.max_keys, _MIN_SLOTS)
            self._until = array("d", [-math.inf]) * slots
            self._failures = array("q", [0]) * slots
            self._owners = array("q", [_SHARED]) * slots
        slot = self._slot(key)
        if not self._failures[slot]:
            self._owners[slot] = hash(key)
        elif self._owners[slot] != hash(key):
            self._owners[slot] = _SHARED
        if stats.state is CircuitState.CLOSED:
            run = stats.consecutive_failures
        else:  # open or half-open: back one failure away from opening
            run = _OPEN_RUN
            wait = stats.time_until_half_open
            if stats.state is CircuitState.OPEN and wait is not None:
                self._until[slot] = max(self._until[slot], self._clock() + wait)
        self._failures[slot] = max(self._failures[slot], run)

    def _restore(self, key: str, breaker: CircuitBreaker) -> None:
        until, failures, owners = self._until, self._failures, self._owners
        assert until is not None
        assert failures is not None
        assert owners is not None
        slot = self._slot(key)
        if not failures[slot]:
            return  # nothing was spilled here
        threshold = breaker.failure_threshold
        if threshold is not None:
            for _ in range(min(failures[slot], threshold - 1)):
                breaker.try_enter().failure()
        wait = until[slot] - self._clock()
        if wait > 0:
            breaker.open_for(wait)
        if owners[slot] == hash(key):  # the slot held this key alone: it is back in full
            failures[slot] = 0
            until[slot] = -math.inf
