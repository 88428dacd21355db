"""How a loaded SavedModel version is run: LiteRT (the default) or TensorFlow's own signature.

The SavedModel stays the artifact that training writes and that the /v1 and /v2 metadata
describe. The LiteRT runtime converts it in memory when the version loads
(`tf.lite.TFLiteConverter.from_saved_model`, under a second) and runs the result with LiteRT's
interpreter and its XNNPACK kernels: for this model a call costs a fraction of the
SavedModel signature's, whose Python call machinery weighs more than the network at small
batches (docs/benchmarks.md, "Model alone"). Both answer the same probabilities within 1e-5
(tests/test_runtime.py).
"""

from __future__ import annotations

import queue
from pathlib import Path
from typing import Protocol

import numpy as np

RUNTIMES = ("litert", "savedmodel")


class Runtime(Protocol):
    """Runs one model version: uint8 images (N, 28, 28) in, float32 probabilities (N, 10) out."""

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """Return the probabilities of a batch; safe to call from several threads at once."""
        ...


class SavedModelRuntime:
    """The SavedModel's serving signature, called through TensorFlow."""

    def __init__(self, path: Path, signature: str, input_name: str, output_name: str) -> None:
        import tensorflow as tf

        self._saved_model = tf.saved_model.load(str(path))  # keeps the signature's variables
        self._signature = self._saved_model.signatures[signature]
        self._input_name, self._output_name = input_name, output_name

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """One call of the signature."""
        import tensorflow as tf

        outputs = self._signature(**{self._input_name: tf.constant(images, dtype=tf.uint8)})
        return outputs[self._output_name].numpy()


class LiteRTRuntime:
    """The SavedModel converted to LiteRT at load, run by LiteRT's interpreter (XNNPACK).

    An interpreter serves one call at a time, so calls take one from a pool and give it
    back; the pool grows to the number of calls that ever ran at once (a worker's threads).
    Each call releases the GIL while the network runs.
    """

    def __init__(
        self, path: Path, signature: str, input_name: str, output_name: str, threads: int
    ) -> None:
        import tensorflow as tf

        converter = tf.lite.TFLiteConverter.from_saved_model(str(path), [signature])
        self._flatbuffer = converter.convert()
        self._signature, self._threads = signature, threads
        self._input_name, self._output_name = input_name, output_name
        self._idle: queue.SimpleQueue = queue.SimpleQueue()
        self._idle.put(self._new_runner())  # fail at load, not at the first request

    def _new_runner(self):  # noqa: ANN202 - ai_edge_litert's SignatureRunner
        """A new interpreter's runner for the serving signature."""
        from ai_edge_litert.interpreter import Interpreter

        interpreter = Interpreter(model_content=self._flatbuffer, num_threads=self._threads)
        return interpreter.get_signature_runner(self._signature)

    def __call__(self, images: np.ndarray) -> np.ndarray:
        """One invocation, on an idle interpreter (resized to the batch when it differs)."""
        try:
            runner = self._idle.get_nowait()
        except queue.Empty:
            runner = self._new_runner()
        try:
            return runner(**{self._input_name: images})[self._output_name]
        finally:
            self._idle.put(runner)


def load_runtime(
    kind: str, path: Path, signature: str, input_name: str, output_name: str, threads: int
) -> Runtime:
    """Load a version folder for the runtime `kind` ("litert" or "savedmodel")."""
    if kind == "litert":
        return LiteRTRuntime(path, signature, input_name, output_name, threads)
    if kind == "savedmodel":
        return SavedModelRuntime(path, signature, input_name, output_name)
    raise ValueError(f"unknown runtime {kind!r}; choose one of {', '.join(RUNTIMES)}")
