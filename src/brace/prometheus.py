"""Prometheus exporter: a collector that renders a :class:`brace.Registry` at each scrape.

Nothing is registered at import time. Register the collector on the registry you serve::

    from prometheus_client import REGISTRY
    from brace.prometheus import RegistryCollector

    REGISTRY.register(RegistryCollector(registry))

Each scrape takes one :meth:`brace.Registry.snapshot`, so primitives registered later
appear and garbage-collected ones disappear without any bookkeeping. Figures that only grow
are counters (``brace_queue_completed_total``), the rest gauges; every sample carries the
primitive's registry ``name`` as a label. Needs the ``prometheus-client`` package
(``pip install brace[prometheus]``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ._extras import missing_extra

try:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import Collector
except ImportError as error:  # the extra is not installed
    raise missing_extra("prometheus", "prometheus", error) from error

from ._registry import Registry, metric_families

__all__ = ("RegistryCollector",)


class RegistryCollector(Collector):
    """A ``prometheus_client`` collector yielding the metrics of a :class:`brace.Registry`.

    ``prefix`` starts every metric name (default ``brace``).
    """

    def __init__(self, registry: Registry, *, prefix: str = "brace") -> None:
        if not isinstance(registry, Registry):
            raise TypeError(f"registry must be a brace.Registry, got {registry!r}")
        if not isinstance(prefix, str) or not prefix.isidentifier():
            raise ValueError(f"prefix must be a metric-name prefix like 'brace', got {prefix!r}")
        self.registry = registry
        self.prefix = prefix

    def describe(self) -> Iterable[Metric]:
        """Nothing up front: the metric set follows the registry, so registering the
        collector does not take a snapshot."""
        return []

    def collect(self) -> Iterator[Metric]:
        """One metric family per figure, from a fresh snapshot of the registry."""
        for family in metric_families(self.registry.snapshot(), self.prefix):
            label_names = sorted({key for labels, _ in family.samples for key in labels})
            metric: CounterMetricFamily | GaugeMetricFamily
            if family.kind == "counter":
                metric = CounterMetricFamily(family.name, family.documentation, labels=label_names)
            else:
                metric = GaugeMetricFamily(family.name, family.documentation, labels=label_names)
            for labels, value in family.samples:
                metric.add_metric([labels.get(name, "") for name in label_names], value)
            yield metric
