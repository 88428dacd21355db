"""Convert one SavedModel version for LiteRT, in a process of its own.

    python -m service.inference.convert SAVED_MODEL_DIR OUTPUT_DIR SIGNATURE [int8]

service/inference/runtime.py runs this when a version loads, so that a worker serving with
LiteRT never imports TensorFlow, which would add its memory to every worker and time to its
start (docs/operations.md, "Resources", has each runtime's memory per worker). It writes,
atomically (a temporary folder, then one rename), OUTPUT_DIR/model.tflite and
OUTPUT_DIR/signature_def.json: the serving SignatureDef in protobuf's JSON mapping, which the
/v1 metadata route shows. With `int8` the weights are quantized to 8 bits (the converter's
dynamic range quantization: no calibration data; LiteRT quantizes each image's activations on
the fly, so an image's answer never depends on the other images of its batch).

Training's export writes the same files into the version folder itself
(`write_serving_artifacts`), so that a worker without TensorFlow has nothing to convert.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

MODEL_FILE = "model.tflite"
SIGNATURE_FILE = "signature_def.json"
# The serving artifacts training's export writes into a version folder beside the SavedModel
# (training/export.py), so that a worker without TensorFlow serves the version: each LiteRT
# runtime's flatbuffer, and the SignatureDef the /v1 metadata shows. metadata.json lists them
# under METADATA_KEY as {path relative to the version folder: its SHA-256 in hex}; the service
# checks each file against it when it loads the version (service/inference/runtime.py).
ARTIFACTS = {"litert": "litert/model.tflite", "litert-int8": "litert/model-int8.tflite"}
SIGNATURE_ARTIFACT = "litert/signature_def.json"
METADATA_KEY = "serving_artifacts"


def signature_def(saved_model_dir: Path, signature: str) -> dict[str, Any]:
    """The SignatureDef `signature` as saved_model.pb holds it, in protobuf's JSON mapping."""
    from google.protobuf.json_format import MessageToDict
    from tensorflow.core.protobuf import saved_model_pb2

    saved_model = saved_model_pb2.SavedModel()
    saved_model.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())
    definition = saved_model.meta_graphs[0].signature_def[signature]
    as_json: dict[str, Any] = MessageToDict(definition, preserving_proto_field_name=True)
    return as_json


def flatbuffer(saved_model_dir: Path, signature: str, int8: bool = False) -> bytes:
    """The LiteRT flatbuffer of one signature of a SavedModel (`int8`: 8-bit weights)."""
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), [signature])
    if int8:  # without a representative dataset, DEFAULT is dynamic range quantization
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    model: bytes = converter.convert()
    return model


def convert(saved_model_dir: Path, output: Path, signature: str, int8: bool = False) -> None:
    """Write the LiteRT flatbuffer and the SignatureDef of one version into `output`."""
    model = flatbuffer(saved_model_dir, signature, int8)
    staging = Path(tempfile.mkdtemp(prefix=".tmp-", dir=output.parent))
    try:
        (staging / MODEL_FILE).write_bytes(model)
        definition = signature_def(saved_model_dir, signature)
        (staging / SIGNATURE_FILE).write_text(json.dumps(definition))
        os.rename(staging, output)
    except OSError:
        if not (output / MODEL_FILE).is_file():  # not merely beaten to it by another worker
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_serving_artifacts(version_dir: Path, signature: str) -> dict[str, str]:
    """Write the serving artifacts into a version folder beside its SavedModel, each through a
    temporary file and a rename; return what metadata.json lists under METADATA_KEY."""
    contents = {
        path: flatbuffer(version_dir, signature, int8=kind == "litert-int8")
        for kind, path in ARTIFACTS.items()
    }
    contents[SIGNATURE_ARTIFACT] = json.dumps(signature_def(version_dir, signature)).encode()
    for path, content in contents.items():
        write_atomically(version_dir / path, content)
    return {path: hashlib.sha256(content).hexdigest() for path, content in contents.items()}


def write_atomically(path: Path, content: bytes) -> None:
    """Replace `path` with `content` by one rename, so that a reader sees the old file or the
    new one, never part of either; readable by all, as the rest of a version folder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(content)
        os.chmod(temporary, 0o644)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def main(argv: list[str]) -> int:
    """Parse the arguments and convert; errors go to stderr, exit status 1."""
    if len(argv) not in (3, 4) or argv[3:] not in ([], ["int8"]):
        print(__doc__, file=sys.stderr)
        return 2
    saved_model_dir, output, signature = Path(argv[0]), Path(argv[1]), argv[2]
    try:
        convert(saved_model_dir, output, signature, int8=argv[3:] == ["int8"])
    except Exception as error:  # noqa: BLE001 - one line for the parent to report
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
