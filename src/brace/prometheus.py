"""Prometheus exporter: collectors that render a :class:`brace.Registry` at each scrape.

Nothing is registered at import time. Register the collector on the registry you serve::

    from prometheus_client import REGISTRY
    from brace.prometheus import RegistryCollector

    REGISTRY.register(RegistryCollector(registry))

Every family comes from the metric schema (``brace._metrics``): each primitive's metrics
are declared once with their type, unit, help and labels; every sample carries the
primitive's ``kind`` and registry ``name`` as labels. Each scrape reads each primitive's
``statistics()`` once, so primitives registered later appear and garbage-collected ones
disappear without any bookkeeping.

With several worker processes (``uvicorn --workers N``, gunicorn), serve a
:class:`MultiProcessCollector` instead: each worker writes its figures to a shared
directory, and whichever worker answers the scrape adds them up. Needs the
``prometheus-client`` package (``pip install brace[prometheus]``).
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from ._extras import missing_extra

try:
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
    )
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector
except ImportError as error:  # the extra is not installed
    raise missing_extra("prometheus", "prometheus", error) from error

from ._metrics import HistogramSnapshot, MetricSpec, collect, specs
from ._registry import Registry

__all__ = ("MultiProcessCollector", "RegistryCollector")


def _check(registry: object, prefix: object) -> None:
    if not isinstance(registry, Registry):
        raise TypeError(f"registry must be a brace.Registry, got {registry!r}")
    if not isinstance(prefix, str) or not prefix.isidentifier():
        raise ValueError(f"prefix must be a metric-name prefix like 'brace', got {prefix!r}")


class RegistryCollector(Collector):
    """A ``prometheus_client`` collector yielding the metrics of a :class:`brace.Registry`.

    ``prefix`` starts every metric name (default ``brace``).
    """

    def __init__(self, registry: Registry, *, prefix: str = "brace") -> None:
        _check(registry, prefix)
        self.registry = registry
        self.prefix = prefix

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the metric set follows the registry, so registering the
        collector does not take a snapshot."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One metric family per declared metric of the registered kinds."""
        for family in collect(self.registry.items()):
            yield _render(family.spec, self.prefix, family.samples)


def _render(
    spec: MetricSpec,
    prefix: str,
    samples: Sequence[tuple[Mapping[str, str], float | HistogramSnapshot]],
    extra_labels: Sequence[str] = (),
) -> Metric:
    name = spec.prometheus_name(prefix)
    labels = ["kind", "name", *spec.labels, *extra_labels]
    metric: Metric
    if spec.type == "histogram":
        histogram = HistogramMetricFamily(name, spec.help, labels=labels)
        for values, snapshot in samples:
            assert isinstance(snapshot, HistogramSnapshot)
            bounds = [_go_float(bound) for bound in snapshot.bounds] + ["+Inf"]
            buckets = list(zip(bounds, map(float, snapshot.cumulative()), strict=True))
            histogram.add_metric([values[label] for label in labels], buckets, snapshot.sum)
        return histogram
    if spec.type == "counter":
        metric = CounterMetricFamily(name, spec.help, labels=labels)
    else:
        metric = GaugeMetricFamily(name, spec.help, labels=labels)
    for values, value in samples:
        assert isinstance(value, float)
        metric.add_metric([values[label] for label in labels], value)
    return metric


