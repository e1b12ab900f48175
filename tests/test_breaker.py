"""CircuitBreaker, the async shell: admission, outcomes, cancellation, hooks, control."""

from __future__ import annotations

import dataclasses
import inspect
import logging
import random
from typing import Any

import anyio
import pytest

import brace
from brace import CircuitBreaker, CircuitEvent, CircuitOpen, CircuitState, CircuitStateChange
from brace.testing import FakeClock


class Boom(Exception):
    """A failure of the guarded service."""


async def fail() -> None:
    raise Boom


async def ok() -> str:
    return "ok"


def state(breaker: CircuitBreaker) -> CircuitState:
    """The breaker's state, read through a call so that mypy does not narrow it."""
    return breaker.state


async def trip(breaker: CircuitBreaker, failures: int) -> None:
    for _ in range(failures):
        with pytest.raises(Boom):
            await breaker.call(fail)


# -- the closed path --------------------------------------------------------------------


async def test_closed_path_never_yields_to_the_event_loop() -> None:
    """Many closed-path calls in a row let no other task run: nothing awaited reaches the loop."""
    breaker = CircuitBreaker(failure_threshold=3, clock=anyio.current_time)
    ran: list[bool] = []
    async with anyio.create_task_group() as group:
        group.start_soon(_mark, ran)
        for _ in range(100):
            async with breaker:
                pass
            await breaker.call(ok)
        assert ran == []
    assert ran == [True]


async def _mark(ran: list[bool]) -> None:
    ran.append(True)


async def test_failures_in_a_row_open_the_circuit_and_refusals_are_immediate() -> None:
    """failure_threshold failures open it; then calls fail at once with retry_after."""
    breaker = CircuitBreaker(
        failure_threshold=15, recovery_time=30.0, clock=anyio.current_time, name="db"
    )
    await trip(breaker, 14)
    assert state(breaker) is CircuitState.CLOSED
    await trip(breaker, 1)
    assert state(breaker) is CircuitState.OPEN
    before = anyio.current_time()
    await anyio.sleep(10)
    with pytest.raises(CircuitOpen) as refusal:
        async with breaker:
            pytest.fail("an open circuit ran the block")
    assert anyio.current_time() == before + 10
    assert refusal.value.retry_after == pytest.approx(20.0)
    assert refusal.value.name == "db"
    assert refusal.value.state is CircuitState.OPEN
    assert breaker.statistics().rejected == 1


async def test_recovery_probe_success_closes() -> None:
    """After recovery_time one probe runs; its success closes the circuit."""
    breaker = CircuitBreaker(failure_threshold=2, recovery_time=5.0, clock=anyio.current_time)
    await trip(breaker, 2)
    await anyio.sleep(5)
    assert state(breaker) is CircuitState.HALF_OPEN
    assert await breaker.call(ok) == "ok"
    assert state(breaker) is CircuitState.CLOSED


async def test_failed_probe_reopens_for_longer_with_backoff() -> None:
    """A failed probe reopens; recovery_backoff doubles the open period each time."""
    breaker = CircuitBreaker(
        failure_threshold=1, recovery_time=2.0, recovery_backoff=2.0, clock=anyio.current_time
    )
    await trip(breaker, 1)
    waits = []
    for _ in range(3):
        waits.append(breaker.statistics().time_until_half_open)
        await anyio.sleep(waits[-1])  # type: ignore[arg-type]
        await trip(breaker, 1)
    assert waits == [2.0, 4.0, 8.0]


def test_backoff_jitter_stays_within_bounds() -> None:
    """With jitter j the open period is in (d * (1 - j), d] for the grown duration d."""
    draws = random.Random(7)
    clock = FakeClock()
    breaker = CircuitBreaker(
        failure_threshold=1,
        recovery_time=1.0,
        recovery_backoff=3.0,
        max_recovery_time=50.0,
        recovery_jitter=0.4,
        clock=clock,
        random=draws,
    )
    for trips in range(1, 8):
        ticket = breaker.try_enter()
        ticket.failure()
        wait = breaker.statistics().time_until_half_open
        assert wait is not None
        full = min(1.0 * 3.0 ** (trips - 1), 50.0)
        assert full * 0.6 < wait <= full
        clock.advance(wait)


