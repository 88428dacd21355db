"""Check a version folder's serving artifacts against its metadata and its SavedModel."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from service.inference.convert import ARTIFACTS, METADATA_KEY, SIGNATURE_ARTIFACT, signature_def
from tests.test_runtime import INT8_TOLERANCE, TOLERANCE


def check_serving_artifacts(folder: Path, images: np.ndarray) -> None:
    """Assert that `folder` holds the serving artifacts its metadata lists, with those SHA-256,
    and that each LiteRT model answers the SavedModel's probabilities for uint8 `images` within
    its runtime's tolerance (docs/runtimes.md)."""
    import tensorflow as tf
    from ai_edge_litert.interpreter import Interpreter

    metadata = json.loads((folder / "metadata.json").read_text())
    listed = metadata[METADATA_KEY]
    assert set(listed) == {*ARTIFACTS.values(), SIGNATURE_ARTIFACT}
    for path, sha256 in listed.items():
        assert hashlib.sha256((folder / path).read_bytes()).hexdigest() == sha256, path
    signature = metadata["signature_name"]
    definition = json.loads((folder / SIGNATURE_ARTIFACT).read_text())
    assert definition == signature_def(folder, signature)

    input_name, output_name = metadata["input"]["name"], metadata["output"]["name"]
    saved_model = tf.saved_model.load(str(folder)).signatures[signature]
    reference = saved_model(**{input_name: tf.constant(images)})[output_name].numpy()
    for kind, path in ARTIFACTS.items():
        runner = Interpreter(model_path=str(folder / path)).get_signature_runner(signature)
        probabilities = runner(**{input_name: images})[output_name]
        tolerance = INT8_TOLERANCE if kind == "litert-int8" else TOLERANCE
        np.testing.assert_allclose(probabilities, reference, atol=tolerance, rtol=0, err_msg=kind)
    sizes = {kind: (folder / path).stat().st_size for kind, path in ARTIFACTS.items()}
    assert sizes["litert-int8"] < sizes["litert"] / 2  # 8-bit weights, not 32-bit ones
