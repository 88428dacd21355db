"""The provisioned Grafana dashboard, and the PromQL its panels send to Prometheus."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DASHBOARD = GRAFANA_DIR / "dashboards" / "fashion-mnist.json"

# Grafana replaces these before a query reaches Prometheus; a test sending the expression to
# Prometheus itself has to do the same.
GRAFANA_RANGE_VARIABLES = ("$__rate_interval", "$__interval", "$__range")


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    """Parse a dashboard JSON file."""
    return json.loads(path.read_text())


def panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, those nested in rows included."""
    for panel in dashboard.get("panels", []):
        yield panel
        yield from panels(panel)


def dashboard_queries(dashboard: dict[str, Any], window: str = "1m") -> list[str]:
    """Every PromQL expression in the dashboard, Grafana's range variables set to `window`."""
    queries = []
    for panel in panels(dashboard):
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable in GRAFANA_RANGE_VARIABLES:
                expr = expr.replace(variable, window)
            queries.append(expr)
    return queries
