"""The provisioned Grafana dashboard: its panels, and every PromQL expression in it, checked
against the metrics the service declares, Prometheus's own parser and a real Prometheus."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml
from prometheus_client import Counter, Gauge, Histogram

from service.observability import metrics
from tests.grafana import dashboard_queries, load_dashboard, panels
from tests.skips import require_program

METRIC_NAME = re.compile(r"\bfmnist_\w+")


def declared_series() -> set[str]:
    """Every series name service/observability/metrics.py exposes (counters' _total,
    histograms' parts)."""
    names = set()
    for metric in vars(metrics).values():
        if isinstance(metric, Counter):
            names.add(metric._name + "_total")
        elif isinstance(metric, Histogram):
            names.update(metric._name + suffix for suffix in ("_bucket", "_sum", "_count"))
        elif isinstance(metric, Gauge):
            names.add(metric._name)
    return names


def panel_titles() -> dict[str, dict]:
    """The dashboard's panels by title."""
    return {panel["title"]: panel for panel in panels(load_dashboard())}


@pytest.mark.parametrize(
    "title",
    [
        "Request rate",
        "Error ratio",
        "Request latency",
        "Inference time",
        "Batch size",
        "Predictions by class",
        "Confidence",
    ],
)
def test_dashboard_has_the_panel(title):
    panel = panel_titles()[title]
    assert panel["targets"], f"{title} queries nothing"


@pytest.mark.parametrize("title", ["Request latency", "Inference time"])
def test_latency_panels_show_p50_p95_p99(title):
    targets = panel_titles()[title]["targets"]
    assert [t["legendFormat"] for t in targets] == ["p50", "p95", "p99"]
    assert [re.match(r"histogram_quantile\(([\d.]+)", t["expr"])[1] for t in targets] == [
        "0.5",
        "0.95",
        "0.99",
    ]


def test_dashboard_queries_finds_every_target_and_fills_grafanas_variables():
    queries = dashboard_queries(load_dashboard(), window="2m")
    targets = [t for panel in panels(load_dashboard()) for t in panel.get("targets", [])]
    assert len(queries) == len(targets) >= 7
    assert not any("$" in query for query in queries)
    assert any("[2m]" in query for query in queries)


def test_every_query_names_a_metric_the_service_declares():
    declared = declared_series()
    for query in dashboard_queries(load_dashboard()):
        used = set(METRIC_NAME.findall(query))
        assert used, f"no fmnist metric in {query}"
        assert used <= declared, f"{query} uses undeclared {used - declared}"


@pytest.mark.integration  # runs promtool
def test_every_query_parses_as_promql(tmp_path):
    # promtool parses each expression as a recording rule with Prometheus's own parser.
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": query}
                    for n, query in enumerate(dashboard_queries(load_dashboard()))
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run(
        [require_program("promtool"), "check", "rules", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.slow
def test_every_query_returns_data_from_a_real_prometheus(prometheus, live_server):
    """Each dashboard query returns data from a real Prometheus scraping a live server."""
    from tests.test_metrics import query_under_traffic

    empty = []
    for query in dashboard_queries(load_dashboard(), window="1m"):
        try:
            query_under_traffic(prometheus, live_server.url, query, timeout=45)
        except AssertionError:
            empty.append(query)
    assert not empty, f"queries without data: {empty}"