@pytest.mark.parametrize("first", ["success", "failure", "cancel"])
@pytest.mark.parametrize("second", ["success", "failure", "cancel"])
def test_a_ticket_reports_once(first: str, second: str) -> None:
    """A ticket's outcome is reported once: a second report of any kind raises and
    changes nothing (the first success counted, not two)."""
    breaker = CircuitBreaker(failure_threshold=1, clock=FakeClock())
    ticket = breaker.try_enter()
    assert bool(ticket.pending)  # (not narrowed by mypy: it is read again below)
    getattr(ticket, first)()
    assert not ticket.pending
    before = breaker.statistics()
    with pytest.raises(RuntimeError, match="already reported"):
        getattr(ticket, second)()
    assert breaker.statistics() == before


# -- what counts as a failure -------------------------------------------------------------


async def test_exceptions_propagate_unchanged() -> None:
    """The very exception raised in the block reaches the caller, in every form."""
    breaker = CircuitBreaker(failure_threshold=100, clock=anyio.current_time)
    error = Boom("same object")

    async def raise_it() -> None:
        raise error

    with pytest.raises(Boom) as caught:
        async with breaker:
            raise error
    assert caught.value is error
    with pytest.raises(Boom) as caught:
        await breaker.call(raise_it)
    assert caught.value is error
    with pytest.raises(Boom) as caught:
        await breaker(raise_it)()
    assert caught.value is error


async def test_exclude_and_is_failure_make_successes() -> None:
    """Excluded types and is_failure -> False count as successes, not failures."""

    class NotFound(Boom):
        pass

    breaker = CircuitBreaker(
        failure_threshold=2,
        exclude=(NotFound,),
        is_failure=lambda error: "transient" not in str(error),
        clock=anyio.current_time,
    )
    for error in (Boom("transient"), NotFound(), Boom("x"), Boom("transient"), Boom("y")):
        with pytest.raises(Boom):
            async with breaker:
                raise error
    stats = breaker.statistics()
    assert (stats.failures, stats.successes, stats.state) == (2, 3, CircuitState.CLOSED)


async def test_only_listed_exceptions_fail() -> None:
    """With exceptions=(Boom,), a ValueError is a success (the service answered)."""
    breaker = CircuitBreaker(failure_threshold=1, exceptions=Boom, clock=anyio.current_time)
    with pytest.raises(ValueError):
        async with breaker:
            raise ValueError
    assert state(breaker) is CircuitState.CLOSED
    await trip(breaker, 1)
    assert state(breaker) is CircuitState.OPEN


async def test_failure_result_counts_results_as_failures() -> None:
    """A result the predicate flags (an HTTP 503, say) is a failure, and is still returned."""
    breaker = CircuitBreaker(
        failure_threshold=2, failure_result=lambda status: status >= 500, clock=anyio.current_time
    )

    async def status(code: int) -> int:
        return code

    guarded = breaker(status)
    assert await guarded(503) == 503
    assert await guarded(200) == 200
    assert await guarded(503) == 503
    assert state(breaker) is CircuitState.CLOSED
    assert await breaker.call(status, 502) == 502
    assert state(breaker) is CircuitState.OPEN


async def test_nested_circuit_open_is_neither_failure_nor_success() -> None:
    """An inner breaker refusing inside an outer one leaves the outer's counts alone."""
    inner = CircuitBreaker(failure_threshold=1, clock=anyio.current_time)
    outer = CircuitBreaker(failure_threshold=1, clock=anyio.current_time)
    inner.force_open()
    for _ in range(3):
        with pytest.raises(CircuitOpen):
            async with outer, inner:
                pass
    stats = outer.statistics()
    assert (stats.failures, stats.successes, stats.ignored) == (0, 0, 3)
    assert stats.state is CircuitState.CLOSED


