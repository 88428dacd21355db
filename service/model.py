"""The model behind one small class: find the versions, load and warm them up, predict.

Which versions are served follows TensorFlow Serving's model version policy (latest, all, or a
list), and, like its file-system polling, a background thread rescans the model folder so a new
version folder is served without a restart and a broken one never replaces a working one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from service import metrics
from service.batching import BatchingConfig, BatchingPredictor
from service.errors import ModelNotReady, ModelVersionNotFound
from service.runtime import Runtime, load_runtime

log = logging.getLogger(__name__)

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
    batcher: BatchingPredictor | None = field(default=None, init=False)

    @property
    def class_names(self) -> list[str]:
        """Class names in label order."""
        return self.metadata["class_names"]

    @property
    def signature_name(self) -> str:
        """Name of the serving signature."""
        return self.metadata["signature_name"]

    @property
    def input_name(self) -> str:
        """Name of the signature's input tensor, as written at export."""
        return self.metadata["input"]["name"]

    @property
    def output_name(self) -> str:
        """Name of the signature's output tensor, as written at export."""
        return self.metadata["output"]["name"]

    @property
    def signature_def(self) -> dict[str, Any]:
        """The serving SignatureDef as saved_model.pb holds it, in protobuf's JSON mapping."""
        return self.runtime.signature_def

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Return (N, 10) float32 probabilities for uint8 images (N, 28, 28): one model call."""
        started = time.perf_counter()
        probabilities = self.runtime(images)
        metrics.INFERENCE_LATENCY.observe(time.perf_counter() - started)
        metrics.BATCH_SIZE.observe(len(images))
        return probabilities

    def classify(self, images: np.ndarray) -> np.ndarray:
        """Predict through the batcher when there is one (sharing calls with other requests)."""
        return self.batcher.predict(images) if self.batcher else self.predict(images)


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


def load_folder(path: Path, version: int, runtime: str = "litert", threads: int = 1) -> LoadedModel:
    """Load one version folder's metadata and its serving signature into `runtime`."""
    started = time.perf_counter()
    metadata = json.loads((path / "metadata.json").read_text())
    names = (metadata["signature_name"], metadata["input"]["name"], metadata["output"]["name"])
    loaded = load_runtime(runtime, path, *names, threads)
    return LoadedModel(version, path, metadata, loaded, time.perf_counter() - started)


def load_version(
    model_dir: Path, version: int, runtime: str = "litert", threads: int = 1
) -> LoadedModel:
    """Load one version's serving signature and metadata."""
    path = version_folders(model_dir).get(version, model_dir / str(version))
    return load_folder(path, version, runtime, threads)


def fingerprint(path: Path) -> tuple[int, int, int]:
    """Summarise a folder's files (count, bytes, newest mtime) to notice when it changes."""
    count = size = newest = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                stat = os.stat(os.path.join(folder, name))
            except OSError:  # removed while we looked: the next scan sees the change
                continue
            count, size, newest = count + 1, size + stat.st_size, max(newest, stat.st_mtime_ns)
    return count, size, newest


@dataclass(frozen=True)
class VersionPolicy:
    """Which present versions to serve, after TensorFlow Serving's model_version_policy."""

    kind: Literal["latest", "all", "specific"]
    versions: frozenset[int] = frozenset()

    @classmethod
    def parse(cls, text: str) -> VersionPolicy:
        """Read "latest" (the newest version that loads), "all", or a comma list like "1,3"."""
        value = text.strip().lower()
        if value in ("latest", "all"):
            return cls(value)  # type: ignore[arg-type]
        parts = [part.strip() for part in value.split(",")]
        if not all(VERSION_FOLDER.fullmatch(part) for part in parts):
            raise ValueError(
                f'FMNIST_MODEL_VERSIONS must be "latest", "all" or a comma list of integers; '
                f"got {text!r}"
            )
        return cls("specific", frozenset(int(part) for part in parts))

    def candidates(self, present: list[int]) -> list[int]:
        """The present versions this policy may serve, newest first."""
        wanted = present if self.kind != "specific" else [v for v in present if v in self.versions]
        return sorted(wanted, reverse=True)


@dataclass(frozen=True)
class VersionFailure:
    """Why a version folder did not load, and what the folder looked like then."""

    fingerprint: tuple[int, int, int]
    message: str


