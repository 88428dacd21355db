"""The service with one part taken out, to measure what each part costs a loaded worker.

`make bench` starts the service with `BENCH_WITHOUT` naming parts (joined by "+") and
`benchmarks/without/` first on PYTHONPATH: its sitecustomize calls `apply()` in every process
before gunicorn imports the app. What is left out:

- model: the LiteRT call answers constant probabilities (the batcher still runs);
- decoding: every upload is the benchmark's PNG, decoded and preprocessed once at start;
- metrics: prometheus_client's counter, gauge and histogram writes do nothing;
- access_log: the access logger is disabled.

Only the benchmark uses this: nothing under service/ knows about it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

import numpy as np

SITE = Path(__file__).resolve().parent / "without"
VARIABLE = "BENCH_WITHOUT"


def _without_model() -> None:
    """Answer constant probabilities instead of calling LiteRT."""
    from service.inference import runtime

    def constant(self: runtime._Invocation, images: np.ndarray) -> np.ndarray:
        return np.full((len(images), 10), 0.1, dtype=np.float32)

    runtime._Invocation.__call__ = constant  # type: ignore[method-assign]


def _without_decoding() -> None:
    """Hand every upload the benchmark PNG's decoded image and model input."""
    from benchmarks.load import sample_png
    from service.io import uploads as inputs
    from service.io.images import decode_image
    from service.io.preprocessing import to_model_input

    image = decode_image(sample_png(), 10**8, 100.0)
    pixels = to_model_input(image)
    inputs.decode_image = lambda data, max_pixels, max_aspect_ratio: image  # type: ignore[assignment]
    inputs.to_model_input = lambda image, invert="auto": pixels  # type: ignore[assignment]


def _without_metrics() -> None:
    """Make every metric write a no-op."""
    from prometheus_client import metrics

    def nothing(self: object, *args: object, **kwargs: object) -> None:
        return None

    metrics.Counter.inc = nothing  # type: ignore[method-assign]
    metrics.Gauge.inc = metrics.Gauge.dec = metrics.Gauge.set = nothing  # type: ignore[method-assign]
    metrics.Histogram.observe = nothing  # type: ignore[method-assign]
    metrics.MetricWrapperBase.labels = lambda self, *args, **kwargs: self  # type: ignore[method-assign]


def _without_access_log() -> None:
    """Disable the access logger."""
    logging.getLogger("service.access").disabled = True


PARTS: dict[str, Callable[[], None]] = {
    "model": _without_model,
    "decoding": _without_decoding,
    "metrics": _without_metrics,
    "access_log": _without_access_log,
}


def environment(parts: tuple[str, ...]) -> dict[str, str]:
    """The environment that starts the service without `parts`."""
    root = str(SITE.parent.parent)
    return {"BENCH_WITHOUT": "+".join(parts), "PYTHONPATH": f"{SITE}{os.pathsep}{root}"}


def apply() -> None:
    """Take out the parts BENCH_WITHOUT names (called by sitecustomize at interpreter start)."""
    for name in filter(None, os.environ.get(VARIABLE, "").split("+")):
        PARTS[name]()