async def test_predicate_errors_are_logged_and_count_as_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A predicate that raises is logged; the call counts as a failure; the caller is unharmed."""

    def broken(error: BaseException) -> bool:
        raise RuntimeError("bug in predicate")

    breaker = CircuitBreaker(failure_threshold=1, is_failure=broken, clock=anyio.current_time)
    with caplog.at_level(logging.ERROR, logger="brace.breaker"), pytest.raises(Boom):
        await breaker.call(fail)
    assert "is_failure raised" in caplog.text
    assert state(breaker) is CircuitState.OPEN


# -- half-open under a crowd ------------------------------------------------------------


@pytest.mark.parametrize("probes", [1, 3])
async def test_a_thousand_callers_at_half_open_get_exactly_the_probes(probes: int) -> None:
    """1,000 callers arriving as it turns half-open: exactly half_open_max_calls run, the
    rest get CircuitOpen at once."""
    breaker = CircuitBreaker(
        failure_threshold=1,
        recovery_time=10.0,
        half_open_max_calls=probes,
        success_threshold=probes,
        clock=anyio.current_time,
    )
    await trip(breaker, 1)
    opens_at = anyio.current_time() + 10.0
    ran = 0
    refused_at: list[float] = []
    refusals: list[CircuitOpen] = []

    async def caller() -> None:
        nonlocal ran
        await anyio.sleep_until(opens_at)
        try:
            async with breaker:
                ran += 1
                await anyio.sleep(1)
        except CircuitOpen as refusal:
            refused_at.append(anyio.current_time())
            refusals.append(refusal)

    async with anyio.create_task_group() as group:
        for _ in range(1000):
            group.start_soon(caller)
    assert ran == probes
    assert len(refused_at) == 1000 - probes
    assert set(refused_at) == {opens_at}
    assert {refusal.retry_after for refusal in refusals} == {None}
    assert {refusal.state for refusal in refusals} == {CircuitState.HALF_OPEN}
    assert state(breaker) is CircuitState.CLOSED


async def test_a_closed_call_ending_in_half_open_is_not_a_probe() -> None:
    """A call admitted before the trip that ends during half-open frees no probe permit."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=1.0, clock=anyio.current_time)
    done = anyio.Event()

    async def long_call() -> None:
        async with breaker:
            await done.wait()

    async with anyio.create_task_group() as group:
        group.start_soon(long_call)
        await anyio.sleep(0.1)
        await trip(breaker, 1)
        await anyio.sleep(1)
        probe = breaker.try_enter()
        assert probe.is_probe
        done.set()
        await anyio.sleep(0.1)
        with pytest.raises(CircuitOpen):
            breaker.try_enter()
        probe.success()
    assert state(breaker) is CircuitState.CLOSED


# -- cancellation -------------------------------------------------------------------------


async def test_cancelled_call_changes_no_failure_count() -> None:
    """A call cancelled in the block is neither a failure nor a success."""
    breaker = CircuitBreaker(failure_threshold=2, clock=anyio.current_time)
    await trip(breaker, 1)
    with anyio.move_on_after(1):
        async with breaker:
            await anyio.sleep(10)
    stats = breaker.statistics()
    assert (stats.failures, stats.successes, stats.ignored) == (1, 0, 1)
    assert stats.consecutive_failures == 1


async def test_cancellation_reaches_the_caller_unchanged() -> None:
    """The cancellation exception leaving the block is the one raised in it, of anyio's class."""
    breaker = CircuitBreaker(clock=anyio.current_time)
    raised: list[BaseException] = []
    seen: list[BaseException] = []
    with anyio.CancelScope() as scope:
        try:
            async with breaker:
                scope.cancel()
                try:
                    await anyio.sleep(10)
                except BaseException as error:
                    raised.append(error)
                    raise
        except BaseException as error:
            seen.append(error)
            raise
    assert seen[0] is raised[0]
    assert type(seen[0]) is anyio.get_cancelled_exc_class()


