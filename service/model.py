"""The model behind one small class: find the newest version, load it, warm it up, predict."""

from __future__ import annotations

import json
import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from service import metrics
from service.errors import ModelNotReady

log = logging.getLogger(__name__)

SIZE = 28


@dataclass
class LoadedModel:
    """One loaded SavedModel version and what its metadata says about it."""

    version: int
    path: Path
    metadata: dict[str, Any]
    saved_model: Any
    load_seconds: float
    signature: Any = field(init=False)
    input_name: str = field(init=False)
    output_name: str = field(init=False)

    def __post_init__(self) -> None:
        """Find the serving signature and its tensor names, as written at export."""
        self.signature = self.saved_model.signatures[self.metadata["signature_name"]]
        self.input_name = self.metadata["input"]["name"]
        self.output_name = self.metadata["output"]["name"]

    @property
    def class_names(self) -> list[str]:
        """Class names in label order."""
        return self.metadata["class_names"]

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Return (N, 10) float32 probabilities for uint8 images (N, 28, 28)."""
        import tensorflow as tf

        outputs = self.signature(**{self.input_name: tf.constant(images, dtype=tf.uint8)})
        return outputs[self.output_name].numpy()


def list_versions(model_dir: Path) -> list[int]:
    """Return the integer version folders under `model_dir` that hold a SavedModel, ascending."""
    if not model_dir.is_dir():
        return []
    return sorted(
        int(path.name)
        for path in model_dir.iterdir()
        if path.name.isdigit() and (path / "saved_model.pb").is_file()
    )


def load_version(model_dir: Path, version: int) -> LoadedModel:
    """Load one version's serving signature and metadata."""
    import tensorflow as tf

    path = model_dir / str(version)
    started = time.perf_counter()
    metadata = json.loads((path / "metadata.json").read_text())
    saved_model = tf.saved_model.load(str(path))
    return LoadedModel(version, path, metadata, saved_model, time.perf_counter() - started)


def configure_threads(threads: int) -> None:
    """Size TensorFlow's thread pools, unless TensorFlow already started in this process."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised: a second app in one process (tests)
        log.info("TensorFlow thread pools already set; keeping them")


class Predictor:
    """Loads the newest model version in the background and answers predictions once ready."""

    def __init__(
        self, model_dir: Path, warmup: bool = True, tf_threads: int = 1, *, name: str
    ) -> None:
        self.model_dir = model_dir
        self.name = name
        self.warmup = warmup
        self.tf_threads = tf_threads
        self.model: LoadedModel | None = None
        self.error: str | None = None
        self._ready = threading.Event()

    def start(self) -> None:
        """Begin loading on a background thread so liveness answers at once."""
        threading.Thread(target=self._load, name="model-loader", daemon=True).start()

    def _load(self) -> None:
        """Configure TensorFlow, load the newest version, warm it up, then mark ready."""
        try:
            configure_threads(self.tf_threads)
            versions = list_versions(self.model_dir)
            if not versions:
                raise FileNotFoundError(f"no model version under {self.model_dir}")
            model = load_version(self.model_dir, versions[-1])
            if self.warmup:
                model.predict(np.zeros((1, SIZE, SIZE), dtype=np.uint8))
            metrics.MODEL_LOAD_SECONDS.set(model.load_seconds)
            metrics.MODEL_INFO.labels(self.name, str(model.version)).set(1)
            self.model = model
            self._ready.set()
            log.info(
                "model %s version %d ready in %.2fs",
                model.metadata.get("name"),
                model.version,
                model.load_seconds,
            )
        except Exception as error:  # noqa: BLE001 - reported through /readyz, never raised
            self.error = f"{type(error).__name__}: {error}"
            log.exception("model load failed")

    def wait_ready(self, timeout: float) -> bool:
        """Block until the model is ready or `timeout` seconds pass; return readiness."""
        return self._ready.wait(timeout)

    @property
    def ready(self) -> bool:
        """Whether a model is loaded and warmed up."""
        return self._ready.is_set()

    def current(self) -> LoadedModel:
        """Return the loaded model, or raise ModelNotReady."""
        if self.model is None:
            raise ModelNotReady(
                self.error or "The model is still loading.", headers={"Retry-After": "1"}
            )
        return self.model

    def predict(self, images: np.ndarray) -> tuple[LoadedModel, np.ndarray]:
        """Predict a batch with the current model; return the model used and probabilities."""
        model = self.current()
        return model, model.predict(images)
