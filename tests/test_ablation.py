"""benchmarks/ablation.py: each part it takes out is gone from the app it builds, and present
in the app built with nothing taken out."""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from flask import Flask
from prometheus_client import REGISTRY

from benchmarks import ablation
from benchmarks.wrk import sample_png
from harness.images import encode, garment
from service.inference import model
from service.io import uploads

REQUESTS = "fmnist_http_requests_total"
PREDICT_200 = {"endpoint": "/predict", "method": "POST", "status": "200"}
WATCHED = (  # a request's updates: counters and histograms, written from three modules
    (REQUESTS, PREDICT_200),
    ("fmnist_http_request_duration_seconds_count", {"endpoint": "/predict"}),
    ("fmnist_inference_duration_seconds_count", {}),
    ("fmnist_prediction_confidence_ratio_count", {}),
)


@pytest.fixture
def build(tiny_model_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Flask]]:
    """Build ablation apps of the tiny model; undo the process-wide seams afterwards."""
    for module, name in ((model, "load_runtime"), (uploads, "decode_image")):
        monkeypatch.setattr(module, name, getattr(module, name))
    monkeypatch.setattr(uploads, "to_model_input", uploads.to_model_input)
    monkeypatch.setattr(logging.getLogger(ablation.ACCESS_LOGGER), "disabled", False)
    built: list[Flask] = []

    def build_app(*without: str) -> Flask:
        app = ablation.create_app({"model_dir": tiny_model_dir}, without=without)
        app.config["TESTING"] = True
        assert app.extensions["versions"].wait_ready(60), app.extensions["versions"].error
        built.append(app)
        return app

    yield build_app
    for app in built:
        app.extensions["versions"].stop()
        app.extensions["metric_buffer"].close()


def probabilities(app: Flask, png: bytes) -> np.ndarray:
    """The probabilities /predict answers for one uploaded PNG, in class order."""
    files = {"image": (io.BytesIO(png), "a.png")}
    response = app.test_client().post("/predict", data=files)
    assert response.status_code == 200, response.json
    return np.array(list(response.json["predictions"][0]["probabilities"].values()))


def samples(app: Flask) -> list[float]:
    """The watched samples of this process's registry, once the app's updates are written."""
    app.extensions["metric_buffer"].flush()
    return [REGISTRY.get_sample_value(name, labels) or 0.0 for name, labels in WATCHED]


def test_the_parts_are_those_the_benchmark_names():
    assert set(ablation.PARTS) == {"model", "decoding", "metrics", "access_log"}
    assert ablation.environment(("model", "metrics")) == {"BENCH_WITHOUT": "model+metrics"}
    with pytest.raises(ValueError, match="unknown parts"):
        ablation.create_app(without=("tracing",))


def test_without_the_model_every_answer_is_constant(build):
    images = [encode(garment(label)) for label in (1, 7)]
    kept = [probabilities(build(), png) for png in images]
    assert not np.allclose(kept[0], kept[1], atol=1e-3), "the real model tells them apart"
    app = build("model")
    for png in images:
        assert np.array_equal(probabilities(app, png), np.full(10, 0.1, np.float32))


def test_without_decoding_any_upload_gets_the_benchmark_images_answer(build):
    other = encode(garment(7))
    kept = build()
    assert not np.allclose(probabilities(kept, other), probabilities(kept, sample_png()), atol=1e-3)
    app = build("decoding")
    assert np.array_equal(probabilities(app, other), probabilities(app, sample_png()))


@pytest.mark.parametrize("without, counted", [((), 2), (("metrics",), 0)])
def test_without_metrics_requests_write_no_sample(build, without, counted):
    app = build(*without)
    before = samples(app)
    for _ in range(2):
        probabilities(app, encode(garment()))
    after = samples(app)
    assert [a - b for a, b in zip(after, before, strict=True)] == [counted] * len(WATCHED)


@pytest.mark.parametrize("without, lines", [((), 1), (("access_log",), 0)])
def test_without_the_access_log_no_line_is_written(build, caplog, without, lines):
    app = build(*without)
    caplog.set_level("INFO", logger=ablation.ACCESS_LOGGER)
    assert app.test_client().get("/healthz").status_code == 200
    assert [r.name for r in caplog.records].count(ablation.ACCESS_LOGGER) == lines