async def test_cancelled_probe_frees_its_permit() -> None:
    """A probe cancelled mid-call gives its permit back: the next caller can probe."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=5.0, clock=anyio.current_time)
    await trip(breaker, 1)
    await anyio.sleep(5)
    with anyio.move_on_after(1):
        await breaker.call(anyio.sleep, 10)
    assert state(breaker) is CircuitState.HALF_OPEN
    assert breaker.statistics().half_open_calls == 0
    assert await breaker.call(ok) == "ok"
    assert state(breaker) is CircuitState.CLOSED


@pytest.mark.parametrize("form", ["async_with", "call"])
async def test_random_cancellations_keep_the_books(form: str) -> None:
    """Callers cancelled at random moments never leak or double-spend a probe permit."""
    rng = random.Random(1234)
    breaker = CircuitBreaker(
        failure_threshold=3,
        recovery_time=2.0,
        half_open_max_calls=2,
        success_threshold=3,
        clock=anyio.current_time,
    )
    running = 0
    peak_probes = 0
    failures = 0

    async def body(duration: float, failing: bool) -> None:
        nonlocal running, peak_probes
        running += 1
        if breaker.statistics().state is CircuitState.HALF_OPEN:
            peak_probes = max(peak_probes, breaker.statistics().half_open_calls)
        try:
            await anyio.sleep(duration)
        finally:
            running -= 1
        if failing:
            raise Boom

    async def caller() -> None:
        nonlocal failures
        await anyio.sleep(rng.uniform(0, 20))
        duration, failing = rng.uniform(0, 1), rng.random() < 0.3
        with anyio.move_on_after(rng.uniform(0, 1.5)):
            try:
                if form == "call":
                    await breaker.call(body, duration, failing)
                else:
                    async with breaker:
                        await body(duration, failing)
            except (Boom, CircuitOpen) as error:
                failures += isinstance(error, Boom)

    async with anyio.create_task_group() as group:
        for _ in range(400):
            group.start_soon(caller)
    stats = breaker.statistics()
    assert running == 0
    assert peak_probes <= 2
    assert stats.failures == failures
    assert stats.half_open_calls == 0
    # every caller was refused or ended in exactly one of the three other books
    assert stats.successes + stats.failures + stats.ignored + stats.rejected == 400


# -- hooks, statistics, manual control ----------------------------------------------------


def test_hooks_receive_frozen_details_and_their_errors_are_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every hook gets a frozen CircuitStateChange; a raising hook is logged, not propagated."""
    clock = FakeClock(100.0)
    seen: list[CircuitStateChange] = []

    def broken(change: CircuitStateChange) -> None:
        raise RuntimeError("hook bug")

    breaker = CircuitBreaker(
        failure_threshold=1,
        recovery_time=3.0,
        clock=clock,
        name="api",
        on_state_change=[broken, seen.append],
    )
    with caplog.at_level(logging.ERROR, logger="brace.breaker"):
        breaker.try_enter().failure()
    assert "hook" in caplog.text
    assert seen == [
        CircuitStateChange("api", CircuitState.CLOSED, CircuitState.OPEN,
                           CircuitEvent.FAILURE_THRESHOLD, 100.0, 3.0)
    ]  # fmt: skip
    with pytest.raises(dataclasses.FrozenInstanceError):
        seen[0].new = CircuitState.CLOSED  # type: ignore[misc]
    clock.advance(3)
    assert state(breaker) is CircuitState.HALF_OPEN
    assert seen[-1].reason == "recovery_time_elapsed"
    assert seen[-1].at == 103.0


