"""GracefulShutdown: on SIGTERM, stop being ready, wait a little, drain, and return.

Two ways to hear the signal. A plain anyio program lets brace own the signals
(``anyio.open_signal_receiver``). A server that owns them already (uvicorn, hypercorn)
must keep them, or it never exits: with ``chain=True`` brace installs a handler with
``signal.signal`` that remembers the previous one and calls it, so the server still shuts
down, while brace drains its executors beside it.
"""

from __future__ import annotations

import logging
import signal
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol, TypeVar

import anyio
import anyio.abc

from ._clock import check_clock
from ._core._validate import check_finite, check_positive
from ._events import EventHook, ShutdownStarted, event_hook

__all__ = ("Drainable", "GracefulShutdown", "ShutdownReport", "ShutdownStatistics")

logger = logging.getLogger("brace.shutdown")

D = TypeVar("D", bound="Drainable")

_DEFAULT_SIGNALS = ("SIGTERM", "SIGINT", "SIGUSR2")  # those the platform has

_SignalHandler = Callable[[int, FrameType | None], Any] | int | signal.Handlers | None


class Drainable(Protocol):
    """Anything with ``async def drain(timeout)``, such as :class:`brace.PriorityExecutor`."""

    async def drain(self, timeout: float) -> object: ...


@dataclass(frozen=True, slots=True)
class ShutdownReport:
    """What a shutdown did: the ``signal`` that started it (``None``: started by
    :meth:`GracefulShutdown.trigger`), each drain's result in registration order
    (``drained``; an exception a drain raised takes its place), whether the ``timeout``
    passed or a second signal cut the drain short (``timed_out``), and the ``duration``
    in seconds from the signal to the end of the drain."""

    signal: int | None
    drained: tuple[object, ...]
    timed_out: bool
    duration: float


@dataclass(frozen=True, slots=True)
class ShutdownStatistics:
    """A snapshot of a :class:`GracefulShutdown`: whether it is ``ready``, the ``signal``
    that started the shutdown (``None``: none yet, or started by code), how many
    ``registered`` drainables it will drain, and whether the drain is ``finished``."""

    ready: bool
    signal: int | None
    registered: int
    finished: bool


