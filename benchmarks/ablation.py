"""The service with parts taken out, to measure what each part costs a loaded worker.

`make bench` serves `benchmarks.ablation:create_app()` (APP) under the service's gunicorn
settings, `BENCH_WITHOUT` naming the parts to take out, joined by "+". Each goes through one
seam, and tests/test_ablation.py checks that it removes what it claims:

- model: every model version's runtime answers constant probabilities (the batcher, its timing
  and metrics still run): the app is built with `service.inference.model.load_runtime`, the
  function every version's runtime comes from, wrapped;
- decoding: every upload is the benchmark's PNG, decoded and preprocessed once at start:
  service.io.uploads' `decode_image` and `to_model_input`, which it calls per image, are
  replaced;
- metrics: the app's MetricBuffer (`app.extensions["metric_buffer"]`) drops every update: its
  `queue_increment` and `queue_observation`, the two calls a request's updates make, do nothing;
- access_log: the `service.access` logger is disabled.

Only the benchmark uses this: nothing under service/ knows about it.
"""

from __future__ import annotations

import logging
import os
from typing import TYPE_CHECKING, Any

import numpy as np

from benchmarks.wrk import sample_png

if TYPE_CHECKING:
    from flask import Flask

    from service.inference.runtime import Runtime

APP = "benchmarks.ablation:create_app()"
VARIABLE = "BENCH_WITHOUT"
PARTS = ("model", "decoding", "metrics", "access_log")
ACCESS_LOGGER = "service.access"


def environment(parts: tuple[str, ...]) -> dict[str, str]:
    """The environment that has APP take out `parts`."""
    return {VARIABLE: "+".join(parts)}


def create_app(
    config: dict[str, Any] | None = None, without: tuple[str, ...] | None = None
) -> Flask:
    """The service's app without the parts `without` names (by default, those BENCH_WITHOUT
    names)."""
    from service import create_app as service_app

    if without is None:
        without = tuple(filter(None, os.environ.get(VARIABLE, "").split("+")))
    unknown = set(without) - set(PARTS)
    if unknown:
        raise ValueError(f"{VARIABLE}: unknown parts {sorted(unknown)}; choose from {PARTS}")
    if "model" in without:
        answer_constants()  # before the app starts loading its versions
    if "decoding" in without:
        decode_once()
    app = service_app(config)
    if "metrics" in without:
        drop_metric_updates(app)
    if "access_log" in without:
        logging.getLogger(ACCESS_LOGGER).disabled = True
    return app


class ConstantRuntime:
    """A loaded runtime's stand-in: the same signature, 0.1 for every class, no network run."""

    def __init__(self, loaded: Runtime) -> None:
        self.signature_def = loaded.signature_def

    def __call__(self, images: np.ndarray) -> np.ndarray:
        return np.full((len(images), 10), 0.1, dtype=np.float32)


def answer_constants() -> None:
    """Have every runtime loaded from now on in this process answer constants."""
    from service.inference import model

    load = model.load_runtime

    def constant(*args: Any, **kwargs: Any) -> ConstantRuntime:
        return ConstantRuntime(load(*args, **kwargs))

    model.load_runtime = constant  # type: ignore[assignment]


def decode_once() -> None:
    """Hand every upload the benchmark PNG's decoded image and model input."""
    from service.io import uploads
    from service.io.images import decode_image
    from service.io.preprocessing import to_model_input

    image = decode_image(sample_png(), 10**8, 100.0)
    pixels = to_model_input(image)
    uploads.decode_image = lambda *args, **kwargs: image  # type: ignore[assignment]
    uploads.to_model_input = lambda *args, **kwargs: pixels  # type: ignore[assignment]


def drop_metric_updates(app: Flask) -> None:
    """Make the app's metric buffer discard every update it is handed."""
    buffer = app.extensions["metric_buffer"]
    buffer.queue_increment = buffer.queue_observation = discard


def discard(update: object) -> None:
    """Take a metric update and do nothing with it."""
