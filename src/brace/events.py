"""Events: the typed, frozen objects every primitive hands its ``on_event`` hooks.

Every primitive takes ``on_event=`` (a callable, or an iterable of callables) and calls it
synchronously with instances of the classes below, all deriving from :class:`Event`
(``kind``, ``name``, ``time``). What a hook raises is logged on the primitive's logger
and swallowed. See ``docs/events.md`` for which primitive emits what, when, and on
which ``brace.<primitive>`` logger at which level.
"""

from __future__ import annotations

from ._adaptive import LimitChanged as LimitChanged
from ._core.breaker import CircuitStateChange as CircuitStateChange
from ._events import REASONS as REASONS
from ._events import Event as Event
from ._events import EventHook as EventHook
from ._events import FaultInjected as FaultInjected
from ._events import Reason as Reason
from ._events import Refused as Refused
from ._events import ShutdownStarted as ShutdownStarted
from ._events import SlowRequest as SlowRequest
from ._fallback import FallbackDetails as FallbackDetails
from ._hedge import HedgeDetails as HedgeDetails
from ._memory import MemoryLevelChange as MemoryLevelChange
from ._retry import RetryDetails as RetryDetails

__all__ = (
    "CircuitStateChange",
    "Event",
    "EventHook",
    "FallbackDetails",
    "FaultInjected",
    "HedgeDetails",
    "LimitChanged",
    "MemoryLevelChange",
    "REASONS",
    "Reason",
    "Refused",
    "RetryDetails",
    "ShutdownStarted",
    "SlowRequest",
)
