"""Route rules of the ASGI middleware: which limits, priority, timeout and breaker apply.

A `Rule` matches a path (a prefix that ends at a segment boundary, or a compiled regular
expression) and optionally a set of methods. Rules are tried in order; the first match
wins, and the default rule takes the rest. Matching is cached per ``(method, path)`` in a
small bounded table, so the hot path is one dict lookup.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, Literal, Protocol

from ._breaker import CircuitBreaker
from ._bucket import TokenBucket
from ._core._validate import check_positive
from ._core.decision import Decision
from ._core.gcra import GCRA
from ._core.window import SlidingLog, SlidingWindowCounter
from ._headers import PolicyField, check_policy_name, sf_string
from ._limiter import RateLimiter, local_hit
from ._priority import Priority
from ._rate import Rate, parse_rate
from ._store import FieldsHit, HitFields, Policy, RateLimitStore
from ._window import SlidingWindow

__all__ = ("KeyFunction", "Limit", "Rule", "default_priority")

#: ``(scope) -> key or None`` (sync or async): a custom key for a `Limit` (``None``: the
#: limit is skipped)
KeyFunction = Callable[[Any], Any]
Per = Literal["client", "ip", "user"] | KeyFunction

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_HEALTH_PREFIXES = ("/health", "/api/health", "/healthz", "/readyz", "/livez")
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")
# RFC 9110 token characters: what a method name is made of
_TOKEN = frozenset("!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


def default_priority(method: str, path: str) -> int:
    """The SEED's priorities when a rule sets none: health checks HIGH, reads
    (GET / HEAD / OPTIONS) MEDIUM, other writes LOW."""
    for prefix in _HEALTH_PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return Priority.HIGH
    return Priority.MEDIUM if method in _SAFE_METHODS else Priority.LOW


def _check_methods(methods: Iterable[str] | None) -> frozenset[str] | None:
    if methods is None:
        return None
    if isinstance(methods, (str, bytes)) or not isinstance(methods, Iterable):
        raise TypeError("methods must be a list of method names, e.g. methods=['POST']")
    checked = set()
    for method in methods:
        if not isinstance(method, str) or not method or not set(method) <= _TOKEN:
            raise ValueError(
                f"methods must hold HTTP method names such as 'GET' or 'POST', got {method!r}"
            )
        checked.add(method.upper())
    if not checked:
        raise ValueError("methods must name at least one method, or be None for all")
    return frozenset(checked)


def _quota_window(policy: Policy) -> tuple[int, float]:
    # a window: its limit per window; a bucket (GCRA): its burst, refilled in burst * interval
    if isinstance(policy, GCRA):
        return policy.burst, policy.burst * policy.interval
    return policy.limit, float(policy.window)


@dataclass(frozen=True)
class Limit:
    """One rate limit of a rule: ``rate`` (``"10/minute"``, a `brace.Rate`, a
    `brace.TokenBucket` or `brace.SlidingWindow`) counted per ``per``:

    - ``"client"`` (default): the user when one is identified, else the client address;
    - ``"user"``: the user only (skipped for anonymous requests);
    - ``"ip"``: the client address, even for identified users;
    - a callable ``(scope) -> str | None``: a key of your own (``None`` skips the limit;
      see `brace.asgi.header_key` and its siblings for the usual ones).

    ``name`` names the policy in the ``RateLimit`` fields and the 429 body (default: the
    rule's name, with ``-ip`` / ``-user`` appended for those kinds): 1 to 64 printable
    ASCII characters. Every argument is checked here, so a bad limit fails where it is
    written, not on the first request.
    """

    rate: Any
    per: Per = "client"
    _: KW_ONLY
    name: str | None = None
    _policy: Policy = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        rate = self.rate
        if isinstance(rate, str):
            rate = parse_rate(rate)
        if isinstance(rate, Rate):
            policy: Policy = SlidingWindowCounter(rate.limit, rate.period)
        elif isinstance(rate, (GCRA, SlidingWindowCounter, SlidingLog)):
            policy = rate
        elif isinstance(rate, (TokenBucket, SlidingWindow)):
            policy = rate.policy
        else:
            raise TypeError(
                "rate must be a rate string such as '10/minute', a brace.Rate, a "
                f"brace.TokenBucket or a brace.SlidingWindow, got {self.rate!r}"
            )
        object.__setattr__(self, "_policy", policy)
        per = self.per
        if not callable(per) and per not in ("client", "ip", "user"):
            raise ValueError(
                f"per must be 'client', 'ip', 'user' or a callable (scope) -> str | None, "
                f"got {per!r}"
            )
        if self.name is not None:
            check_policy_name(self.name, "name")

    @property
    def quota(self) -> int:
        """The most one window (or a full bucket) admits: a rule's cost may not exceed it."""
        return _quota_window(self._policy)[0]


LimitLike = Limit | str | Rate | TokenBucket | SlidingWindow


class SlotLimit(Protocol):
    """What `Rule` takes as ``concurrency``: an executor's ``slot(priority)``."""

    def slot(self, priority: int) -> AbstractAsyncContextManager[object]: ...


@dataclass(frozen=True)
class Rule:
    """What applies to the requests matching ``path`` and ``methods``.

    ``path``: a prefix (``"/api/ai"`` matches ``/api/ai`` and ``/api/ai/...`` but not
    ``/api/aim``), or a compiled ``re.Pattern`` matched from the start of the path;
    ``None`` matches every path (the default rule). ``methods``: method names (each an HTTP
    token, upper-cased), ``None`` for all. ``limits``: rate limits, each a `Limit` or a rate
    (``"10/minute"``, counted per client), all of which must admit the request.
    ``priority``: the executor priority (default: `default_priority`). ``timeout``: seconds
    the application may take to start its response (``None``: no limit); a response that
    started is then bounded by ``stream_timeout`` (seconds for the whole body) and
    ``idle_timeout`` (seconds between two pieces of it), both off by default so that
    streams and Server-Sent Events run as long as they need. ``cost``: what one request
    costs against the limits (at most every limit's quota). ``breaker``: a
    `brace.CircuitBreaker` guarding the route (5xx answers and exceptions count as
    failures). ``concurrency``: a second bound on how many of the rule's requests run at
    once, taken after the server's executor slot: anything with an executor's
    ``slot(priority)`` async context manager, such as `brace.redis.DistributedLimit` for a
    bound shared by every process of a fleet, or a `brace.PriorityExecutor` of the rule's
    own; its refusals (``QueueFull``, ``QueueTimeout``) are answered as the executor's
    are, with 503 and ``Retry-After``. ``exempt``: skip every check (no limits, no queue).
    ``name``: used in
    headers, logs and 429 bodies (default: from the path; 1 to 64 printable ASCII
    characters). Every argument is checked here.
    """

    path: str | re.Pattern[str] | None = None
    limits: Sequence[LimitLike] = ()
    _: KW_ONLY
    methods: Iterable[str] | None = None
    priority: int | None = None
    timeout: float | None = None
    cost: int = 1
    stream_timeout: float | None = None
    idle_timeout: float | None = None
    breaker: CircuitBreaker | None = None
    concurrency: SlotLimit | None = None
    exempt: bool = False
    name: str | None = None
    _methods: frozenset[str] | None = field(init=False, repr=False, compare=False)
    _limits: tuple[tuple[Limit, str], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        path = self.path
        if path is not None and not isinstance(path, (str, re.Pattern)):
            raise TypeError(f"path must be a str prefix, a re.Pattern or None, got {path!r}")
        if isinstance(path, str) and not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        if self.name is not None:
            check_policy_name(self.name, "name")
        object.__setattr__(self, "_methods", _check_methods(self.methods))
        if self.priority is not None and (
            isinstance(self.priority, bool) or not isinstance(self.priority, int)
        ):
            raise TypeError(f"priority must be an int or a brace.Priority, got {self.priority!r}")
        for name in ("timeout", "stream_timeout", "idle_timeout"):
            value = getattr(self, name)
            if value is not None:
                check_positive(value, name)
        if isinstance(self.cost, bool) or not isinstance(self.cost, int) or self.cost < 1:
            raise ValueError(f"cost must be an int >= 1, got {self.cost!r}")
        if self.breaker is not None and not isinstance(self.breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a brace.CircuitBreaker, got {self.breaker!r}")
        if self.concurrency is not None and not callable(getattr(self.concurrency, "slot", None)):
            raise TypeError(
                "concurrency must have a slot(priority) async context manager (a "
                f"brace.redis.DistributedLimit, a brace.PriorityExecutor), got {self.concurrency!r}"
            )
        if not isinstance(self.exempt, bool):
            raise TypeError(f"exempt must be a bool, got {self.exempt!r}")
        object.__setattr__(self, "_limits", self._check_limits())

    def _check_limits(self) -> tuple[tuple[Limit, str], ...]:
        limits = self.limits
        if isinstance(limits, (str, Rate, Limit, TokenBucket, SlidingWindow)) or not isinstance(
            limits, (list, tuple)
        ):
            raise TypeError("limits must be a list of limits, e.g. limits=['10/minute']")
        checked: list[tuple[Limit, str]] = []
        for limit in limits:
            if not isinstance(limit, Limit):
                limit = Limit(limit)
            if self.cost > limit.quota:
                raise ValueError(
                    f"cost must be <= every limit's quota (a larger cost could never be "
                    f"admitted): cost={self.cost} but {limit.rate!r} admits at most "
                    f"{limit.quota}"
                )
            if limit.name is not None:
                name = limit.name
            else:
                kind = "custom" if callable(limit.per) else limit.per
                name = self.label if kind == "client" else f"{self.label}-{kind}"
            checked.append((limit, name))
        # compared as sent (escaped), so that two names can never read alike to a client
        sent = [sf_string(name) for _, name in checked]
        if len(set(sent)) != len(sent):
            raise ValueError(
                f"rule {self.label!r}: two limits share the name {[n for _, n in checked]!r}; "
                "name them apart with Limit(..., name=...)"
            )
        return tuple(checked)

    @property
    def label(self) -> str:
        """The rule's name, or one made from its path."""
        if self.name is not None:
            return self.name
        path = self.path
        if path is None:
            return "default"
        text = path if isinstance(path, str) else path.pattern
        return _NAME.sub("-", text).strip("-") or "root"

    def matches(self, method: str, path: str) -> bool:
        methods = self._methods
        if methods is not None and method not in methods:
            return False
        pattern = self.path
        if pattern is None:
            return True
        if isinstance(pattern, str):
            if pattern == "/" or path == pattern:
                return True
            if pattern.endswith("/"):
                return path.startswith(pattern)
            return path.startswith(pattern) and path[len(pattern)] == "/"
        return pattern.match(path) is not None


class CompiledLimit:
    """A `Limit` made ready: its limiter, its key kind and its header text."""

    __slots__ = ("clock", "field", "hit", "key", "kind", "limiter", "local", "name", "rate_text")

    def __init__(
        self,
        limit: Limit,
        name: str,
        store: RateLimitStore | None,
        max_keys: int,
        clock: Callable[[], float] | None,
    ) -> None:
        per = limit.per
        if callable(per):
            self.kind = "custom"
            self.key: KeyFunction | None = per
        else:
            self.kind = per
            self.key = None
        kwargs: dict[str, Any] = {"clock": clock}
        if store is not None:
            kwargs["store"] = store
        else:
            kwargs["max_keys"] = max_keys
        self.limiter = RateLimiter(limit._policy, **kwargs)
        #: decided synchronously (a memory store): ``hit(key, cost, clock())`` instead of
        #: ``await limiter.hit``, answering an admission with its fields (`local_hit`)
        local = local_hit(self.limiter)
        self.local = local is not None
        self.hit: FieldsHit
        self.clock: Callable[[], float]
        self.hit, self.clock = (_not_local, time.monotonic) if local is None else local
        self.name = name
        quota, window = _quota_window(limit._policy)
        self.field = PolicyField(self.name, quota, window)
        rate = parse_rate(limit.rate) if isinstance(limit.rate, str) else limit.rate
        self.rate_text = str(rate) if isinstance(rate, Rate) else f"{quota}/{window:g} seconds"


def _not_local(key: str, cost: int, now: float) -> HitFields | Decision:
    raise TypeError("a limit with a remote store is asked with await limiter.hit")


class CompiledRule:
    """A `Rule` with its limits built: what the middleware uses per request."""

    __slots__ = (
        "breaker",
        "concurrency",
        "cost",
        "exempt",
        "idle_timeout",
        "limits",
        "local",
        "name",
        "plain",
        "policy_header",
        "priority",
        "raw_policy",
        "rule",
        "stream_timeout",
        "timed",
        "timeout",
    )

    def __init__(
        self,
        rule: Rule,
        store: RateLimitStore | None,
        max_keys: int,
        clock: Callable[[], float] | None,
    ) -> None:
        self.rule = rule
        self.name = rule.label
        self.limits = tuple(
            CompiledLimit(limit, name, store, max_keys, clock) for limit, name in rule._limits
        )
        self.priority = rule.priority
        self.timeout = rule.timeout
        self.stream_timeout = rule.stream_timeout
        self.idle_timeout = rule.idle_timeout
        self.cost = rule.cost
        self.breaker = rule.breaker
        self.concurrency = rule.concurrency
        self.exempt = rule.exempt
        #: a timeout to keep: the request runs in a cancel scope
        self.timed = not (
            self.timeout is None and self.stream_timeout is None and self.idle_timeout is None
        )
        #: no breaker, bound or timeout: the application runs as it is (counted)
        self.plain = not self.timed and self.breaker is None and self.concurrency is None
        #: every limit decided in this process, none keyed by a function: without a
        #: ``user`` callable, checked without waiting (`Pipeline.check_local`)
        self.local = all(limit.local and limit.kind != "custom" for limit in self.limits)
        #: the RateLimit-Policy value, built once
        self.policy_header = ", ".join(limit.field.member for limit in self.limits)
        #: the RateLimit-Policy field as ASGI sends it (policy names are printable ASCII)
        self.raw_policy = (b"ratelimit-policy", self.policy_header.encode("latin-1"))


class RuleTable:
    """Rules in order plus the default; ``match`` is cached per ``(method, path)``."""

    __slots__ = ("_cache", "_max_cache", "default", "rules")

    def __init__(
        self,
        rules: Iterable[Rule],
        default: Rule | None,
        *,
        store: RateLimitStore | None,
        max_keys: int,
        clock: Callable[[], float] | None,
        max_cache: int = 4096,
    ) -> None:
        rules = list(rules)
        for rule in rules:
            if not isinstance(rule, Rule):
                raise TypeError(f"rules must be brace.asgi.Rule objects, got {rule!r}")
        if default is None:
            default = Rule()
        elif not isinstance(default, Rule):
            raise TypeError(f"default must be a brace.asgi.Rule, got {default!r}")
        self.rules = tuple(CompiledRule(rule, store, max_keys, clock) for rule in rules)
        self.default = CompiledRule(default, store, max_keys, clock)
        self._cache: dict[tuple[str, str], CompiledRule] = {}
        self._max_cache = max_cache

    def match(self, method: str, path: str) -> CompiledRule:
        key = (method, path)
        cache = self._cache
        found = cache.get(key)
        if found is not None:
            return found
        found = self.default
        for compiled in self.rules:
            if compiled.rule.matches(method, path):
                found = compiled
                break
        if len(cache) >= self._max_cache:
            cache.clear()  # arbitrary paths must not grow the cache without bound
        cache[key] = found
        return found

    def all(self) -> tuple[CompiledRule, ...]:
        return (*self.rules, self.default)
