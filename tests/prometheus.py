"""A real Prometheus server for tests: the shipped configuration, retargeted at a local server.

The `prometheus` fixture in conftest.py starts one that scrapes `live_server` every second.
Use `wait_for(expr)` to wait until a PromQL expression returns data (a dashboard's panels,
say), and `query(expr)` to read it.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

import requests
import yaml

from harness.process import BackgroundProcess

SHIPPED_CONFIG = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "prometheus.yml"
SHIPPED_TARGET = "api:9100"  # the compose service's metrics port
SCRAPE_INTERVAL = "1s"


def retargeted_config(targets: list[str]) -> dict[str, Any]:
    """Return the shipped configuration scraping `targets` (not api:9100) every second."""
    config = yaml.safe_load(SHIPPED_CONFIG.read_text())
    config["global"].update(
        scrape_interval=SCRAPE_INTERVAL, scrape_timeout=SCRAPE_INTERVAL, evaluation_interval="1s"
    )
    for job in config["scrape_configs"]:
        for static in job["static_configs"]:
            if SHIPPED_TARGET in static["targets"]:
                static["targets"] = targets
    return config


class PrometheusServer(BackgroundProcess):
    """A `prometheus` process with its own data folder and port, scraping `targets`."""

    def __init__(self, binary: str, targets: list[str], folder: Path, port: int) -> None:
        super().__init__(folder / "prometheus.log")
        self.binary = binary
        self.targets = targets
        self.folder = folder
        self.port = port
        self.url = f"http://127.0.0.1:{port}"

    def start(self, timeout: float = 60) -> PrometheusServer:
        """Write the configuration, start Prometheus, and wait until it is ready."""
        config = self.folder / "prometheus.yml"
        config.write_text(yaml.safe_dump(retargeted_config(self.targets)))
        self.launch(
            [
                self.binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.folder / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
            ]
        )
        self.wait_until_ok(self.url + "/-/ready", timeout)
        return self

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Evaluate an instant PromQL query now; return its result vector."""
        response = requests.get(self.url + "/api/v1/query", params={"query": expr}, timeout=10)
        body = response.json()
        assert body["status"] == "success", body
        assert body["data"]["resultType"] == "vector", body
        return body["data"]["result"]

    def wait_for(self, expr: str, timeout: float = 30) -> list[dict[str, Any]]:
        """Poll `expr` until it returns at least one finite value; return the result."""
        deadline = time.monotonic() + timeout
        result: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            result = self.query(expr)
            if any(math.isfinite(float(sample["value"][1])) for sample in result):
                return result
            time.sleep(0.5)
        raise AssertionError(f"{expr} returned no finite value in {timeout}s: {result}")
