"""Shared fixtures: a tiny real model, a fresh app per test, real gunicorn and Prometheus."""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.background import BackgroundProcess
from tests.idx import write_dataset
from tests.prometheus import PrometheusServer

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_MODEL_DIR = ROOT / "models" / "fashion_mnist"
REQUIRE_SYSTEM_TOOLS = os.environ.get("FMNIST_REQUIRE_SYSTEM_TOOLS") == "1"


def require_program(name: str) -> str:
    """Return the path of a system program, or skip (fail in CI) when it is missing."""
    path = shutil.which(name)
    if path is None:
        message = f"{name} is not installed (apt-get install it; .ci/run does)"
        if REQUIRE_SYSTEM_TOOLS:
            pytest.fail(message)
        pytest.skip(message)
    return path


def dataset_dir() -> Path:
    """Return FASHION_MNIST_DIR, or skip the test when it is not set."""
    value = os.environ.get("FASHION_MNIST_DIR")
    if not value:
        pytest.skip("FASHION_MNIST_DIR is not set; the full dataset is needed")
    return Path(value)


@pytest.fixture(scope="session")
def tiny_data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Synthetic IDX files: 300 training and 100 test images."""
    return write_dataset(tmp_path_factory.mktemp("idx"))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory, tiny_data_dir: Path) -> Path:
    """A real SavedModel, trained for one epoch on synthetic data by the training module."""
    from training.pipeline import run
    from training.train import TrainConfig

    output = tmp_path_factory.mktemp("models") / "fashion_mnist"
    run(TrainConfig(model="dfn", epochs=1, batch_size=64), tiny_data_dir, output, None, None)
    return output


@pytest.fixture
def app(tiny_model_dir: Path):
    """A fresh app per test, its model loaded."""
    from service import create_app

    app = create_app({"model_dir": tiny_model_dir})
    app.config["TESTING"] = True
    assert app.extensions["versions"].wait_ready(60), app.extensions["versions"].error
    yield app
    app.extensions["versions"].stop()  # end its rescans of the model folder


@pytest.fixture
def client(app):
    """Flask's test client for `app`."""
    return app.test_client()


def free_port() -> int:
    """Ask the kernel for a free TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class LiveServer(BackgroundProcess):
    """A gunicorn process started through bin/serve, the way `make serve` starts it."""

    def __init__(self, model_dir: Path, log_path: Path, **env: str) -> None:
        super().__init__(log_path)
        self.port = free_port()
        self.metrics_port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.metrics_dir = log_path.parent / f"metrics-{self.port}"
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "FMNIST_METRICS_PORT": str(self.metrics_port),
            "FMNIST_METRICS_HOST": "127.0.0.1",
            "FMNIST_MODEL_DIR": str(model_dir),
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            "PYTHON": str(ROOT / ".venv" / "bin" / "python")
            if (ROOT / ".venv").exists()
            else "python",
            **env,
        }

    def start(self, timeout: float = 90) -> LiveServer:
        """Start gunicorn and wait until /readyz answers 200."""
        self.launch([str(ROOT / "bin" / "serve")], env=self.env)
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 90) -> None:
        """Poll /readyz until it answers 200 and every worker serves, or fail with the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process is not None and self.process.poll() is None, self.logs()
            try:
                ready = requests.get(self.url + "/readyz", timeout=2).status_code == 200
                if ready and self.workers_serving() >= int(self.env.get("FMNIST_WORKERS", "2")):
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"server not ready in {timeout}s:\n{self.logs()}")

    def workers_serving(self) -> int:
        """How many workers have logged their model ready: /readyz only reaches one of them."""
        return len(
            re.findall(r"model \S+ version \d+ ready in", self.log_path.read_text(errors="replace"))
        )


@pytest.fixture(scope="session")
def live_server(
    tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LiveServer]:
    """One gunicorn server with two workers, serving the tiny model, for the session."""
    server = LiveServer(
        tiny_model_dir, tmp_path_factory.mktemp("server") / "gunicorn.log", FMNIST_WORKERS="2"
    )
    server.start()
    yield server
    server.stop()


@pytest.fixture
def fresh_live_server(tiny_model_dir: Path, tmp_path: Path) -> Iterator[LiveServer]:
    """A gunicorn server with two workers for one test, which may disturb it (kill workers)."""
    server = LiveServer(tiny_model_dir, tmp_path / "gunicorn.log", FMNIST_WORKERS="2")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def prometheus(
    live_server: LiveServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[PrometheusServer]:
    """A real Prometheus server (the shipped configuration) scraping live_server every second."""
    binary = require_program("prometheus")
    server = PrometheusServer(
        binary,
        [f"127.0.0.1:{live_server.metrics_port}"],
        tmp_path_factory.mktemp("prometheus"),
        free_port(),
    )
    server.start()
    yield server
    server.stop()