def test_manual_control() -> None:
    """open_for honours a Retry-After; force_open holds; force_close and reset close."""
    clock = FakeClock()
    seen: list[CircuitStateChange] = []
    breaker = CircuitBreaker(clock=clock, on_state_change=seen.append)
    breaker.open_for(7.5)
    with pytest.raises(CircuitOpen) as refusal:
        breaker.try_enter()
    assert refusal.value.retry_after == 7.5
    clock.advance(7.5)
    assert state(breaker) is CircuitState.HALF_OPEN
    breaker.force_open()
    clock.advance(10**6)
    assert state(breaker) is CircuitState.OPEN
    with pytest.raises(CircuitOpen) as refusal:
        breaker.try_enter()
    assert refusal.value.retry_after is None
    assert breaker.statistics().time_until_half_open is None
    breaker.force_close()
    assert state(breaker) is CircuitState.CLOSED
    breaker.try_enter().success()
    breaker.reset()
    stats = breaker.statistics()
    assert (stats.successes, stats.rejected, stats.opened_count) == (0, 0, 0)
    assert [change.reason for change in seen] == [
        "open_for",
        "recovery_time_elapsed",
        "force_open",
        "force_close",
    ]


def test_ticket_reports_once() -> None:
    """A ticket takes exactly one outcome; a second report is a RuntimeError."""
    breaker = CircuitBreaker(clock=FakeClock())
    ticket = breaker.try_enter()
    assert not ticket.is_probe
    ticket.record_result("fine")
    with pytest.raises(RuntimeError, match="already"):
        ticket.failure()
    breaker.try_enter().record_exception(Boom())
    breaker.try_enter().cancel()
    stats = breaker.statistics()
    assert (stats.successes, stats.failures, stats.ignored) == (1, 1, 1)


# -- the other rules, end to end ------------------------------------------------------------


async def test_slow_calls_open_the_circuit() -> None:
    """With slow_call_duration, a window of slow calls opens it even though they succeed."""
    breaker = CircuitBreaker(
        failure_threshold=None,
        slow_call_duration=2.0,
        slow_call_rate=0.5,
        minimum_calls=4,
        window=60.0,
        clock=anyio.current_time,
    )
    for duration in (0.1, 2.0, 0.1):
        async with breaker:
            await anyio.sleep(duration)
    assert state(breaker) is CircuitState.CLOSED
    await breaker.call(anyio.sleep, 3.0)
    stats = breaker.statistics()
    assert stats.state is CircuitState.OPEN
    assert stats.slow_calls == 2
    assert stats.slow_call_rate == 0.5


async def test_failure_rate_over_time_window() -> None:
    """failure_rate over the time window trips once minimum_calls calls are in it."""
    breaker = CircuitBreaker(
        failure_threshold=None,
        failure_rate=0.5,
        minimum_calls=4,
        window=10.0,
        clock=anyio.current_time,
    )
    await trip(breaker, 3)
    await anyio.sleep(11)  # those three leave the window
    await breaker.call(ok)
    await trip(breaker, 1)
    assert state(breaker) is CircuitState.CLOSED
    await trip(breaker, 2)
    assert breaker.statistics().failure_rate == 0.75
    assert state(breaker) is CircuitState.OPEN


async def test_decorator_keeps_the_signature() -> None:
    """The decorated function keeps its name, docstring and signature."""
    breaker = CircuitBreaker(clock=anyio.current_time)

    async def fetch(url: str, *, timeout: float = 1.0) -> str:
        """Fetch a URL."""
        return url

    guarded = breaker(fetch)
    assert guarded.__name__ == "fetch"
    assert guarded.__doc__ == "Fetch a URL."
    assert inspect.signature(guarded) == inspect.signature(fetch)
    assert await guarded("u", timeout=2.0) == "u"


