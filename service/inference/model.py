"""One loaded model version: its folder, metadata and runtime; finding and loading folders.

Which versions are served, and when they change, is service/inference/versions.py's job; how
requests reach a version (the deadline, the batcher) is service/inference/dataplane.py's.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from service.inference import convert
from service.inference.runtime import Runtime, load_runtime
from service.observability import metrics
from service.settings import DEFAULT_RUNTIME

if TYPE_CHECKING:
    from service.inference.batching import BatchingPredictor
    from service.observability.buffers import MetricBuffer

SIZE = 28
VERSION_FOLDER = re.compile(r"[0-9]+")  # ASCII digits only: str.isdigit() also takes "²"


@dataclass
class LoadedModel:
    """One loaded model version, the runtime that runs it, and what its metadata says."""

    version: int
    path: Path
    metadata: dict[str, Any]
    runtime: Runtime
    load_seconds: float
    metric_buffer: MetricBuffer | None = None
    """Where its model calls are timed and counted (the app's); None: not recorded."""
    batcher: BatchingPredictor | None = field(default=None, init=False)
    """This version's batching queue, set when it is served with batching on."""

    @property
    def class_names(self) -> list[str]:
        """Class names in label order."""
        names: list[str] = self.metadata["class_names"]
        return names

    @property
    def signature_name(self) -> str:
        """Name of the serving signature."""
        name: str = self.metadata["signature_name"]
        return name

    @property
    def input_name(self) -> str:
        """Name of the signature's input tensor, as written at export."""
        name: str = self.metadata["input"]["name"]
        return name

    @property
    def output_name(self) -> str:
        """Name of the signature's output tensor, as written at export."""
        name: str = self.metadata["output"]["name"]
        return name

    @property
    def signature_def(self) -> dict[str, Any]:
        """The serving SignatureDef as saved_model.pb holds it, in protobuf's JSON mapping."""
        return self.runtime.signature_def

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Return (N, 10) float32 probabilities for uint8 images (N, 28, 28): one model call."""
        return run_timed(self.runtime, self.metric_buffer, images)

    def warm_up(self) -> None:
        """Run one inference, so the first request pays no start-up cost of the runtime."""
        self.predict(np.zeros((1, SIZE, SIZE), dtype=np.uint8))


def run_timed(
    runtime: Runtime, metric_buffer: MetricBuffer | None, images: np.ndarray
) -> np.ndarray:
    """Call the runtime once, recording the call's duration and batch size in `metric_buffer`.

    A function of the runtime, not a method of the version: a batcher holding it keeps no
    reference back to the version, so a retired version is freed as soon as its last request
    lets go of it (service/inference/versions.py).
    """
    started = time.perf_counter()
    probabilities = runtime(images)
    if metric_buffer is not None:
        metric_buffer.observe(metrics.INFERENCE_LATENCY, (), time.perf_counter() - started)
        metric_buffer.observe(metrics.BATCH_SIZE, (), len(images))
    return probabilities


def version_folders(model_dir: Path) -> dict[int, Path]:
    """Map each integer version under `model_dir` that holds a SavedModel to its folder."""
    if not model_dir.is_dir():
        return {}
    return {
        int(path.name): path
        for path in model_dir.iterdir()
        if VERSION_FOLDER.fullmatch(path.name) and (path / "saved_model.pb").is_file()
    }


def list_versions(model_dir: Path) -> list[int]:
    """Return the integer version folders under `model_dir` that hold a SavedModel, ascending."""
    return sorted(version_folders(model_dir))


def load_folder(
    path: Path,
    version: int,
    runtime: str = DEFAULT_RUNTIME,
    threads: int = 1,
    metric_buffer: MetricBuffer | None = None,
) -> LoadedModel:
    """Load one version folder's metadata and its serving signature into `runtime`; its model
    calls are recorded in `metric_buffer`."""
    started = time.perf_counter()
    metadata = json.loads((path / "metadata.json").read_text())
    names = (metadata["signature_name"], metadata["input"]["name"], metadata["output"]["name"])
    artifacts = metadata.get(convert.METADATA_KEY, {})  # the exported LiteRT files
    loaded = load_runtime(runtime, path, *names, threads, artifacts)
    seconds = time.perf_counter() - started
    return LoadedModel(version, path, metadata, loaded, seconds, metric_buffer)


def load_version(
    model_dir: Path, version: int, runtime: str = DEFAULT_RUNTIME, threads: int = 1
) -> LoadedModel:
    """Load one version's serving signature and metadata."""
    path = version_folders(model_dir).get(version, model_dir / str(version))
    return load_folder(path, version, runtime, threads)
