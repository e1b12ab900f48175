"""Acceptance: a live app's ``/metrics`` linted family by family, and its OTel export.

The app has one primitive of every kind in a `brace.Registry` and serves the Prometheus
text through prometheus_client's ASGI app. The scrape is parsed with prometheus_client's
own parser and every family must follow the naming conventions; the OpenTelemetry
instruments are read through the SDK's InMemoryMetricReader and must carry a unit and
exist before any traffic.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import pytest
import redis.asyncio
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import HistogramDataPoint, InMemoryMetricReader
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

import brace
import brace.chaos
from brace._metrics import KINDS, kind_of, specs
from brace._probes import MemorySample
from brace.asgi import BraceMiddleware, Rule
from brace.otel import Instruments, instrument
from brace.prometheus import RegistryCollector
from brace.redis import RedisStore

# words that say a figure is a time or a size: such a name must end in the base unit
TIME_WORDS = frozenset({"time", "duration", "latency", "lag", "wait", "delay", "seconds"})
BYTE_WORDS = frozenset({"usage", "threshold", "heap", "rss", "bytes", "size"})


def lint(family: Metric) -> list[str]:
    """What is wrong with one parsed family (nothing, for a good one)."""
    problems: list[str] = []
    name = family.name
    words = name.split("_")
    if family.type == "counter":
        if not all(sample.name == name + "_total" for sample in family.samples):
            problems.append(f"{name}: a counter's samples must end in _total")
    elif name.endswith("_total"):
        problems.append(f"{name}: _total on a {family.type}")
    repeated = {word for word in words if words.count(word) > 1}
    if repeated:
        problems.append(f"{name}: repeats {sorted(repeated)}")
    if TIME_WORDS & set(words) and not name.endswith("_seconds"):
        problems.append(f"{name}: a time figure must end in _seconds")
    if BYTE_WORDS & set(words) and not name.endswith("_bytes"):
        problems.append(f"{name}: a size figure must end in _bytes")
    if {"seconds", "bytes"} & set(words[:-1]):
        problems.append(f"{name}: the unit must come last")
    help_text = family.documentation
    if help_text in (name, name.replace("_", " ")) or name.replace("_", " ") in help_text:
        problems.append(f"{name}: HELP repeats the name")
    if not re.match(r"^[0-9A-Z].*\.$", help_text):
        problems.append(f"{name}: HELP is not a sentence: {help_text!r}")
    if family.type == "histogram":
        buckets = [s for s in family.samples if s.name == name + "_bucket"]
        if not buckets or buckets[-1].labels["le"] != "+Inf":
            problems.append(f"{name}: a histogram needs buckets up to +Inf")
    for sample in family.samples:
        if "kind" not in sample.labels or "name" not in sample.labels:
            problems.append(f"{name}: sample without kind and name labels")
            break
    return problems


def test_lint_catches_the_old_mistakes() -> None:
    """The lint rejects the names of the first exporter (it is not vacuous)."""
    old = text_string_to_metric_families(
        "# HELP brace_queue_queue_distribution brace queue queue distribution\n"
        "# TYPE brace_queue_queue_distribution gauge\n"
        'brace_queue_queue_distribution{name="default",priority="low"} 0.0\n'
        "# HELP brace_queue_average_wait_time brace queue average wait time\n"
        "# TYPE brace_queue_average_wait_time gauge\n"
        'brace_queue_average_wait_time{name="default"} 0.0\n'
        "# HELP brace_memory_usage Memory.\n"
        "# TYPE brace_memory_usage gauge\n"
        'brace_memory_usage{kind="m",name="process"} 0.0\n'
        "# HELP brace_circuit_breakers_opened_count_total Times.\n"
        "# TYPE brace_circuit_breakers_opened_count_total gauge\n"
        'brace_circuit_breakers_opened_count_total{kind="b",name="db"} 0.0\n'
    )
    problems = [problem for family in old for problem in lint(family)]
    assert any("repeats ['queue']" in problem for problem in problems)
    assert any("average_wait_time: a time figure" in problem for problem in problems)
    assert any("HELP repeats the name" in problem for problem in problems)
    assert any("brace_memory_usage: a size figure" in problem for problem in problems)
    assert any("_total on a gauge" in problem for problem in problems)


def make_app() -> tuple[Any, brace.Registry, dict[str, Any]]:
    """An app behind BraceMiddleware, with one primitive of every kind registered (the
    registry holds them weakly: the returned dict keeps them alive)."""
    registry = brace.Registry()
    kept: dict[str, Any] = {}
    clock = anyio.current_time
    executor = registry.register(
        "default", brace.PriorityExecutor(concurrency=2, max_queue=4, clock=clock)
    )
    breaker = brace.CircuitBreaker(
        failure_threshold=2,
        failure_rate=0.5,
        slow_call_duration=10.0,
        record_durations=True,
        clock=clock,
    )
    kept["db"] = registry.register("db", breaker)
    kept["api"] = registry.register(
        "api", brace.RateLimiter(brace.SlidingWindow(limit=5, window=60))
    )
    kept["bucket"] = registry.register("bucket", brace.TokenBucket(10, clock=clock))
    kept["window"] = registry.register("window", brace.SlidingWindow(5, 60.0, clock=clock))
    kept["keys"] = registry.register("keys", brace.MemoryStore(clock=clock))
    kept["process"] = registry.register(
        "process", brace.MemoryGuard(high=0.9, probe=lambda: MemorySample(2**20, 2**30, 0.5))
    )
    kept["process"].sample()  # a guard knows its limit from its first sample
    kept["loop"] = registry.register("loop", brace.LoadMonitor(clock=clock))
    kept["shutdown"] = registry.register("shutdown", brace.GracefulShutdown(clock=clock))
    kept["retry"] = registry.register("retry", brace.Retry(clock=clock))
    kept["budget"] = registry.register("budget", brace.RetryBudget(clock=clock))
    kept["timeout"] = registry.register("timeout", brace.Timeout(1.0))
    kept["limit"] = registry.register("limit", brace.AdaptiveLimit.gradient2())
    kept["redis"] = registry.register("redis", RedisStore(redis.asyncio.Redis(port=1)))
    kept["fallback"] = registry.register("fallback", brace.Fallback(0))
    kept["hedge"] = registry.register("hedge", brace.Hedge(0.1, clock=clock))
    kept["chaos"] = registry.register(
        "chaos", brace.chaos.exception(KeyError, injection_rate=0.5, seed=1)
    )

    async def hello(request: Request) -> PlainTextResponse:
        async with breaker:
            await anyio.sleep(0.002)
        return PlainTextResponse("hello")

    metrics = CollectorRegistry()
    metrics.register(RegistryCollector(registry))

    async def scrape(request: Request) -> Response:
        return Response(generate_latest(metrics), media_type=CONTENT_TYPE_LATEST)

    inner = Starlette(routes=[Route("/api/items", hello), Route("/metrics", scrape)])
    app = BraceMiddleware(
        inner,
        rules=[
            Rule("/metrics", exempt=True),
            Rule("/api/items", limits=["3/minute"], name="items"),
        ],
        executor=executor,
        clock=clock,
    )
    kept["http"] = registry.register("http", app)
    return app, registry, {**kept, "executor": executor, "breaker": breaker}


def scrape_text(text: str) -> dict[str, Metric]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict[str, Metric], sample: str, **labels: str) -> float:
    """The value of the one sample with this name and these labels (among others)."""
    family = families[re.sub(r"_(total|bucket|count|sum)$", "", sample)]
    found = [
        s.value
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    ]
    assert len(found) == 1, (sample, labels, found)
    return found[0]


def otel_metrics(reader: InMemoryMetricReader) -> Iterator[Any]:
    data = reader.get_metrics_data()
    assert data is not None
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            yield from scope.metrics


async def test_live_scrape_lints_clean_and_otel_has_units() -> None:
    """Every family scraped from /metrics passes the lint, before and after traffic; the
    families are the schema's; the OTel instruments have units and exist before traffic."""
    app, registry, kept = make_app()
    reader = InMemoryMetricReader()
    instruments: Instruments = instrument(registry, MeterProvider([reader]).get_meter("test"))
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 1234))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        # before traffic: every declared family of every registered kind is there
        before = scrape_text((await http.get("/metrics")).text)
        declared = {spec.prometheus_name() for kind in KINDS.values() for spec in kind.metrics}
        assert set(before) == declared
        assert [problem for family in before.values() for problem in lint(family)] == []
        exported_before = {metric.name: metric for metric in otel_metrics(reader)}
        missing: list[str] = []
        for name, spec in instruments.specs.items():
            assert spec.unit, name
            if spec.type != "histogram":  # a histogram has no point before a recording
                if name not in exported_before:
                    missing.append(name)
                elif exported_before[name].unit != spec.unit:
                    missing.append(f"{name} without its unit")
        assert missing == []
        assert len(instruments.instruments) == len(specs())

        codes = [(await http.get("/api/items")).status_code for _ in range(5)]
        assert codes == [200, 200, 200, 429, 429]
        after = scrape_text((await http.get("/metrics")).text)
    assert [problem for family in after.values() for problem in lint(family)] == []
    assert value(after, "brace_middleware_requests_total", name="http") == 5
    assert value(after, "brace_refusals_total", kind="middleware", reason="rate_limited") == 2
    rule_refusals = "brace_middleware_rule_refusals_total"
    assert value(after, rule_refusals, rule="items", reason="rate_limited") == 2
    assert value(after, "brace_circuit_breaker_call_duration_seconds_count", name="db") == 3
    # the 429s are answered before the request is timed: three durations
    assert value(after, "brace_middleware_request_duration_seconds_count", name="http") == 3
    wait = value(after, "brace_queue_wait_seconds_bucket", name="default", le="0.0")
    assert wait == 3  # three admitted at once: zero waits, from the fast path's count
    exported = {metric.name: metric for metric in otel_metrics(reader)}
    # histograms appear once recorded: the ones this traffic went through
    recorded = {"brace.queue.wait", "brace.circuit_breaker.call_duration"}
    recorded.add("brace.middleware.request_duration")
    for name, spec in instruments.specs.items():
        if spec.type != "histogram" or name in recorded:
            assert name in exported, name
            assert exported[name].unit == spec.unit
    points = exported["brace.circuit_breaker.call_duration"]
    point = points.data.data_points[0]
    assert isinstance(point, HistogramDataPoint)
    assert point.count == 3
    assert math.isclose(point.sum, 0.006, rel_tol=1e-6)
    kinds = {kind_of(primitive.statistics()) for primitive in kept.values()}
    assert kinds == set(KINDS.values())  # the app has one primitive of every kind


@pytest.mark.parametrize("spec", specs(), ids=lambda spec: spec.prometheus_name())
def test_every_declared_metric_follows_the_conventions(spec: Any) -> None:
    """Each spec: a known type, a UCUM unit matching its name, dotted OTel names."""
    name = spec.prometheus_name()
    assert spec.type in ("counter", "gauge", "histogram")
    assert not name.endswith("_total")
    assert (spec.unit == "s") == name.endswith("_seconds")
    assert (spec.unit == "By") == name.endswith("_bytes")
    assert spec.unit == "1" or spec.unit in ("s", "By") or re.fullmatch(r"\{[a-z]+\}", spec.unit)
    assert name.endswith("_ratio") <= (spec.unit == "1")
    assert re.fullmatch(r"brace(\.[a-z][a-z_]*)+", spec.otel_name())
    assert re.match(r"^[0-9A-Z].*\.$", spec.help)
    assert set(spec.labels).isdisjoint({"kind", "name", "le", "pid"})
