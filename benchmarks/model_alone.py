"""The model alone: images per second of each runtime called in-process, one thread, at each
batch size (`make bench`'s last table; benchmarks/runtimes.py too)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.wrk import progress

MODEL_BATCHES = (1, 8, 32, 64)


def model_info(model_dir: Path) -> dict:
    """The served version's number, test accuracy and whether it runs each image twice."""
    from service.inference.model import list_versions

    version = list_versions(model_dir)[-1]
    metadata = json.loads((model_dir / str(version) / "metadata.json").read_text())
    return {
        "version": version,
        "test_accuracy": metadata["metrics"]["accuracy"],
        "mirror_average": metadata["hyperparameters"].get("mirror_average", False),
    }


def model_alone(model_dir: Path, seconds: float = 3.0, runtimes: tuple[str, ...] = ()) -> dict:
    """Images per second of each runtime (all, by default) in-process, one thread, at each
    batch size."""
    from service.inference.model import list_versions, load_version
    from service.inference.runtime import RUNTIMES

    results: dict = {}
    for runtime in runtimes or RUNTIMES:
        model = load_version(model_dir, list_versions(model_dir)[-1], runtime)
        results[runtime] = {}
        for batch in MODEL_BATCHES:
            results[runtime][str(batch)] = row = measure(model, batch, seconds)
            progress(f"model alone, {runtime}: batch {batch}: {row['images_per_s']:.0f} images/s")
    return results


def measure(model: Any, batch: int, seconds: float) -> dict[str, float]:
    """Call a loaded model on `batch` random images for `seconds`, after five calls' warm-up:
    images per second, milliseconds per call and CPU milliseconds per image."""
    images = np.random.default_rng(0).integers(0, 256, (batch, 28, 28), dtype=np.uint8)
    for _ in range(5):
        model.predict(images)
    calls, started, cpu_started = 0, time.perf_counter(), time.process_time()
    while time.perf_counter() - started < seconds:
        model.predict(images)
        calls += 1
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu_started  # every thread: TensorFlow's pools included
    return {
        "images_per_s": round(calls * batch / elapsed, 1),
        "ms_per_call": round(elapsed / calls * 1000, 3),
        "cpu_ms_per_image": round(cpu / calls / batch * 1000, 3),
    }
