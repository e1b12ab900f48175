"""Rate limits shared through Redis: `RedisStore` and its errors.

See docs/redis.md. ``RedisStore.from_url`` builds redis-py's client on asyncio (uvloop
too) and coredis's on trio; any ``redis.asyncio.Redis``, ``coredis.Redis`` or their
cluster clients can be given instead. The store's pieces live in this package: the store
(``_store``), its Lua scripts (``_scripts``), the client glue (``_clients``), the
errors (``_errors``) and the fleet-wide concurrency limit (``_semaphore``).
"""

from __future__ import annotations

from ._blockcache import BlockCache as BlockCache
from ._blockcache import BlockCacheStatistics as BlockCacheStatistics
from ._clients import ScriptClient as ScriptClient
from ._errors import RedisAuthenticationError as RedisAuthenticationError
from ._errors import RedisBackendError as RedisBackendError
from ._errors import RedisConnectionError as RedisConnectionError
from ._errors import RedisError as RedisError
from ._errors import ResponseError as ResponseError
from ._fleet_breaker import FleetBreaker as FleetBreaker
from ._fleet_breaker import FleetBreakerStatistics as FleetBreakerStatistics
from ._lease import LeasedStore as LeasedStore
from ._lease import LeasedStoreStatistics as LeasedStoreStatistics
from ._semaphore import DistributedLimit as DistributedLimit
from ._semaphore import DistributedLimitStatistics as DistributedLimitStatistics
from ._semaphore import Permit as Permit
from ._store import OnError as OnError  # the type of on_error= (a Literal)
from ._store import RedisStore as RedisStore
from ._store import RedisStoreStatistics as RedisStoreStatistics

__all__ = (
    "BlockCache",
    "BlockCacheStatistics",
    "DistributedLimit",
    "DistributedLimitStatistics",
    "FleetBreaker",
    "FleetBreakerStatistics",
    "LeasedStore",
    "LeasedStoreStatistics",
    "Permit",
    "RedisAuthenticationError",
    "RedisBackendError",
    "RedisConnectionError",
    "RedisError",
    "RedisStore",
    "RedisStoreStatistics",
    "ResponseError",
    "ScriptClient",
)
