"""Fault injection: the chaos strategies, to test a resilience setup (Polly v8's chaos
strategies, formerly Simmy).

Each strategy injects its fault into a share of the calls (``injection_rate``, 0.0 to
1.0), while ``enabled`` (a flag, or a predicate asked per call) says so, drawing from a
random source that a test seeds (``seed=`` or ``random=random.Random(seed)``)::

    slow = brace.chaos.latency(2.0, injection_rate=0.1, seed=7)
    broken = brace.chaos.exception(ConnectionResetError("chaos"), injection_rate=0.05)
    policy = brace.compose(retry, breaker, slow, broken)

Each is a policy :func:`brace.compose` accepts, a decorator, and (all but ``outcome``,
which replaces a result) an async context manager. See the docs' chaos page.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable

from ._chaos import ChaosBehavior as ChaosBehavior
from ._chaos import ChaosDetails as ChaosDetails
from ._chaos import ChaosException as ChaosException
from ._chaos import ChaosHook as ChaosHook
from ._chaos import ChaosLatency as ChaosLatency
from ._chaos import ChaosOutcome as ChaosOutcome
from ._chaos import ChaosStatistics as ChaosStatistics
from ._chaos import ChaosStrategy as ChaosStrategy
from ._chaos import Enabled, RandomSource
from ._chaos import should_inject as should_inject
from ._events import EventHook

__all__ = (
    "ChaosBehavior",
    "ChaosDetails",
    "ChaosException",
    "ChaosHook",
    "ChaosLatency",
    "ChaosOutcome",
    "ChaosStatistics",
    "ChaosStrategy",
    "behavior",
    "exception",
    "latency",
    "outcome",
    "should_inject",
)


def latency(
    seconds: float,
    *,
    injection_rate: float,
    enabled: Enabled = True,
    random: RandomSource | None = None,
    seed: int | None = None,
    on_inject: ChaosHook | None = None,
    on_event: EventHook | Iterable[EventHook] | None = None,
    name: str = "",
) -> ChaosLatency:
    """Sleep ``seconds`` before a share of the calls: a :class:`ChaosLatency`."""
    return ChaosLatency(
        seconds,
        injection_rate=injection_rate,
        enabled=enabled,
        random=random,
        seed=seed,
        on_inject=on_inject,
        on_event=on_event,
        name=name,
    )


def exception(
    exception: BaseException | Callable[[], BaseException],
    *,
    injection_rate: float,
    enabled: Enabled = True,
    random: RandomSource | None = None,
    seed: int | None = None,
    on_inject: ChaosHook | None = None,
    on_event: EventHook | Iterable[EventHook] | None = None,
    name: str = "",
) -> ChaosException:
    """Raise ``exception`` (an instance, or a factory called each time) instead of a share
    of the calls: a :class:`ChaosException`."""
    return ChaosException(
        exception,
        injection_rate=injection_rate,
        enabled=enabled,
        random=random,
        seed=seed,
        on_inject=on_inject,
        on_event=on_event,
        name=name,
    )


def outcome(
    result: object = None,
    *,
    factory: Callable[[], object] | None = None,
    injection_rate: float,
    enabled: Enabled = True,
    random: RandomSource | None = None,
    seed: int | None = None,
    on_inject: ChaosHook | None = None,
    on_event: EventHook | Iterable[EventHook] | None = None,
    name: str = "",
) -> ChaosOutcome:
    """Return ``result`` (or ``factory()``) instead of making a share of the calls: a
    :class:`ChaosOutcome`."""
    return ChaosOutcome(
        result,
        factory=factory,
        injection_rate=injection_rate,
        enabled=enabled,
        random=random,
        seed=seed,
        on_inject=on_inject,
        on_event=on_event,
        name=name,
    )


def behavior(
    behavior: Callable[[], Awaitable[object]],
    *,
    injection_rate: float,
    enabled: Enabled = True,
    random: RandomSource | None = None,
    seed: int | None = None,
    on_inject: ChaosHook | None = None,
    on_event: EventHook | Iterable[EventHook] | None = None,
    name: str = "",
) -> ChaosBehavior:
    """Run ``behavior()`` (async) before a share of the calls: a :class:`ChaosBehavior`."""
    return ChaosBehavior(
        behavior,
        injection_rate=injection_rate,
        enabled=enabled,
        random=random,
        seed=seed,
        on_inject=on_inject,
        on_event=on_event,
        name=name,
    )
