"""How a loaded SavedModel version is run: LiteRT, with int8 weights (the default) or float
ones, or TensorFlow's own signature.

The SavedModel stays the artifact that training writes and that the /v1 and /v2 metadata
describe. Beside it, training's export writes each LiteRT runtime's flatbuffer and the
SignatureDef, with their checksums in metadata.json (service/inference/convert.py names them);
the LiteRT runtimes load those, checked, and run them with LiteRT's interpreter and its XNNPACK
kernels, so a worker needs no TensorFlow. Only where TensorFlow is installed (development) is a
version folder without them converted when it loads (`tf.lite.TFLiteConverter`, in a child
process); elsewhere such a version is not served (MissingArtifact). For this model a call costs a
fraction of the SavedModel signature's, whose Python call machinery weighs more than the
network at small batches, and the worker never imports TensorFlow (docs/benchmarks.md).
"litert" and "savedmodel" answer the same probabilities within 1e-5; "litert-int8" quantizes
the weights to 8 bits, which makes the network cheaper per image and moves probabilities
slightly, with the same test accuracy within 0.001 (docs/runtimes.md measures both;
tests/test_runtime.py, tests/test_shipped_model.py).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import queue
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from service.inference import convert
from service.settings import RUNTIMES

log = logging.getLogger(__name__)

CONVERT_TIMEOUT = 300  # seconds; converting the shipped model takes a few
PROJECT_ROOT = Path(__file__).resolve().parents[2]


class MissingArtifact(Exception):
    """A version folder lacks the serving artifact its runtime needs, and this process has no
    TensorFlow to convert the SavedModel itself (the image has none)."""

    def __init__(self, path: Path, artifact: str) -> None:
        super().__init__(
            f"{path} has no {artifact} and TensorFlow is not installed to convert the "
            f"SavedModel; add it with `python -m training --from-version {path} "
            "--serving-artifacts` where TensorFlow is installed"
        )


class ArtifactChecksumError(Exception):
    """A serving artifact's bytes differ from the checksum its version's metadata lists."""

    def __init__(self, path: Path, artifact: str) -> None:
        super().__init__(f"{path / artifact} does not match its SHA-256 in metadata.json")


class Runtime(Protocol):
    """Runs one model version: uint8 images (N, 28, 28) in, float32 probabilities (N, 10) out."""

    signature_def: dict[str, Any]
    """The serving SignatureDef as saved_model.pb holds it, in protobuf's JSON mapping."""

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Return the probabilities of a batch; safe to call from several threads at once."""
        ...


class SavedModelRuntime:
    """The SavedModel's serving signature, called through TensorFlow."""

    def __init__(
        self, path: Path, signature: str, input_name: str, output_name: str, threads: int
    ) -> None:
        import tensorflow as tf

        configure_threads(threads)
        self._saved_model = tf.saved_model.load(str(path))  # keeps the signature's variables
        self._signature = self._saved_model.signatures[signature]
        self._input_name, self._output_name = input_name, output_name
        self.signature_def = convert.signature_def(path, signature)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """One call of the signature."""
        import tensorflow as tf

        outputs = self._signature(**{self._input_name: tf.constant(images, dtype=tf.uint8)})
        probabilities: np.ndarray = outputs[self._output_name].numpy()
        return probabilities


class LiteRTRuntime:
    """The version's LiteRT flatbuffer (`int8`: with 8-bit weights), run by LiteRT's
    interpreter (XNNPACK): the exported artifact, or the SavedModel converted at load.

    An interpreter serves one call at a time, so calls take one from a pool and give it
    back; the pool grows to the number of calls that ever ran at once (a worker's threads).
    Each call releases the GIL while the network runs.
    """

    def __init__(
        self,
        path: Path,
        signature: str,
        input_name: str,
        output_name: str,
        threads: int,
        int8: bool = False,
        artifacts: Mapping[str, str] | None = None,
    ) -> None:
        self.int8 = int8
        self._flatbuffer, self.signature_def = litert_files(path, signature, int8, artifacts or {})
        self._signature, self._threads = signature, threads
        self._input_name, self._output_name = input_name, output_name
        self._idle: queue.SimpleQueue[_Invocation] = queue.SimpleQueue()
        self._idle.put(self._new_runner())  # fail at load, not at the first request

    def _new_runner(self) -> _Invocation:
        """A new interpreter, ready to run the serving signature."""
        return _Invocation(
            self._flatbuffer, self._signature, self._input_name, self._output_name, self._threads
        )

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """One invocation, on an idle interpreter (resized to the batch when it differs)."""
        try:
            runner = self._idle.get_nowait()
        except queue.Empty:
            runner = self._new_runner()
        try:
            return runner(images)
        finally:
            self._idle.put(runner)