class MultiProcessCollector(Collector):
    """The metrics of every worker process of a service, added up.

    Each process makes one, on the same ``directory`` (an empty directory the service
    owns, like prometheus_client's ``PROMETHEUS_MULTIPROC_DIR``; empty it when the service
    starts). A daemon thread writes this process's figures to ``directory`` every
    ``interval`` seconds (and :meth:`write` does it at once); a scrape, answered by any
    one worker, reads its own figures live and the others' from their files:

    * counters and histograms are summed over the processes, dead ones included (their
      last figures stay, so a sum never goes backwards when a worker is replaced);
    * gauges get a ``pid`` label, one series per live process (dead processes' gauges are
      left out); aggregate them in the query (``sum without (pid)``, ``max``...).

    Other workers' figures are at most ``interval`` seconds old. :meth:`close` stops the
    thread after a last write. The thread calls ``statistics()`` as a scrape served from
    another thread would; with ``interval=None`` there is no thread: call :meth:`write`
    yourself (from a task on the event loop, say).
    """

    def __init__(
        self,
        registry: Registry,
        directory: str | os.PathLike[str],
        *,
        interval: float | None = 1.0,
        prefix: str = "brace",
    ) -> None:
        _check(registry, prefix)
        if interval is not None and (
            isinstance(interval, bool)
            or not isinstance(interval, (int, float))
            or not (0 < interval < float("inf"))
        ):
            raise ValueError(f"interval must be seconds > 0 or None, got {interval!r}")
        self.registry = registry
        self.prefix = prefix
        self.directory = Path(directory)
        if not self.directory.is_dir():
            raise ValueError(f"directory must be an existing directory, got {directory!r}")
        self.interval = None if interval is None else float(interval)
        self.pid = os.getpid()
        self.path = self.directory / f"brace-{self.pid}-{secrets.token_hex(4)}.json"
        self._specs = {spec.prometheus_name(): spec for spec in specs()}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if self.interval is not None:
            self._thread = threading.Thread(
                target=self._run, args=(self.interval,), name="brace-metrics-writer", daemon=True
            )
            self._thread.start()

    def describe(self) -> Iterable[Metric]:
        """Nothing up front (see `RegistryCollector.describe`)."""
        return []

    def write(self) -> None:
        """Write this process's figures now (atomically: a reader never sees half)."""
        data = {
            "pid": self.pid,
            "families": [
                {"name": family.spec.prometheus_name(), "samples": [
                    [dict(labels), _encode(value)] for labels, value in family.samples
                ]}
                for family in collect(self.registry.items())
            ],
        }  # fmt: skip
        temporary = self.path.with_suffix(".tmp")
        temporary.write_text(json.dumps(data))
        temporary.replace(self.path)

    def close(self) -> None:
        """Stop the writer thread after one last write (without a thread: write once)."""
        self._stop.set()
        if self._thread is None:
            self.write()
        else:
            self._thread.join()

    def _run(self, interval: float) -> None:
        while True:
            with contextlib.suppress(OSError):
                self.write()
            if self._stop.wait(interval):
                with contextlib.suppress(OSError):
                    self.write()
                return

    def collect(self) -> Iterator[Metric]:
        """Every worker's families: counters and histograms summed, gauges by ``pid``."""
        merged: dict[str, dict[tuple[tuple[str, str], ...], float | HistogramSnapshot]] = {}
        own = [
            (family.spec.prometheus_name(), self.pid, True, family.samples)
            for family in collect(self.registry.items())
        ]
        for name, pid, alive, samples in [*own, *self._others()]:
            spec = self._specs.get(name)
            if spec is None:  # written by another version of brace
                continue
            series = merged.setdefault(name, {})
            for labels, value in samples:
                if spec.type == "gauge":
                    if not alive:
                        continue
                    labels = {**labels, "pid": str(pid)}
                key = tuple(sorted(labels.items()))
                series[key] = _add(series.get(key), value)
        for name, series in merged.items():
            spec = self._specs[name]
            extra = ("pid",) if spec.type == "gauge" else ()
            yield _render(
                spec, self.prefix, [(dict(key), value) for key, value in series.items()], extra
            )

    def _others(
        self,
    ) -> Iterator[tuple[str, int, bool, list[tuple[dict[str, str], float | HistogramSnapshot]]]]:
        for path in sorted(self.directory.glob("brace-*.json")):
            if path == self.path:
                continue
            try:
                data = json.loads(path.read_text())
                pid = int(data["pid"])
                families = data["families"]
            except (OSError, ValueError, KeyError, TypeError):
                continue  # being replaced, or not ours
            alive = _alive(pid)
            for family in families:
                samples = [(labels, _decode(value)) for labels, value in family["samples"]]
                yield family["name"], pid, alive, samples


def _go_float(bound: float) -> str:
    """A bucket bound as prometheus_client writes it (``0.5``, ``1.0``)."""
    return repr(float(bound))


def _encode(value: float | HistogramSnapshot) -> Any:
    if isinstance(value, HistogramSnapshot):
        return {"bounds": value.bounds, "counts": value.counts, "sum": value.sum}
    return value


def _decode(value: Any) -> float | HistogramSnapshot:
    if isinstance(value, dict):
        return HistogramSnapshot(
            tuple(map(float, value["bounds"])), tuple(map(int, value["counts"])), value["sum"]
        )
    return float(value)


def _add(
    total: float | HistogramSnapshot | None, value: float | HistogramSnapshot
) -> float | HistogramSnapshot:
    if total is None:
        return value
    if isinstance(total, HistogramSnapshot) and isinstance(value, HistogramSnapshot):
        if total.bounds != value.bounds:  # another version's buckets: keep the first
            return total
        counts = tuple(a + b for a, b in zip(total.counts, value.counts, strict=True))
        return HistogramSnapshot(total.bounds, counts, total.sum + value.sum)
    assert isinstance(total, float)
    assert isinstance(value, float)
    return total + value


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True
