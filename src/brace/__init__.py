"""brace: resilience primitives for async services, on anyio (asyncio and trio)."""

from __future__ import annotations

from ._decision import Decision as Decision
from ._exceptions import BraceError as BraceError
from ._exceptions import CircuitOpen as CircuitOpen
from ._exceptions import MemoryPressure as MemoryPressure
from ._exceptions import QueueFull as QueueFull
from ._exceptions import QueueTimeout as QueueTimeout
from ._exceptions import RateLimited as RateLimited
from ._exceptions import Rejected as Rejected
from ._exceptions import ShuttingDown as ShuttingDown
from ._exceptions import TimeoutExceeded as TimeoutExceeded

# --- rate limiters (issue 2) ---
# --- end rate limiters ---

# --- breaker (issue 3) ---
# --- end breaker ---

# --- retry, timeout, compose (issue 3) ---
# --- end retry ---

# --- executor (issue 4) ---
# --- end executor ---

__version__ = "0.1.0"

__all__ = (
    "BraceError",
    "CircuitOpen",
    "Decision",
    "MemoryPressure",
    "QueueFull",
    "QueueTimeout",
    "RateLimited",
    "Rejected",
    "ShuttingDown",
    "TimeoutExceeded",
    # rate limiters (issue 2)
    # breaker (issue 3)
    # retry, timeout, compose (issue 3)
    # executor (issue 4)
)