class _Invocation:
    """One LiteRT interpreter and the batch size its tensors are allocated for.

    Its own calls instead of LiteRT's SignatureRunner, which resizes and reallocates the input
    on every call: this skips that while the batch size is unchanged (docs/request-path.md,
    "LiteRT call", compares the two).
    """

    def __init__(
        self, flatbuffer: bytes, signature: str, input_name: str, output_name: str, threads: int
    ) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_content=flatbuffer, num_threads=threads)
        runner = self.interpreter.get_signature_runner(signature)
        self.input = runner.get_input_details()[input_name]["index"]
        self.output = runner.get_output_details()[output_name]["index"]
        self.batch = 0

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for a uint8 batch (a copy: the interpreter's buffer is reused)."""
        if len(images) != self.batch:
            self.interpreter.resize_tensor_input(self.input, images.shape)
            self.interpreter.allocate_tensors()
            self.batch = len(images)
        self.interpreter.set_tensor(self.input, images)
        self.interpreter.invoke()
        probabilities: np.ndarray = self.interpreter.get_tensor(self.output)
        return probabilities


def load_runtime(
    kind: str,
    path: Path,
    signature: str,
    input_name: str,
    output_name: str,
    threads: int,
    artifacts: Mapping[str, str] | None = None,
) -> Runtime:
    """Load a version folder for the runtime `kind` (one of RUNTIMES); `artifacts` are the
    serving artifacts its metadata lists, {path: SHA-256}."""
    if kind in ("litert", "litert-int8"):
        int8 = kind == "litert-int8"
        return LiteRTRuntime(path, signature, input_name, output_name, threads, int8, artifacts)
    if kind == "savedmodel":
        return SavedModelRuntime(path, signature, input_name, output_name, threads)
    raise ValueError(f"unknown runtime {kind!r}; choose one of {', '.join(RUNTIMES)}")


def litert_files(
    path: Path, signature: str, int8: bool, listed: Mapping[str, str]
) -> tuple[bytes, dict[str, Any]]:
    """A version's LiteRT flatbuffer and SignatureDef: its exported artifacts (`listed` by its
    metadata with their checksums), checked; else, where TensorFlow is installed, a conversion
    of its SavedModel."""
    artifact = convert.ARTIFACTS["litert-int8" if int8 else "litert"]
    exported = (artifact, convert.SIGNATURE_ARTIFACT)
    if all(name in listed and (path / name).is_file() for name in exported):
        flatbuffer, definition = (verified(path, name, listed[name]) for name in exported)
        return flatbuffer, json.loads(definition)
    if not tensorflow_installed():
        raise MissingArtifact(path, artifact)
    folder = converted(path, signature, int8)
    definition = json.loads((folder / convert.SIGNATURE_FILE).read_text())
    return (folder / convert.MODEL_FILE).read_bytes(), definition


def tensorflow_installed() -> bool:
    """Whether this Python can import TensorFlow, without importing it (seconds)."""
    try:
        return importlib.util.find_spec("tensorflow") is not None
    except (ImportError, ValueError):  # ValueError: blocked in sys.modules (set to None)
        return False


def verified(path: Path, artifact: str, sha256: str) -> bytes:
    """An artifact's bytes, once they match the SHA-256 its version's metadata lists."""
    data = (path / artifact).read_bytes()
    if hashlib.sha256(data).hexdigest() != sha256:
        raise ArtifactChecksumError(path, artifact)
    return data


def configure_threads(threads: int) -> None:
    """Size TensorFlow's thread pools, unless TensorFlow already started in this process."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # already initialised: a second model or app in one process
        log.info("TensorFlow thread pools already set; keeping them")


def converted(path: Path, signature: str, int8: bool = False) -> Path:
    """The folder of a version's LiteRT conversion, converting it in a child process if no
    worker has yet (conversions are kept by the content of the version folder)."""
    cache = conversion_cache()
    folder = cache / (content_key(path, signature) + ("-int8" if int8 else ""))
    if (folder / convert.MODEL_FILE).is_file():
        return folder
    result = subprocess.run(
        [sys.executable, "-m", "service.inference.convert", str(path), str(folder), signature]
        + (["int8"] if int8 else []),
        cwd=PROJECT_ROOT,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2")},
        capture_output=True,
        text=True,
        timeout=CONVERT_TIMEOUT,
    )
    if result.returncode != 0:
        lines = result.stderr.strip().splitlines() or [f"exit status {result.returncode}"]
        raise RuntimeError(f"converting {path} for LiteRT failed: {lines[-1]}")
    return folder


def content_key(path: Path, signature: str) -> str:
    """A digest of every file of a version folder (names and bytes) and the signature."""
    digest = hashlib.sha256(signature.encode())
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + b"\0")
        digest.update(file.read_bytes())
    return digest.hexdigest()[:32]


def conversion_cache() -> Path:
    """This user's private folder of conversions in the temporary directory (mode 0700).

    Another user's folder of that name, or one others may write, is never trusted: the
    conversion then goes to a fresh private folder.
    """
    folder = Path(tempfile.gettempdir()) / f"fmnist-litert-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    status = folder.stat()
    if status.st_uid != os.getuid() or status.st_mode & 0o077:
        return Path(tempfile.mkdtemp(prefix="fmnist-litert-"))
    return folder