@pytest.mark.parametrize(
    ("options", "error", "name"),
    [
        ({"failure_threshold": -1}, ValueError, "failure_threshold"),
        ({"half_open_max_calls": 0}, ValueError, "half_open_max_calls"),
        ({"failure_rate": 1.2}, ValueError, "failure_rate"),
        ({"recovery_time": -5}, ValueError, "recovery_time"),
        ({"exceptions": ValueError("x")}, TypeError, "exceptions"),
        ({"exclude": (int,)}, TypeError, "exclude"),
        ({"is_failure": True}, TypeError, "is_failure"),
        ({"failure_result": 3}, TypeError, "failure_result"),
        ({"clock": 0.0}, TypeError, "clock"),
        ({"on_state_change": [print, 5]}, TypeError, "on_state_change"),
    ],
)
def test_bad_configuration_raises_at_construction(
    options: dict[str, Any], error: type[Exception], name: str
) -> None:
    """Bad options fail when the breaker is built, naming the parameter."""
    with pytest.raises(error, match=name):
        CircuitBreaker(**options)


def test_public_names() -> None:
    """The breaker's public names are exported by brace."""
    for name in ("CircuitBreaker", "CircuitState", "CircuitStateChange", "CircuitTicket"):
        assert name in brace.__all__
    assert CircuitState("half_open") is CircuitState.HALF_OPEN
    assert str(CircuitState.OPEN) == "open"


async def test_nested_probes_in_one_task_keep_their_own_tickets() -> None:
    """The same breaker entered twice in one task while half-open: two probes, both counted."""
    breaker = CircuitBreaker(
        failure_threshold=1,
        recovery_time=1.0,
        half_open_max_calls=2,
        success_threshold=2,
        clock=anyio.current_time,
    )
    await trip(breaker, 1)
    await anyio.sleep(1)
    async with breaker:
        async with breaker:
            assert breaker.statistics().half_open_calls == 2
            with pytest.raises(CircuitOpen):
                async with breaker:
                    pass
        assert breaker.statistics().half_open_calls == 1
    assert state(breaker) is CircuitState.CLOSED
    assert breaker.statistics().half_open_calls == 0


async def test_a_subclass_keeps_its_class_and_behaviour() -> None:
    """A user's subclass goes through every state without losing its class."""

    class Named(CircuitBreaker):
        __slots__ = ()

    breaker = Named(failure_threshold=1, recovery_time=1.0, clock=anyio.current_time)
    async with breaker:
        pass
    await trip(breaker, 1)
    with pytest.raises(CircuitOpen):
        async with breaker:
            pass
    await anyio.sleep(1)
    async with breaker:
        pass
    assert type(breaker) is Named
    assert state(breaker) is CircuitState.CLOSED
    assert breaker.statistics().successes == 2


async def test_breaker_is_a_circuit_breaker_in_every_state() -> None:
    """Whatever its state, the breaker is an instance of CircuitBreaker with the same repr."""
    breaker = CircuitBreaker(failure_threshold=1, name="x", clock=anyio.current_time)
    assert isinstance(breaker, CircuitBreaker)
    assert repr(breaker) == "<CircuitBreaker name='x' state=closed>"
    await trip(breaker, 1)
    assert isinstance(breaker, CircuitBreaker)
    assert repr(breaker) == "<CircuitBreaker name='x' state=open>"


async def test_cancellation_is_not_a_failure_even_when_base_exceptions_are() -> None:
    """With exceptions=(BaseException,), a cancelled call is still no failure."""
    breaker = CircuitBreaker(
        failure_threshold=1, exceptions=(BaseException,), clock=anyio.current_time
    )
    with anyio.move_on_after(1):
        await breaker.call(anyio.sleep, 10)
    with anyio.move_on_after(1):
        async with breaker:
            await anyio.sleep(10)
    assert state(breaker) is CircuitState.CLOSED
    assert breaker.statistics().ignored == 2


async def test_nested_blocks_measure_their_own_durations() -> None:
    """With a slow-call rule, an outer block's duration is its own, not its inner block's."""
    breaker = CircuitBreaker(
        failure_threshold=None, slow_call_duration=2.0, clock=anyio.current_time
    )
    async with breaker:
        await anyio.sleep(3)
        async with breaker:
            pass
    assert breaker.statistics().slow_calls == 1
    async with breaker:
        pass
    assert breaker.statistics().slow_calls == 1