class GracefulShutdown:
    """Turns SIGTERM / SIGINT / SIGUSR2 into an orderly drain.

    On the first signal: :attr:`ready` turns False (point a readiness probe at it), the
    shutdown waits ``delay`` seconds (so a load balancer stops sending traffic), then
    drains every registered executor at once, each with what is left of ``timeout``
    seconds; an executor cancels the work still running at its timeout. A second signal
    cuts the drain short. :meth:`wait` returns a :class:`ShutdownReport`.

    ``signals``: numbers or names (``"SIGTERM"``); of the default three, those the
    platform lacks are left out.

    ``chain=False`` (plain anyio programs): brace receives the signals itself.
    ``chain=True`` (under uvicorn, hypercorn...): brace installs its handlers *on top of*
    the server's and calls the server's handler after the ``delay``, so the server shuts
    down as it always does while brace drains. A signal the server has no handler for
    (uvicorn installs none for SIGUSR2) is passed to the server's SIGTERM handler, so it
    stops the server the same way.

    ``serve_while_draining=True`` (with ``chain=True``): the server's handler is called
    only once the drain has ended (or a second signal arrived), so the server keeps its
    listening socket while in-flight work finishes: new requests are answered (503 with
    ``Retry-After`` and ``Connection: close`` by brace's middleware, ``/health`` 503)
    instead of finding the port closed. Then the server stops as usual, with nothing left
    to wait for.
    """

    __slots__ = (
        "__weakref__",
        "_clock",
        "_done",
        "_drain_scope",
        "_drainables",
        "_on_event",
        "_previous",
        "_report",
        "_server_told",
        "_signal",
        "_soon",
        "_started",
        "_trigger",
        "chain",
        "delay",
        "serve_while_draining",
        "signals",
        "timeout",
    )

    def __init__(
        self,
        timeout: float = 30.0,
        signals: Iterable[int | str] = ("SIGTERM", "SIGINT", "SIGUSR2"),
        *,
        delay: float = 0.0,
        chain: bool = False,
        serve_while_draining: bool = False,
        clock: Callable[[], float] | None = None,
        on_event: EventHook | Iterable[EventHook] | None = None,
    ) -> None:
        self.timeout = check_positive(timeout, "timeout")
        self._on_event = event_hook(on_event)
        delay = check_finite(delay, "delay", "of seconds >= 0")
        if delay < 0:
            raise ValueError(f"delay must be a finite number of seconds >= 0, got {delay!r}")
        self.delay = delay
        self.signals = _resolve(signals)
        if not self.signals:
            raise ValueError("signals must name at least one signal")
        if not isinstance(chain, bool):
            raise TypeError(f"chain must be a bool, got {type(chain).__name__}")
        self.chain = chain
        if not isinstance(serve_while_draining, bool):
            raise TypeError(
                f"serve_while_draining must be a bool, got {type(serve_while_draining).__name__}"
            )
        if serve_while_draining and not chain:
            raise ValueError("serve_while_draining=True needs chain=True (a server's handlers)")
        self.serve_while_draining = serve_while_draining
        self._server_told = False
        clock = check_clock(clock)
        self._clock: Callable[[], float] = time.monotonic if clock is None else clock
        self._drainables: list[Drainable] = []
        self._previous: dict[signal.Signals, _SignalHandler] = {}
        self._signal: int | None = None
        self._started: float | None = None
        self._trigger: anyio.Event | None = None
        self._done: anyio.Event | None = None
        self._drain_scope: anyio.CancelScope | None = None
        self._report: ShutdownReport | None = None
        self._soon: Callable[[Callable[[], object]], object] | None = None

    # -- state ---------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True until a shutdown starts: the answer for a readiness probe."""
        return self._started is None

    @property
    def shutting_down(self) -> bool:
        """True from the first signal (or :meth:`trigger`) on."""
        return self._started is not None

    @property
    def report(self) -> ShutdownReport | None:
        """The report of the finished shutdown, ``None`` before it ends."""
        return self._report

    def statistics(self) -> ShutdownStatistics:
        """Readiness, the signal, the number of drainables, whether the drain ended."""
        return ShutdownStatistics(
            ready=self._started is None,
            signal=self._signal,
            registered=len(self._drainables),
            finished=self._report is not None,
        )

    def register(self, drainable: D) -> D:
        """Drain ``drainable`` on shutdown (anything with ``async def drain(timeout)``);
        returns it, so ``executor = shutdown.register(PriorityExecutor())`` reads well."""
        drain = getattr(drainable, "drain", None)
        if not callable(drain):
            raise TypeError(
                f"drainable must have an async drain(timeout) method, got {drainable!r}"
            )
        self._drainables.append(drainable)
        return drainable

    def unregister(self, drainable: Drainable) -> None:
        """Stop draining ``drainable`` on shutdown (a ``ValueError`` if it was not registered)."""
        self._drainables.remove(drainable)

    # -- starting ------------------------------------------------------------------------

    def trigger(self, signum: int | None = None) -> None:
        """Start the shutdown from code (a test, an admin endpoint), as a signal would.

        Call it from the event loop's thread; :meth:`wait` must be running (or start later)
        to carry the shutdown out.
        """
        if self._started is None:
            self._started = self._clock()
            self._signal = signum
        else:
            self._cut_short()  # a second request cuts the drain short
        self._wake()

    def _wake(self) -> None:
        if self._trigger is None:
            self._trigger = anyio.Event()
        self._trigger.set()

    def _cut_short(self) -> None:
        if self._drain_scope is not None:
            self._drain_scope.cancel()

    async def wait(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> ShutdownReport:
        """Wait for a signal (or :meth:`trigger`), then carry out the shutdown and report.

        With ``await task_group.start(shutdown.wait)`` the start returns once the signal
        handlers are in place. A second call, or a call after the shutdown ended, returns
        the same report.
        """
        if self._done is not None:
            task_status.started()
            await self._done.wait()
            if self._report is None:
                raise RuntimeError("the wait() carrying out the shutdown was cancelled")
            return self._report
        done = self._done = anyio.Event()
        if self._trigger is None:
            self._trigger = anyio.Event()
        report: ShutdownReport | None = None
        try:
            async with anyio.create_task_group() as tg:
                if self.chain:
                    self._install()
                else:
                    await tg.start(self._receive)
                task_status.started()
                await self._trigger.wait()
                report = self._report = await self._shutdown()
                tg.cancel_scope.cancel()
        except BaseException:
            self._done = None  # cancelled before the end: a later wait() starts over
            raise
        finally:
            self._uninstall()
            done.set()
        # the task group swallows only the cancellation of its scope, made after the report
        assert report is not None
        return report

    async def wait_drained(self) -> ShutdownReport | None:
        """Wait for a shutdown already under way to finish; ``None`` if none started
        (for an ASGI lifespan's shutdown step, which runs after the server stopped)."""
        if self._done is None or self._started is None:
            return self._report
        await self._done.wait()
        return self._report

    # -- the sequence --------------------------------------------------------------------

    async def _shutdown(self) -> ShutdownReport:
        started = self._started if self._started is not None else self._clock()
        logger.info("shutting down (signal %s): not ready", self._signal)
        if self._on_event is not None:
            self._on_event(ShutdownStarted(None, started, self._signal))
        if self.delay:
            await anyio.sleep(self.delay)
        if self.chain and self.delay and not self.serve_while_draining:
            self._tell_server()
        # Within [0, timeout]: a clock that stepped back must not lengthen the drain.
        remaining = min(max(self.timeout - (self._clock() - started), 0.0), self.timeout)
        results: list[object] = [None] * len(self._drainables)
        timed_out = False
        with anyio.CancelScope() as scope:
            self._drain_scope = scope
            if remaining > 0:
                async with anyio.create_task_group() as tg:
                    for index, drainable in enumerate(self._drainables):
                        tg.start_soon(self._drain_one, drainable, remaining, results, index)
        self._drain_scope = None
        if self.serve_while_draining:
            self._tell_server()  # the drain is over: now the server may stop listening
        timed_out = scope.cancelled_caught or remaining <= 0
        for result in results:
            timed_out = timed_out or bool(getattr(result, "timed_out", False))
        return ShutdownReport(
            signal=self._signal,
            drained=tuple(results),
            timed_out=timed_out,
            duration=max(0.0, self._clock() - started),
        )

    @staticmethod
    async def _drain_one(
        drainable: Drainable, timeout: float, results: list[object], index: int
    ) -> None:
        # a drain that ignores its timeout gets one more second, then it is cancelled
        with anyio.move_on_after(timeout + 1.0):
            try:
                results[index] = await drainable.drain(timeout)
            except Exception as error:
                logger.exception("draining %r failed", drainable)
                results[index] = error

    # -- owning the signals (plain anyio programs) ---------------------------------------

    async def _receive(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        with anyio.open_signal_receiver(*self.signals) as received:
            task_status.started()
            async for signum in received:
                self.trigger(int(signum))

    # -- chaining onto a server's handlers ----------------------------------------------

    def _install(self) -> None:
        self._soon = _soon_callback()
        for signum in self.signals:
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _uninstall(self) -> None:
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._handle and previous is not None:
                signal.signal(signum, previous)
        self._previous.clear()
        self._soon = None

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Runs between two bytecodes of the loop's thread: record, then let the loop act.
        first = self._started is None
        if first:
            self._started = self._clock()
            self._signal = signum
        soon = self._soon
        if soon is not None:
            soon(self._wake if first else self._cut_short)
        if not first or not (self.delay or self.serve_while_draining):
            # (with a delay, or serving while draining, the sequence calls it later)
            self._server_told = True
            self._call_previous(signum, frame)

    def _tell_server(self) -> None:
        """Call the server's handler for the first signal, unless a signal did already."""
        if not self._server_told:
            self._server_told = True
            self._call_previous()

    def _call_previous(self, signum: int | None = None, frame: FrameType | None = None) -> None:
        signum = self._signal if signum is None else signum
        if signum is None:
            return
        previous = self._previous.get(signal.Signals(signum))
        if callable(previous):
            previous(signum, frame)
            return
        if previous == signal.SIG_DFL and signum == signal.SIGINT:
            raise KeyboardInterrupt
        stand_in = self._server_stop()
        if stand_in is not None:
            # The server has no handler of its own for this signal (uvicorn installs none
            # for SIGUSR2): stop it the way SIGTERM does, so the process still exits.
            stand_in(signum, frame)
        elif previous == signal.SIG_DFL:
            logger.info("signal %s had the default handler: not re-raised while draining", signum)

    def _server_stop(self) -> Callable[[int, FrameType | None], Any] | None:
        """The server's own SIGTERM handler, if it installed one (else ``None``)."""
        term = getattr(signal, "SIGTERM", None)
        if term is None:
            return None
        handler = self._previous[term] if term in self._previous else signal.getsignal(term)
        if callable(handler) and handler != self._handle:
            return handler
        return None


def _resolve(signals: Iterable[int | str]) -> tuple[signal.Signals, ...]:
    """Signal numbers or names (``"SIGTERM"``) as ``signal.Signals``; of the default
    names, those this platform lacks (``SIGUSR2`` on Windows) are left out."""
    if isinstance(signals, str):
        signals = (signals,)
    given = tuple(signals)
    default = given == _DEFAULT_SIGNALS
    resolved: list[signal.Signals] = []
    for item in given:
        if isinstance(item, str):
            number = getattr(signal, item, None) if item.startswith("SIG") else None
            if not isinstance(number, int):
                if default:
                    continue
                raise ValueError(f"signals: no signal named {item!r} on this platform")
            resolved.append(signal.Signals(number))
        else:
            resolved.append(signal.Signals(item))
    return tuple(resolved)


def _soon_callback() -> Callable[[Callable[[], object]], object]:
    """A way to run a callback in the event loop from a signal handler."""
    # (no sniffio: recent anyio releases no longer bring it)
    import asyncio

    try:
        return asyncio.get_running_loop().call_soon_threadsafe
    except RuntimeError:  # no asyncio loop running here: this is trio
        import trio

        return trio.lowlevel.current_trio_token().run_sync_soon
