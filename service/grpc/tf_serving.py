"""TensorFlow Serving's gRPC API: `tensorflow.serving.PredictionService`'s Predict and
GetModelMetadata (the REST twin: service/api/tf_serving.py). Its other methods (Classify,
Regress, MultiInference) answer UNIMPLEMENTED, as the generated base class does.

Predict takes the signature's one input as a TensorProto (DT_UINT8, DT_FLOAT, DT_DOUBLE,
DT_INT32 or DT_INT64 pixels 0 to 255 shaped [N, 28, 28] or [N, 28, 28, 1], in `tensor_content`
or the typed values, as tf.make_tensor_proto writes them) and answers the DT_FLOAT
probabilities [N, 10] in `tensor_content`. No TensorFlow: the messages are plain protobuf.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format

from service.errors import (
    InvalidParameter,
    InvalidTensor,
    UnknownSignature,
    UnknownTensor,
    UnknownVersionLabel,
)
from service.grpc.generated import POOL
from service.grpc.generated.tensorflow.core.framework import types_pb2
from service.grpc.generated.tensorflow.core.protobuf import meta_graph_pb2
from service.grpc.generated.tensorflow_serving.apis import (
    get_model_metadata_pb2,
    model_pb2,
    predict_pb2,
    prediction_service_pb2_grpc,
)
from service.grpc.observed import IMAGES
from service.inference.dataplane import DataPlane, Received
from service.inference.model import LoadedModel
from service.io.tensors import image_count, to_images

# The pixel types a TensorProto may carry: NumPy's type and the typed field of its values.
DTYPES: dict[int, tuple[np.dtype[Any], str]] = {
    types_pb2.DT_UINT8: (np.dtype("u1"), "int_val"),
    types_pb2.DT_FLOAT: (np.dtype("<f4"), "float_val"),
    types_pb2.DT_DOUBLE: (np.dtype("<f8"), "double_val"),
    types_pb2.DT_INT32: (np.dtype("<i4"), "int_val"),
    types_pb2.DT_INT64: (np.dtype("<i8"), "int64_val"),
}
SIGNATURE_DEF = "signature_def"  # the one metadata field TF Serving answers


@dataclass(frozen=True)
class PredictCall:
    """A Predict request, as read: its images and the signature it ran."""

    images: np.ndarray
    signature: str


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Each RPC translates its messages; the data plane does the rest."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def Predict(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Classify the input tensor's images; answer the probabilities as a DT_FLOAT tensor."""
        spec = request.model_spec
        answer = self.plane.infer_message(
            request, context.time_remaining(), read_predict, spec.name, version(spec)
        )
        IMAGES.set(len(answer.request.images))
        model, probabilities = answer.model, answer.probabilities
        response = predict_pb2.PredictResponse(
            model_spec=self.model_spec(model, answer.request.signature)
        )
        output = response.outputs[model.output_name]
        output.dtype = types_pb2.DT_FLOAT
        for size in probabilities.shape:
            output.tensor_shape.dim.add(size=size)
        output.tensor_content = probabilities.astype("<f4").tobytes()
        return response

    def GetModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """The serving signature, as TF Serving's GetModelMetadataResponse carries it."""
        fields = list(request.metadata_field)
        if not fields:
            raise InvalidParameter("GetModelMetadataRequest must name at least one metadata_field")
        for field in fields:
            if field != SIGNATURE_DEF:
                raise InvalidParameter(f"Metadata field {field[:40]} is not supported")
        spec = request.model_spec
        model = self.plane.model(spec.name, version(spec))
        signature = json_format.ParseDict(
            model.signature_def,
            meta_graph_pb2.SignatureDef(),
            ignore_unknown_fields=True,
            descriptor_pool=POOL,
        )
        signatures = get_model_metadata_pb2.SignatureDefMap()
        signatures.signature_def[model.signature_name].CopyFrom(signature)
        response = get_model_metadata_pb2.GetModelMetadataResponse(
            model_spec=self.model_spec(model, "")
        )
        response.metadata[SIGNATURE_DEF].Pack(signatures)
        return response

    def model_spec(self, model: LoadedModel, signature: str) -> Any:
        """The ModelSpec of an answer: the served name, the version that answered."""
        spec = model_pb2.ModelSpec(name=self.plane.settings.model_name, signature_name=signature)
        spec.version.value = model.version
        return spec


def version(spec: Any) -> int | None:
    """The version a ModelSpec names, as TF Serving resolves it: a number, or a label (this
    server assigns none: INVALID_ARGUMENT, TF Serving's answer for an unknown label)."""
    if spec.HasField("version_label"):
        raise UnknownVersionLabel(spec.version_label)
    return spec.version.value if spec.HasField("version") else None


def read_predict(received: Received[Any]) -> PredictCall:
    """Check the signature and its one input, and read the TensorProto as a uint8 batch."""
    message, model = received.request, received.model
    assert model is not None  # DataPlane.infer_message always names the version
    signature = message.model_spec.signature_name or model.signature_name
    if signature != model.signature_name:
        raise UnknownSignature(signature, model.signature_name)
    names = sorted(message.inputs)
    if names != [model.input_name]:
        raise UnknownTensor("input", names, model.input_name)
    for name in message.output_filter:
        if name != model.output_name:
            raise UnknownTensor("output", name, model.output_name)
    max_batch = received.settings.max_batch
    tensor = message.inputs[model.input_name]
    shape = tuple(dim.size for dim in tensor.tensor_shape.dim)
    image_count(shape, max_batch)
    values = tensor_values(tensor, math.prod(shape))
    integers = DTYPES[tensor.dtype][0].kind in "iu"  # whole numbers, as REST's UINT8
    return PredictCall(to_images(values.reshape(shape), max_batch, integers), signature)


def tensor_values(tensor: Any, size: int) -> np.ndarray:
    """A TensorProto's `size` values, flat: its content bytes, or its typed values (one value
    stands for all, as TensorFlow reads them)."""
    if tensor.dtype not in DTYPES:
        known = tensor.dtype in types_pb2.DataType.values()
        name = types_pb2.DataType.Name(tensor.dtype) if known else str(tensor.dtype)
        raise InvalidTensor(f"The input dtype must be a number type such as DT_UINT8; got {name}.")
    dtype, field = DTYPES[tensor.dtype]
    if tensor.tensor_content:
        content = tensor.tensor_content
        if len(content) != size * dtype.itemsize:
            needed = size * dtype.itemsize
            raise InvalidTensor(f"tensor_content has {len(content)} bytes; shape needs {needed}.")
        return np.frombuffer(content, dtype=dtype)
    # Read wide: int_val holds DT_UINT8's values as int32, which a uint8 array would wrap.
    values = np.asarray(getattr(tensor, field), dtype=np.float64)
    if values.size == 1 and size > 1:
        return np.full(size, values[0])
    if values.size != size:
        raise InvalidTensor(f"The tensor holds {values.size} values; its shape needs {size}.")
    return values