async def test_a_success_can_trip_the_rate_rule_at_the_right_time() -> None:
    """The call that brings the window to minimum_calls may be a success; it opens then."""
    breaker = CircuitBreaker(
        failure_threshold=None,
        failure_rate=0.5,
        minimum_calls=4,
        window_calls=10,
        recovery_time=30.0,
        clock=anyio.current_time,
    )
    await anyio.sleep(100)
    await trip(breaker, 2)
    await breaker.call(ok)
    assert state(breaker) is CircuitState.CLOSED
    async with breaker:
        pass
    stats = breaker.statistics()
    assert stats.state is CircuitState.OPEN
    assert stats.time_until_half_open == 30.0


# -- ignore= and max_half_open_wait= (issue 17) ------------------------------------------


class Throttled(Boom):
    """A refusal by the service's own limiter: says nothing about its health."""


async def throttled() -> None:
    raise Throttled


async def test_ignored_exceptions_count_as_neither_failure_nor_success() -> None:
    """An ignored exception neither resets the failures in a row (as exclude would) nor adds one."""
    ignoring = CircuitBreaker(failure_threshold=2, ignore=Throttled, clock=anyio.current_time)
    excluding = CircuitBreaker(failure_threshold=2, exclude=Throttled, clock=anyio.current_time)
    for breaker in (ignoring, excluding):
        await trip(breaker, 1)
        with pytest.raises(Throttled):  # propagates unchanged
            await breaker.call(throttled)
        with pytest.raises(Throttled):
            async with breaker:
                raise Throttled
        await trip(breaker, 1)
    assert state(ignoring) is CircuitState.OPEN
    assert state(excluding) is CircuitState.CLOSED
    stats = ignoring.statistics()
    assert (stats.failures, stats.successes, stats.ignored) == (2, 0, 2)


async def test_ignore_wins_over_exceptions_and_is_failure() -> None:
    """A type in ignore is ignored even when exceptions lists it and is_failure says failure."""
    breaker = CircuitBreaker(
        failure_threshold=1,
        exceptions=Boom,
        ignore=(Throttled,),
        is_failure=lambda error: True,
        clock=anyio.current_time,
    )
    with pytest.raises(Throttled):
        await breaker.call(throttled)
    assert state(breaker) is CircuitState.CLOSED
    assert breaker.statistics().ignored == 1


async def test_an_ignored_probe_frees_its_permit_without_closing_or_opening() -> None:
    """In half-open, a probe ending with an ignored exception gives its permit back only."""
    seen: list[CircuitStateChange] = []
    breaker = CircuitBreaker(
        failure_threshold=1,
        recovery_time=5.0,
        success_threshold=2,
        ignore=Throttled,
        on_state_change=seen.append,
        clock=anyio.current_time,
    )
    await trip(breaker, 1)
    await anyio.sleep(5)
    await breaker.call(ok)  # one good probe of two
    with pytest.raises(Throttled):
        async with breaker:
            raise Throttled
    assert state(breaker) is CircuitState.HALF_OPEN
    assert breaker.statistics().half_open_calls == 0
    assert [change.new for change in seen] == [CircuitState.OPEN, CircuitState.HALF_OPEN]
    await breaker.call(ok)  # the permit is free: the second good probe closes it
    assert state(breaker) is CircuitState.CLOSED