class Predictor:
    """Serves the model versions the policy picks, rescanning the folder in the background."""

    def __init__(
        self,
        model_dir: Path,
        warmup: bool = True,
        tf_threads: int = 1,
        versions: str = "latest",
        poll_seconds: float = 0.0,
        *,
        name: str = "fashion_mnist",
        batching: BatchingConfig | None = None,
        runtime: str = "litert",
    ) -> None:
        self.model_dir = model_dir
        self.name = name
        self.batching = batching
        self.warmup = warmup
        self.tf_threads = tf_threads
        self.runtime = runtime
        self.policy = VersionPolicy.parse(versions)
        self.poll_seconds = poll_seconds
        self.error: str | None = None
        self.failures: dict[int, VersionFailure] = {}
        self._served: dict[int, LoadedModel] = {}
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def start(self) -> None:
        """Begin loading on a background thread so liveness answers at once."""
        threading.Thread(target=self._run, name="model-loader", daemon=True).start()

    def stop(self) -> None:
        """End the background rescans and drain every batching queue (at worker exit)."""
        self._stop.set()
        for model in self._served.values():
            if model.batcher is not None:
                model.batcher.close()

    def _run(self) -> None:
        """Load what the policy wants, then rescan every poll interval."""
        self.refresh()
        while self.poll_seconds > 0 and not self._stop.wait(self.poll_seconds):
            self.refresh()

    def refresh(self) -> None:
        """Scan the folder once: load newly wanted versions, retire unwanted ones, keep serving."""
        with self._lock:
            try:
                self._reconcile(version_folders(self.model_dir))
            except Exception:  # noqa: BLE001 - a failed scan must not end the poller
                log.exception("scanning %s failed; serving what was served", self.model_dir)

    def _reconcile(self, folders: dict[int, Path]) -> None:
        """Serve the policy's versions among `folders`; never swap working ones for nothing."""
        # failures is replaced, never mutated, so request threads can iterate it safely
        self.failures = {v: f for v, f in self.failures.items() if v in folders}
        served: dict[int, LoadedModel] = {}
        for version in self.policy.candidates(list(folders)):
            model = self._served.get(version) or self._try_load(version, folders[version])
            if model is not None:
                served[version] = model
                if not self._served:
                    self._publish(dict(served))  # ready as soon as the default version is
                if self.policy.kind == "latest":
                    break
        if served:
            self._publish(served)
        elif not self._served:
            self.error = self._no_version_error(folders)

    def _try_load(self, version: int, path: Path) -> LoadedModel | None:
        """Load and warm up one version; on failure log it once per folder state, return None."""
        now = fingerprint(path)
        failure = self.failures.get(version)
        if failure is not None and failure.fingerprint == now:
            return None  # unchanged since it failed: do not retry every poll
        try:
            model = load_folder(path, version, self.runtime, self.tf_threads)
            if self.warmup:
                model.predict(np.zeros((1, SIZE, SIZE), dtype=np.uint8))
        except Exception as error:  # noqa: BLE001 - a broken version must not stop serving
            message = f"{type(error).__name__}: {error}"
            self.failures = {**self.failures, version: VersionFailure(now, message)}
            log.exception("model version %d in %s failed to load", version, path)
            return None
        self.failures = {v: f for v, f in self.failures.items() if v != version}
        if self.batching is not None:
            model.batcher = BatchingPredictor(model.predict, self.batching)
        log.info("model version %d loaded in %.2fs", version, model.load_seconds)
        return model

    def _publish(self, served: dict[int, LoadedModel]) -> None:
        """Swap in the new set of served versions (one reference swap: readers see old or new)."""
        if served.keys() != self._served.keys():
            log.info(
                "serving model %s versions %s (default %d)",
                next(iter(served.values())).metadata.get("name"),
                sorted(served),
                max(served),
            )
        self._record_metrics(served)
        self._served = served
        self.error = None
        if not self._ready.is_set():
            default = served[max(served)]
            log.info(
                "model %s version %d ready in %.2fs",
                default.metadata.get("name"),
                default.version,
                default.load_seconds,
            )
            self._ready.set()

    def _record_metrics(self, served: dict[int, LoadedModel]) -> None:
        """Mark served versions 1 and retired ones 0 (remove() would linger in multiprocess
        files), and record how long the default version took to load."""
        for version in self._served.keys() - served.keys():
            metrics.MODEL_INFO.labels(self.name, str(version)).set(0)
            if self._served[version].batcher is not None:
                self._served[version].batcher.close()  # serves what it queued, then stops
        for version in served:
            metrics.MODEL_INFO.labels(self.name, str(version)).set(1)
        metrics.MODEL_LOAD_SECONDS.set(served[max(served)].load_seconds)

    def _no_version_error(self, folders: dict[int, Path]) -> str:
        """Explain why nothing is served yet, for /readyz."""
        if not self.policy.candidates(list(folders)):
            return f"FileNotFoundError: no model version under {self.model_dir} to serve"
        newest = max(self.failures)
        return f"version {newest}: {self.failures[newest].message}"

    def wait_ready(self, timeout: float) -> bool:
        """Block until a version is ready or `timeout` seconds pass; return readiness."""
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        """Whether a version is loaded and warmed up."""
        return self._ready.is_set()

    @property
    def served(self) -> dict[int, LoadedModel]:
        """The versions served now, by number."""
        return self._served

    @property
    def model(self) -> LoadedModel | None:
        """The default version (the newest served), or None before the first load."""
        served = self._served
        return served[max(served)] if served else None

    def current(self, version: int | None = None) -> LoadedModel:
        """Return the default or the given version; raise ModelNotReady or ModelVersionNotFound."""
        served = self._served
        if not served:
            raise ModelNotReady(
                self.error or "The model is still loading.", headers={"Retry-After": "1"}
            )
        if version is None:
            return served[max(served)]
        if version not in served:
            raise ModelVersionNotFound(
                f"Version {version} is not served; served versions: "
                f"{', '.join(map(str, sorted(served)))}."
            )
        return served[version]

    def predict(
        self, images: np.ndarray, version: int | None = None
    ) -> tuple[LoadedModel, np.ndarray]:
        """Predict a uint8 batch (N, 28, 28) with the default or given version."""
        model = self.current(version)
        return model, model.classify(images)
