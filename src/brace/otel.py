"""OpenTelemetry exporter: observable instruments on a meter you pass in.

::

    from opentelemetry import metrics
    from brace.otel import instrument

    instruments = instrument(registry, metrics.get_meter("my-service"))

Every figure of every primitive in the :class:`brace.Registry` becomes an observable
counter (figures that only grow) or gauge, named like the Prometheus metrics
(``brace_queue_pending``), with the primitive's registry ``name`` as an attribute. The
values are read from one registry snapshot per collection. Instruments are created for the
figures present when :func:`instrument` (or :meth:`Instruments.refresh`) runs: call
``refresh()`` after registering a new *kind* of primitive. Needs ``opentelemetry-api``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable

from ._extras import missing_extra

try:
    from opentelemetry.metrics import CallbackOptions, Meter, Observation
except ImportError as error:  # the extra is not installed
    raise missing_extra("otel", "otel", error) from error

from ._registry import MetricFamily, Registry, metric_families

__all__ = ("Instruments", "instrument")


class Instruments:
    """The observable instruments :func:`instrument` created, by metric name."""

    def __init__(self, registry: Registry, meter: Meter, prefix: str) -> None:
        self.registry = registry
        self.meter = meter
        self.prefix = prefix
        self.names: set[str] = set()
        self._latest: dict[str, MetricFamily] = {}
        self._lock = threading.Lock()
        self._seen: set[str] = set()

    def refresh(self) -> list[str]:
        """Create instruments for figures that have none yet; return their names."""
        created: list[str] = []
        with self._lock:
            families = self._read()
            for family in families.values():
                if family.name in self.names:
                    continue
                callback = self._callback(family.name)
                if family.kind == "counter":
                    self.meter.create_observable_counter(
                        family.name, callbacks=[callback], description=family.documentation
                    )
                else:
                    self.meter.create_observable_gauge(
                        family.name, callbacks=[callback], description=family.documentation
                    )
                self.names.add(family.name)
                self._seen.add(family.name)  # its first observation takes a fresh snapshot
                created.append(family.name)
        return created

    def _read(self) -> dict[str, MetricFamily]:
        families = metric_families(self.registry.snapshot(), self.prefix)
        self._latest = {family.name: family for family in families}
        return self._latest

    def _callback(self, name: str) -> _Callback:
        return _Callback(self, name)

    def observe(self, name: str) -> list[Observation]:
        """The observations of one instrument.

        One snapshot serves a whole collection: an instrument observed a second time since
        the last snapshot means a new collection began, so it takes a fresh one. This
        holds whatever order the SDK calls the instruments in.
        """
        with self._lock:
            if name in self._seen:
                self._read()
                self._seen.clear()
            self._seen.add(name)
            latest = self._latest
        family = latest.get(name)
        if family is None:
            return []
        return [Observation(value, attributes=dict(labels)) for labels, value in family.samples]


class _Callback:
    __slots__ = ("_instruments", "_name")

    def __init__(self, instruments: Instruments, name: str) -> None:
        self._instruments = instruments
        self._name = name

    def __call__(self, options: CallbackOptions) -> Iterable[Observation]:
        return self._instruments.observe(self._name)


def instrument(registry: Registry, meter: Meter, *, prefix: str = "brace") -> Instruments:
    """Create observable instruments on ``meter`` for everything ``registry`` holds."""
    if not isinstance(registry, Registry):
        raise TypeError(f"registry must be a brace.Registry, got {registry!r}")
    if not isinstance(prefix, str) or not prefix.isidentifier():
        raise ValueError(f"prefix must be a metric-name prefix like 'brace', got {prefix!r}")
    instruments = Instruments(registry, meter, prefix)
    instruments.refresh()
    return instruments
