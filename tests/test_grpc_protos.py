"""The generated gRPC message classes: what `make protos` writes, apart from the real packages."""

from __future__ import annotations

import subprocess
import sys

from harness import ROOT
from service.grpc import generate


def test_the_committed_modules_are_what_make_protos_writes(tmp_path):
    target = tmp_path / "generated"
    generate.generate(target)
    committed = generate.GENERATED
    written = {p.relative_to(target) for p in target.rglob("*") if p.is_file()}
    assert written == {
        p.relative_to(committed)
        for p in committed.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    }, "run make protos"
    for path in sorted(written):
        assert (target / path).read_text() == (committed / path).read_text(), f"{path}: make protos"


NO_TENSORFLOW = """
import sys
import service.grpc.server
from google.protobuf import descriptor_pool

assert "tensorflow" not in sys.modules, "tensorflow imported"
for name in ("inference.ModelInferRequest", "tensorflow.TensorProto"):
    try:
        descriptor_pool.Default().FindMessageTypeByName(name)
    except KeyError:
        continue
    raise AssertionError(f"{name} is in the default pool")
"""


def test_the_servicers_import_neither_tensorflow_nor_the_default_pool():
    # A worker never imports TensorFlow: the generated TF protos are plain protobuf messages,
    # in a pool of their own.
    result = subprocess.run(
        [sys.executable, "-c", NO_TENSORFLOW], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr


def test_our_messages_and_the_real_clients_load_in_one_process_and_agree():
    # tritonclient and tensorflow_serving define the same message names in the default pool;
    # ours live in their own, so all three load together, and bytes cross between them.
    import tensorflow as tf
    from tensorflow_serving.apis import get_model_metadata_pb2 as theirs_metadata
    from tensorflow_serving.apis import predict_pb2 as theirs_predict
    from tritonclient.grpc import service_pb2 as triton

    from service.grpc.generated import grpc_predict_v2_pb2
    from service.grpc.generated.tensorflow_serving.apis import get_model_metadata_pb2, predict_pb2

    sent = theirs_predict.PredictRequest()
    sent.model_spec.name, sent.model_spec.version.value = "fashion_mnist", 3
    sent.inputs["images"].CopyFrom(tf.make_tensor_proto([[1.5, 2.5]]))
    ours = predict_pb2.PredictRequest.FromString(sent.SerializeToString())
    assert ours.model_spec.version.value == 3
    assert [d.size for d in ours.inputs["images"].tensor_shape.dim] == [1, 2]

    signatures = get_model_metadata_pb2.SignatureDefMap()
    signatures.signature_def["serving_default"].method_name = "tensorflow/serving/predict"
    answer = get_model_metadata_pb2.GetModelMetadataResponse()
    answer.metadata["signature_def"].Pack(signatures)
    received = theirs_metadata.GetModelMetadataResponse.FromString(answer.SerializeToString())
    unpacked = theirs_metadata.SignatureDefMap()
    assert received.metadata["signature_def"].Unpack(unpacked)
    assert unpacked.signature_def["serving_default"].method_name == "tensorflow/serving/predict"

    infer = triton.ModelInferRequest(model_name="fashion_mnist", raw_input_contents=[b"\x01"])
    read = grpc_predict_v2_pb2.ModelInferRequest.FromString(infer.SerializeToString())
    assert read.model_name == "fashion_mnist" and list(read.raw_input_contents) == [b"\x01"]
