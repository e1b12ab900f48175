"""OpenTelemetry exporter: brace's instruments on a meter you pass in.

::

    from opentelemetry import metrics
    from brace.otel import instrument

    instruments = instrument(registry, metrics.get_meter("my-service"))

Every metric of the schema (``brace._metrics``) becomes an instrument when
:func:`instrument` runs, whatever the registry holds then: counters become observable
counters, gauges observable gauges, both read from one ``statistics()`` call per primitive
per collection; histograms become explicit-bucket histograms with brace's bucket bounds
as the advisory boundaries. Names are dotted (``brace.queue.wait``), units UCUM (``s``,
``By``, ``{request}``), and each data point has the primitive's ``kind`` and registry
``name`` as attributes. Needs ``opentelemetry-api`` (``pip install brace[otel]``).
"""

from __future__ import annotations

import functools
import threading
import weakref
from collections.abc import Iterable
from typing import Any

from ._extras import missing_extra

try:
    from opentelemetry.metrics import CallbackOptions, Meter, Observation
except ImportError as error:  # the extra is not installed
    raise missing_extra("otel", "otel", error) from error

from ._metrics import Family, Histogram, Kind, MetricSpec, collect, kind_of, specs
from ._registry import Registry

__all__ = ("Instruments", "instrument")


class Instruments:
    """The instruments :func:`instrument` created (``instruments``, by name).

    Histograms are recorded as they happen: at each collection (and :meth:`refresh`),
    every histogram of a primitive registered since is attached to its instrument, so a
    primitive's recordings count from the first collection after it was registered.
    """

    def __init__(self, registry: Registry, meter: Meter, prefix: str) -> None:
        self.registry = registry
        self.meter = meter
        self.prefix = prefix
        self.instruments: dict[str, Any] = {}
        self.specs: dict[str, MetricSpec] = {}
        self._latest: dict[str, Family] = {}
        self._lock = threading.Lock()
        self._seen: set[str] = set()
        self._kinds: dict[type, Kind | None] = {}
        # live histogram -> [zeros already recorded] (a fast path's zero values)
        self._attached: weakref.WeakKeyDictionary[Histogram, list[int]] = (
            weakref.WeakKeyDictionary()
        )
        for spec in specs():
            name = spec.otel_name(prefix)
            self.specs[name] = spec
            if spec.type == "histogram":
                self.instruments[name] = meter.create_histogram(
                    name,
                    unit=spec.unit,
                    description=spec.help,
                    explicit_bucket_boundaries_advisory=list(spec.buckets),
                )
            elif spec.type == "counter":
                self.instruments[name] = meter.create_observable_counter(
                    name, callbacks=[_Callback(self, name)], unit=spec.unit, description=spec.help
                )
            else:
                self.instruments[name] = meter.create_observable_gauge(
                    name, callbacks=[_Callback(self, name)], unit=spec.unit, description=spec.help
                )

    @property
    def names(self) -> set[str]:
        """The instrument names."""
        return set(self.instruments)

    def refresh(self) -> list[str]:
        """Attach the histograms of primitives registered since the last collection;
        return those primitives' names (every instrument already exists)."""
        with self._lock:
            return self._attach()

    def _attach(self) -> list[str]:
        attached: list[str] = []
        for name, primitive in self.registry.items():
            kind = self._kind(primitive)
            if kind is None:
                continue
            attributes = {"kind": kind.kind, "name": name}
            for spec in kind.metrics:
                source = spec.histogram
                if source is None:
                    continue
                histogram = source.live(primitive)
                if histogram is None:
                    continue
                zeros = 0 if source.zeros is None else source.zeros(primitive)
                seen = self._attached.get(histogram)
                record = self.instruments[spec.otel_name(self.prefix)].record
                if seen is None:
                    sink = functools.partial(record, attributes=attributes)
                    histogram.sinks = (*histogram.sinks, sink)
                    self._attached[histogram] = [zeros]
                    if name not in attached:
                        attached.append(name)
                elif zeros > seen[0]:  # zeros a fast path counted without a sink
                    for _ in range(zeros - seen[0]):
                        record(0.0, attributes=attributes)
                    seen[0] = zeros
        return attached

    def _kind(self, primitive: Any) -> Kind | None:
        """The primitive's kind (a class's statistics type never changes: asked once)."""
        cls = type(primitive)
        if cls not in self._kinds:
            self._kinds[cls] = kind_of(primitive.statistics())
        return self._kinds[cls]

    def _read(self) -> None:
        families = collect(self.registry.items())
        self._latest = {family.spec.otel_name(self.prefix): family for family in families}
        self._attach()

    def observe(self, name: str) -> list[Observation]:
        """The observations of one observable instrument.

        One reading serves a whole collection: an instrument observed a second time since
        the last reading means a new collection began, so it reads again. This holds
        whatever order the SDK calls the instruments in.
        """
        with self._lock:
            if name in self._seen or not self._latest:
                self._read()
                self._seen.clear()
            self._seen.add(name)
            family = self._latest.get(name)
        if family is None:
            return []
        return [
            Observation(value, attributes=dict(labels))
            for labels, value in family.samples
            if isinstance(value, float)
        ]


class _Callback:
    __slots__ = ("_instruments", "_name")

    def __init__(self, instruments: Instruments, name: str) -> None:
        self._instruments = instruments
        self._name = name

    def __call__(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._instruments.observe(self._name)


def instrument(registry: Registry, meter: Meter, *, prefix: str = "brace") -> Instruments:
    """Create every brace instrument on ``meter``, reading ``registry``."""
    if not isinstance(registry, Registry):
        raise TypeError(f"registry must be a brace.Registry, got {registry!r}")
    if not isinstance(prefix, str) or not prefix.isidentifier():
        raise ValueError(f"prefix must be a metric-name prefix like 'brace', got {prefix!r}")
    instruments = Instruments(registry, meter, prefix)
    instruments.refresh()
    return instruments
