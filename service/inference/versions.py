"""Which model versions are served, and changing them without dropping a request.

The version policy follows TensorFlow Serving's model_version_policy (latest, all, or a list),
and, like its file-system polling, a background thread rescans the model folder, so a new
version folder is served without a restart and a broken one never replaces a working one.

Changes preserve availability, as TensorFlow Serving's AvailabilityPreservingPolicy does: a new
version is loaded and warmed up before it is published, and publishing is one reference swap.
A retired version is only dropped from the served set: every request that already holds it
(its batching queue included) finishes on it, and it is unloaded when the last one lets go.
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from service.errors import ModelNotReady, ModelVersionNotFound
from service.inference.batching import BatchingConfig, BatchingPredictor
from service.inference.model import (
    VERSION_FOLDER,
    LoadedModel,
    load_folder,
    run_timed,
    version_folders,
)
from service.inference.runtime import ArtifactChecksumError, MissingArtifact
from service.observability import metrics
from service.settings import DEFAULT_RUNTIME

if TYPE_CHECKING:
    from service.observability.buffers import MetricBuffer

log = logging.getLogger(__name__)
# The reason label of fmnist_model_load_failures_total for the refusals the service expects.
FAILURE_REASONS: dict[type[Exception], str] = {
    MissingArtifact: "missing_artifact",
    ArtifactChecksumError: "checksum",
}


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
        if value == "latest":
            return cls("latest")
        if value == "all":
            return cls("all")
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


class ModelVersions:
    """The versions the policy picks, loaded and warmed up; rescans the folder in the background."""

    def __init__(
        self,
        model_dir: Path,
        versions: str = "latest",
        poll_seconds: float = 0.0,
        *,
        name: str = "fashion_mnist",
        warmup: bool = True,
        runtime: str = DEFAULT_RUNTIME,
        tf_threads: int = 1,
        batching: BatchingConfig | None = None,
        metric_buffer: MetricBuffer | None = None,
    ) -> None:
        self.model_dir = model_dir
        self.name = name
        self.policy = VersionPolicy.parse(versions)
        self.poll_seconds = poll_seconds
        self.warmup = warmup
        self.runtime = runtime
        self.tf_threads = tf_threads
        self.batching = batching
        self.metric_buffer = metric_buffer  # handed to each version and its batcher
        if metric_buffer is not None:
            # Every reason's series exists from the start, at 0, so increase() sees the first.
            for reason in (*FAILURE_REASONS.values(), "error"):
                metrics.MODEL_LOAD_FAILURES.labels(reason)
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
            except Exception:  # a failed scan must not end the poller
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
            model = load_folder(path, version, self.runtime, self.tf_threads, self.metric_buffer)
            if self.warmup:
                model.warm_up()
        except Exception as error:  # a broken version must not stop serving
            message = f"{type(error).__name__}: {error}"
            self.failures = {**self.failures, version: VersionFailure(now, message)}
            reason = FAILURE_REASONS.get(type(error), "error")
            if reason == "error":
                log.exception("model version %d in %s failed to load", version, path)
            else:  # a known refusal: one line saying why and what to do
                log.error("model version %d is not served: %s", version, error)
            if self.metric_buffer is not None:
                self.metric_buffer.add(metrics.MODEL_LOAD_FAILURES, (reason,), 1)
            return None
        self.failures = {v: f for v, f in self.failures.items() if v != version}
        if self.batching is not None:
            # The runtime, not the version: the queue keeps no reference back to the version.
            predict = partial(run_timed, model.runtime, self.metric_buffer)
            model.batcher = BatchingPredictor(predict, self.batching, self.metric_buffer)
        weakref.finalize(model, log.info, "model version %d unloaded", version)
        log.info("model version %d loaded in %.2fs", version, model.load_seconds)
        return model

    def _publish(self, served: dict[int, LoadedModel]) -> None:
        """Swap in the new set of served versions (one reference swap: readers see old or new).

        Retired versions are not closed: a request that took one before the swap, queued or
        about to queue, is answered by it; it is freed when the last such request ends.
        """
        retired = self._served.keys() - served.keys()
        changed = served.keys() != self._served.keys()
        self._served = served
        self.error = None
        if changed:
            log.info(
                "serving model %s versions %s (default %d)",
                next(iter(served.values())).metadata.get("name"),
                sorted(served),
                max(served),
            )
        self._record_metrics(served, retired)
        if not self._ready.is_set():
            default = served[max(served)]
            log.info(
                "model %s version %d ready in %.2fs",
                default.metadata.get("name"),
                default.version,
                default.load_seconds,
            )
            self._ready.set()

    def _record_metrics(self, served: dict[int, LoadedModel], retired: set[int]) -> None:
        """Mark served versions 1 and retired ones 0 (remove() would linger in multiprocess
        files), and record how long the default version took to load."""
        for version in retired:
            metrics.MODEL_INFO.labels(self.name, str(version)).set(0)
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
            raise ModelVersionNotFound(version, served)
        return served[version]