async def test_a_probe_that_hangs_past_max_half_open_wait_reopens_the_circuit() -> None:
    """Half-open longer than max_half_open_wait opens the circuit; the late probe is stale."""
    seen: list[CircuitStateChange] = []
    breaker = CircuitBreaker(
        failure_threshold=1,
        recovery_time=5.0,
        max_half_open_wait=10.0,
        on_state_change=seen.append,
        clock=anyio.current_time,
    )
    await trip(breaker, 1)
    await anyio.sleep(5)
    start = anyio.current_time()

    async def hang() -> str:
        await anyio.sleep(60)
        return "late"

    async with anyio.create_task_group() as group:
        group.start_soon(breaker.call, hang)
        await anyio.sleep(9.5)
        with pytest.raises(CircuitOpen) as taken:
            await breaker.call(ok)
        assert taken.value.state is CircuitState.HALF_OPEN
        await anyio.sleep(0.5)
        with pytest.raises(CircuitOpen) as refusal:
            await breaker.call(ok)
        assert refusal.value.state is CircuitState.OPEN
        assert refusal.value.retry_after == pytest.approx(5.0)
    assert anyio.current_time() == pytest.approx(start + 60)
    assert seen[-1].reason is CircuitEvent.MAX_HALF_OPEN_WAIT
    assert seen[-1].at == pytest.approx(start + 10)
    assert state(breaker) is CircuitState.HALF_OPEN  # a new period: the late success was stale
    assert breaker.statistics().trips_in_a_row == 2


async def test_half_open_is_unbounded_by_default() -> None:
    """Without max_half_open_wait a probe may take as long as it takes, then closes the circuit."""
    breaker = CircuitBreaker(failure_threshold=1, recovery_time=5.0, clock=anyio.current_time)
    await trip(breaker, 1)
    await anyio.sleep(5)

    async def slow() -> str:
        await anyio.sleep(10**6)
        return "done"

    assert await breaker.call(slow) == "done"
    assert state(breaker) is CircuitState.CLOSED


@pytest.mark.parametrize(
    ("options", "error"),
    [
        ({"max_half_open_wait": 0}, ValueError),
        ({"max_half_open_wait": -1.0}, ValueError),
        ({"max_half_open_wait": float("nan")}, ValueError),
        ({"max_half_open_wait": "5"}, TypeError),
        ({"ignore": "Throttled"}, TypeError),
        ({"ignore": (Throttled, 3)}, TypeError),
    ],
)
def test_new_options_are_checked_at_construction(
    options: dict[str, Any], error: type[Exception]
) -> None:
    """ignore and max_half_open_wait fail at construction, naming themselves."""
    with pytest.raises(error, match=next(iter(options))):
        CircuitBreaker(**options)


async def test_a_probe_that_outlives_its_half_open_state_keeps_its_own_ticket() -> None:
    """The closed fast exit looks at no ticket while no task holds one; a probe admitted
    half-open, still running when the breaker is closed by hand, holds one, and its exit
    through the closed class takes it back: a failure in that task afterwards is the
    closed breaker's own failure (its threshold opens it), not an outcome reported against
    the stale probe ticket."""
    clock = FakeClock()
    changes: list[CircuitStateChange] = []
    breaker = CircuitBreaker(
        failure_threshold=1, recovery_time=1.0, clock=clock, on_state_change=changes.append
    )
    await trip(breaker, 1)
    clock.advance(1.0)
    assert state(breaker) is CircuitState.HALF_OPEN
    probe_inside = anyio.Event()
    probe_may_leave = anyio.Event()
    after_probe: list[CircuitState] = []

    async def probe() -> None:
        # entered and left by hand, as an adapter may (``async with`` would bind the exit
        # of the class at entry, the general one, and never reach the closed fast exit)
        await breaker.__aenter__()
        probe_inside.set()
        await probe_may_leave.wait()
        await breaker.__aexit__(None, None, None)  # now in the closed class
        assert state(breaker) is CircuitState.CLOSED
        with pytest.raises(Boom):
            async with breaker:  # the same task, closed: its failure counts (threshold 1)
                raise Boom
        after_probe.append(state(breaker))
        assert changes[-1].reason is CircuitEvent.FAILURE_THRESHOLD

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(probe)
        await probe_inside.wait()
        breaker.force_close()
        assert state(breaker) is CircuitState.CLOSED
        before = breaker.statistics().successes
        async with breaker:  # another task's call, while the probe holds its ticket
            pass
        assert breaker.statistics().successes == before + 1
        probe_may_leave.set()
    assert after_probe == [CircuitState.OPEN]
