"""The metric docs follow the schema: the table in docs/observability.md and the example
Grafana dashboard's expressions."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from brace._metrics import MetricSpec, metric_table, specs

DOCS = Path(__file__).resolve().parent.parent / "docs"
TABLE = re.compile(r"<!-- metric table -->\n(.*?)<!-- end of metric table -->", re.DOTALL)


def test_the_metric_table_is_the_schemas() -> None:
    """docs/observability.md holds the table generated from the schema (run
    ``python docs/gen_metric_table.py`` after changing a declaration)."""
    (table,) = TABLE.findall((DOCS / "observability.md").read_text(encoding="utf-8"))
    assert table.strip() == metric_table().strip(), "run: python docs/gen_metric_table.py"


def exported_samples() -> dict[str, MetricSpec]:
    """Every sample name a scrape can show, with the spec it comes from."""
    names: dict[str, MetricSpec] = {}
    for spec in specs():
        base = spec.prometheus_name()
        if spec.type == "histogram":
            for suffix in ("_bucket", "_count", "_sum"):
                names[base + suffix] = spec
        else:
            names[spec.sample_name()] = spec
    return names


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [target["expr"] for panel in dashboard["panels"] for target in panel["targets"]]


def test_the_dashboard_names_only_exported_metrics_and_their_labels() -> None:
    """Every metric in every expression of docs/grafana-dashboard.json is one brace
    exports (with its _total / _bucket / _count / _sum), every label it groups or filters
    by is one that metric has, and every histogram of the schema has a panel."""
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    exported = exported_samples()
    used: set[str] = set()
    for expr in expressions(dashboard):
        metrics = re.findall(r"\bbrace_[a-z_]+\b", expr)
        assert metrics, expr
        for metric in metrics:
            assert metric in exported, f"{metric} (in {expr!r}) is not exported"
            used.add(exported[metric].prometheus_name())
        labels = {
            label.strip()
            for group in re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr)
            for label in group.split(",")
        }
        labels |= set(re.findall(r"(\w+)\s*(?:=~|!~|!=|=)\s*\"", expr))
        for metric in metrics:
            spec = exported[metric]
            allowed = {"kind", "name", "pid", *spec.labels}
            if metric.endswith("_bucket"):
                allowed.add("le")
            assert labels <= allowed, f"{expr!r}: {sorted(labels - allowed)} not on {metric}"
    histograms = {spec.prometheus_name() for spec in specs() if spec.type == "histogram"}
    assert histograms <= used
    assert "brace_refusals" in used


def test_the_dashboard_is_importable() -> None:
    """Each panel has a unique id, a Prometheus data source and at least one query; the
    data source is a dashboard variable."""
    dashboard = json.loads((DOCS / "grafana-dashboard.json").read_text(encoding="utf-8"))
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    assert dashboard["templating"]["list"][0]["type"] == "datasource"
    for panel in dashboard["panels"]:
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"]
        assert len({target["refId"] for target in panel["targets"]}) == len(panel["targets"])
