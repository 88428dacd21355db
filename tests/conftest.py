"""Shared fixtures: a tiny real model, a fresh app per test, real gunicorn and Prometheus."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.server import LiveServer, free_port
from tests.idx import write_dataset
from tests.prometheus import PrometheusServer
from tests.skips import require_program

# Fixtures that start another program (gunicorn, nginx, Prometheus, a browser, podman) or train
# models of their own: every test that uses one, directly or through another fixture, is marked
# `integration`, which `make test-fast` leaves out.
INTEGRATION_FIXTURES = frozenset(
    {
        "live_server",
        "fresh_live_server",
        "prometheus",
        "trained_versions",
        "versions_server",
        "fuzzed_server",
        "make_server",
        "deadline_server",
        "stall_server",
        "shipped_server",
        "one_worker",
        "browser",
        "podman",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark the tests that use an INTEGRATION_FIXTURES fixture as `integration`."""
    for item in items:
        if INTEGRATION_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.integration)


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
    app.extensions["metric_buffer"].close()  # and its thread writing metrics


@pytest.fixture
def client(app):
    """Flask's test client for `app`."""
    return app.test_client()


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
