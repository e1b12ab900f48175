"""Route rules of the ASGI middleware: which limits, priority, timeout and breaker apply.

A `Rule` matches a path (a prefix that ends at a segment boundary, or a compiled regular
expression) and optionally a set of methods. Rules are tried in order; the first match
wins, and the default rule takes the rest. Matching is cached per ``(method, path)`` in a
small bounded table, so the hot path is one dict lookup.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from ._breaker import CircuitBreaker
from ._bucket import TokenBucket
from ._core._validate import check_positive
from ._headers import PolicyField
from ._limiter import RateLimiter
from ._priority import Priority
from ._rate import Rate, parse_rate
from ._store import MemoryStore, RateLimitStore
from ._window import SlidingWindow

__all__ = ("DEMO_RULES", "KeyFunction", "Limit", "Rule", "default_priority")

#: ``(scope) -> key or None``: a custom key for a `Limit` (``None``: the limit is skipped)
KeyFunction = Callable[[Any], str | None]
Per = Literal["client", "ip", "user"] | KeyFunction

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_HEALTH_PREFIXES = ("/health", "/api/health", "/healthz", "/readyz", "/livez")
_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


def default_priority(method: str, path: str) -> int:
    """The SEED's priorities when a rule sets none: health checks HIGH, reads
    (GET / HEAD / OPTIONS) MEDIUM, other writes LOW."""
    for prefix in _HEALTH_PREFIXES:
        if path == prefix or path.startswith(prefix + "/"):
            return Priority.HIGH
    return Priority.MEDIUM if method in _SAFE_METHODS else Priority.LOW


@dataclass(frozen=True)
class Limit:
    """One rate limit of a rule: ``rate`` (``"10/minute"``, a `brace.Rate`, a
    `brace.TokenBucket` or `brace.SlidingWindow`) counted per ``per``:

    - ``"client"`` (default): the user when one is identified, else the client address;
    - ``"user"``: the user only (skipped for anonymous requests);
    - ``"ip"``: the client address, even for identified users;
    - a callable ``(scope) -> str | None``: a key of your own (``None`` skips the limit).

    ``name`` names the policy in the ``RateLimit`` fields and the 429 body (default: the
    rule's name, with ``-ip`` / ``-user`` appended for those kinds).
    """

    rate: Any
    per: Per = "client"
    name: str | None = None


LimitLike = Limit | str | Rate | TokenBucket | SlidingWindow


@dataclass(frozen=True)
class Rule:
    """What applies to the requests matching ``path`` and ``methods``.

    ``path``: a prefix (``"/api/ai"`` matches ``/api/ai`` and ``/api/ai/...`` but not
    ``/api/aim``), or a compiled ``re.Pattern`` matched from the start of the path;
    ``None`` matches every path (the default rule). ``methods``: upper-case method names,
    ``None`` for all. ``limits``: rate limits, each a `Limit` or a rate (``"10/minute"``,
    counted per client), all of which must admit the request. ``priority``: the executor
    priority (default: `default_priority`). ``timeout``: seconds the application may take
    (``None``: no limit). ``cost``: what one request costs against the limits.
    ``breaker``: a `brace.CircuitBreaker` guarding the route (5xx answers and exceptions
    count as failures). ``exempt``: skip every check (no limits, no queue). ``name``: used in
    headers, logs and 429 bodies (default: from the path).
    """

    path: str | re.Pattern[str] | None = None
    limits: tuple[LimitLike, ...] | list[LimitLike] = ()
    methods: Iterable[str] | None = None
    priority: int | None = None
    timeout: float | None = None
    cost: int = 1
    breaker: CircuitBreaker | None = None
    exempt: bool = False
    name: str | None = None
    _methods: frozenset[str] | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        path = self.path
        if path is not None and not isinstance(path, (str, re.Pattern)):
            raise TypeError(f"path must be a str prefix, a re.Pattern or None, got {path!r}")
        if isinstance(path, str) and not path.startswith("/"):
            raise ValueError(f"path must start with '/', got {path!r}")
        if isinstance(self.limits, (str, Rate, Limit)):
            raise TypeError("limits must be a list of limits, e.g. limits=['10/minute']")
        methods = self.methods
        if isinstance(methods, str):
            raise TypeError("methods must be a list of method names, e.g. methods=['POST']")
        object.__setattr__(
            self,
            "_methods",
            None if methods is None else frozenset(method.upper() for method in methods),
        )
        if self.priority is not None and (
            isinstance(self.priority, bool) or not isinstance(self.priority, int)
        ):
            raise TypeError(f"priority must be an int or a brace.Priority, got {self.priority!r}")
        if self.timeout is not None:
            check_positive(self.timeout, "timeout")
        if isinstance(self.cost, bool) or not isinstance(self.cost, int) or self.cost < 1:
            raise ValueError(f"cost must be an int >= 1, got {self.cost!r}")
        if self.breaker is not None and not isinstance(self.breaker, CircuitBreaker):
            raise TypeError(f"breaker must be a brace.CircuitBreaker, got {self.breaker!r}")

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


#: The demo server's table (SEED.md): AI 10/minute (60 s timeout), auth 20 per 15 minutes
#: (HIGH priority), uploads 5/minute (LOW priority, 120 s timeout); the default rule
#: (`DEMO_DEFAULT`) allows 60/minute with a 30 s timeout.
DEMO_RULES: tuple[Rule, ...] = (
    Rule("/api/ai", limits=("10/minute",), priority=Priority.MEDIUM, timeout=60.0, name="ai"),
    Rule("/api/auth", limits=("20/15 minutes",), priority=Priority.HIGH, name="auth"),
    Rule("/api/upload", limits=("5/minute",), priority=Priority.LOW, timeout=120.0, name="upload"),
)
DEMO_DEFAULT = Rule(limits=("60/minute",), timeout=30.0, name="default")


class CompiledLimit:
    """A `Limit` made ready: its limiter, its key kind and its header text."""

    __slots__ = ("field", "key", "kind", "limiter", "local", "name", "rate_text")

    def __init__(
        self,
        limit: LimitLike,
        rule_name: str,
        store: RateLimitStore | None,
        max_keys: int,
        clock: Callable[[], float] | None,
    ) -> None:
        if not isinstance(limit, Limit):
            limit = Limit(limit)
        per = limit.per
        if callable(per):
            self.kind = "custom"
            self.key: KeyFunction | None = per
        elif per in ("client", "ip", "user"):
            self.kind = per
            self.key = None
        else:
            raise ValueError(f"per must be 'client', 'ip', 'user' or a callable, got {per!r}")
        rate = parse_rate(limit.rate) if isinstance(limit.rate, str) else limit.rate
        kwargs: dict[str, Any] = {"clock": clock}
        if store is not None:
            kwargs["store"] = store
        else:
            kwargs["max_keys"] = max_keys
        self.limiter = RateLimiter(rate, **kwargs)
        #: decided synchronously (a memory store): ``try_hit`` instead of ``await hit``
        self.local = isinstance(self.limiter.store, MemoryStore)
        suffix = "" if self.kind == "client" else f"-{self.kind}"
        self.name = limit.name if limit.name is not None else rule_name + suffix
        quota, window = _quota_window(self.limiter)
        self.field = PolicyField(self.name, quota, window)
        self.rate_text = str(rate) if isinstance(rate, Rate) else f"{quota}/{window:g} seconds"


def _quota_window(limiter: RateLimiter) -> tuple[int, float]:
    # a window: its limit per window; a bucket (GCRA): its burst, refilled in burst * interval
    policy: Any = limiter.policy
    limit = getattr(policy, "limit", None)
    window = getattr(policy, "window", None)
    if isinstance(limit, int) and isinstance(window, (int, float)):
        return limit, float(window)
    burst = getattr(policy, "burst", None)
    interval = getattr(policy, "interval", None)
    if isinstance(burst, int) and isinstance(interval, (int, float)):
        return burst, burst * float(interval)
    return 0, 0.0


class CompiledRule:
    """A `Rule` with its limits built: what the middleware uses per request."""

    __slots__ = (
        "breaker",
        "cost",
        "exempt",
        "limits",
        "name",
        "policy_header",
        "priority",
        "rule",
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
            CompiledLimit(limit, self.name, store, max_keys, clock) for limit in rule.limits
        )
        names = [limit.name for limit in self.limits]
        if len(set(names)) != len(names):
            raise ValueError(
                f"rule {self.name!r}: two limits share the name {names!r}; name them apart "
                "with Limit(..., name=...)"
            )
        self.priority = rule.priority
        self.timeout = rule.timeout
        self.cost = rule.cost
        self.breaker = rule.breaker
        self.exempt = rule.exempt
        #: the RateLimit-Policy value, built once
        self.policy_header = ", ".join(limit.field.member for limit in self.limits).encode()


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
