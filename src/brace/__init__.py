"""brace: resilience primitives for async services, on anyio (asyncio and trio)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError as _PackageNotFoundError
from importlib.metadata import version as _distribution_version

from . import chaos as chaos
from . import events as events
from ._adaptive import AdaptiveLimit as AdaptiveLimit
from ._adaptive import AdaptiveLimitStatistics as AdaptiveLimitStatistics
from ._adaptive import LimitChanged as LimitChanged
from ._adaptive import LimitHook as LimitHook
from ._breaker import CircuitBreaker as CircuitBreaker
from ._breaker import CircuitTicket as CircuitTicket
from ._breaker import StateChangeHook as StateChangeHook
from ._bucket import TokenBucket as TokenBucket
from ._bucket import TokenBucketStatistics as TokenBucketStatistics
from ._compose import Policy as Policy
from ._compose import compose as compose
from ._core.breaker import CircuitBreakerStatistics as CircuitBreakerStatistics
from ._core.breaker import CircuitEvent as CircuitEvent
from ._core.breaker import CircuitState as CircuitState
from ._core.breaker import CircuitStateChange as CircuitStateChange
from ._core.decision import Decision as Decision
from ._core.memory import MemoryLevel as MemoryLevel
from ._exceptions import BraceError as BraceError
from ._exceptions import CircuitOpen as CircuitOpen
from ._exceptions import Dropped as Dropped
from ._exceptions import MemoryPressure as MemoryPressure
from ._exceptions import Overloaded as Overloaded
from ._exceptions import QueueFull as QueueFull
from ._exceptions import QueueTimeout as QueueTimeout
from ._exceptions import RateLimited as RateLimited
from ._exceptions import Rejected as Rejected
from ._exceptions import ShuttingDown as ShuttingDown
from ._exceptions import TimeoutExceeded as TimeoutExceeded
from ._executor import DrainReport as DrainReport
from ._executor import ExecutorStatistics as ExecutorStatistics
from ._executor import PriorityExecutor as PriorityExecutor
from ._fallback import Fallback as Fallback
from ._fallback import FallbackDetails as FallbackDetails
from ._fallback import FallbackHook as FallbackHook
from ._fallback import FallbackStatistics as FallbackStatistics
from ._health import CheckResult as CheckResult
from ._health import Health as Health
from ._health import HealthReport as HealthReport
from ._health import HealthStatus as HealthStatus
from ._hedge import Hedge as Hedge
from ._hedge import HedgeDetails as HedgeDetails
from ._hedge import HedgeHook as HedgeHook
from ._hedge import HedgeStatistics as HedgeStatistics
from ._hedge import LatencyQuantile as LatencyQuantile
from ._limiter import RateLimiter as RateLimiter
from ._limiter import RateLimiterStatistics as RateLimiterStatistics
from ._load import LoadMonitor as LoadMonitor
from ._load import LoadMonitorStatistics as LoadMonitorStatistics
from ._memory import MemoryAdmission as MemoryAdmission
from ._memory import MemoryGuard as MemoryGuard
from ._memory import MemoryGuardStatistics as MemoryGuardStatistics
from ._memory import MemoryHook as MemoryHook
from ._memory import MemoryLevelChange as MemoryLevelChange
from ._priority import Priority as Priority
from ._probes import CgroupMemoryProbe as CgroupMemoryProbe
from ._probes import MemoryProbe as MemoryProbe
from ._probes import MemorySample as MemorySample
from ._probes import ProcessMemoryProbe as ProcessMemoryProbe
from ._rate import Rate as Rate
from ._rate import parse_rate as parse_rate
from ._registry import Registry as Registry
from ._retry import Attempt as Attempt
from ._retry import Backoff as Backoff
from ._retry import Retry as Retry
from ._retry import RetryBudget as RetryBudget
from ._retry import RetryBudgetStatistics as RetryBudgetStatistics
from ._retry import RetryDetails as RetryDetails
from ._retry import RetryHook as RetryHook
from ._retry import RetryStatistics as RetryStatistics
from ._shutdown import Drainable as Drainable
from ._shutdown import GracefulShutdown as GracefulShutdown
from ._shutdown import ShutdownReport as ShutdownReport
from ._shutdown import ShutdownStatistics as ShutdownStatistics
from ._store import MemoryStore as MemoryStore
from ._store import MemoryStoreStatistics as MemoryStoreStatistics
from ._store import RateLimitStore as RateLimitStore
from ._timeout import Timeout as Timeout
from ._timeout import TimeoutStatistics as TimeoutStatistics
from ._window import SlidingWindow as SlidingWindow
from ._window import SlidingWindowStatistics as SlidingWindowStatistics

try:
    __version__: str = _distribution_version("brace")
except _PackageNotFoundError:  # pragma: no cover - run from a source tree never installed
    __version__ = "0+unknown"

__all__ = (
    "AdaptiveLimit",
    "AdaptiveLimitStatistics",
    "Attempt",
    "Backoff",
    "BraceError",
    "CgroupMemoryProbe",
    "CheckResult",
    "CircuitBreaker",
    "CircuitBreakerStatistics",
    "CircuitEvent",
    "CircuitOpen",
    "CircuitState",
    "CircuitStateChange",
    "CircuitTicket",
    "compose",
    "Decision",
    "Drainable",
    "DrainReport",
    "Dropped",
    "ExecutorStatistics",
    "Fallback",
    "FallbackDetails",
    "FallbackHook",
    "FallbackStatistics",
    "GracefulShutdown",
    "Health",
    "HealthReport",
    "HealthStatus",
    "Hedge",
    "HedgeDetails",
    "HedgeHook",
    "HedgeStatistics",
    "LatencyQuantile",
    "LimitChanged",
    "LimitHook",
    "LoadMonitor",
    "LoadMonitorStatistics",
    "MemoryAdmission",
    "MemoryGuard",
    "MemoryGuardStatistics",
    "MemoryHook",
    "MemoryLevel",
    "MemoryLevelChange",
    "MemoryPressure",
    "MemoryProbe",
    "MemorySample",
    "MemoryStore",
    "MemoryStoreStatistics",
    "Overloaded",
    "parse_rate",
    "Policy",
    "Priority",
    "PriorityExecutor",
    "ProcessMemoryProbe",
    "QueueFull",
    "QueueTimeout",
    "Rate",
    "RateLimited",
    "RateLimiter",
    "RateLimiterStatistics",
    "RateLimitStore",
    "Registry",
    "Rejected",
    "Retry",
    "RetryBudget",
    "RetryBudgetStatistics",
    "RetryDetails",
    "RetryHook",
    "RetryStatistics",
    "ShutdownReport",
    "ShutdownStatistics",
    "ShuttingDown",
    "SlidingWindow",
    "SlidingWindowStatistics",
    "StateChangeHook",
    "Timeout",
    "TimeoutExceeded",
    "TimeoutStatistics",
    "TokenBucket",
    "TokenBucketStatistics",
)
