"""The Open Inference Protocol over gRPC: `inference.GRPCInferenceService`, as KServe's
grpc_predict_v2.proto declares it (the REST twin: service/api/kserve_v2.py).

ModelInfer takes the model's one input, UINT8 or FP32 pixels 0 to 255 shaped [N, 28, 28] or
[N, 28, 28, 1], in `raw_input_contents` (little-endian bytes, as tritonclient sends them) or in
the typed contents (`uint_contents`, `fp32_contents`); it answers the FP32 probabilities [N, 10]
in `raw_output_contents`, as Triton does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import grpc
import numpy as np

from service.contract.kserve_v2 import (
    DATATYPES,
    EXTENSIONS,
    PLATFORM,
    SERVER_NAME,
    SERVER_VERSION,
    parse_version,
    tensor_metadata,
)
from service.errors import InvalidTensor, ModelNotReady, UnknownTensor
from service.grpc.generated import grpc_predict_v2_pb2 as pb
from service.grpc.generated import grpc_predict_v2_pb2_grpc as pb_grpc
from service.grpc.observed import IMAGES
from service.inference.dataplane import DataPlane, Received
from service.io.tensors import image_count, shaped, to_images

CONTENTS = {"UINT8": "uint_contents", "FP32": "fp32_contents"}  # the typed fields per datatype


@dataclass(frozen=True)
class InferCall:
    """A ModelInfer request, as read: its images and the message."""

    images: np.ndarray
    message: pb.ModelInferRequest


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    """Each RPC translates its messages; the data plane does the rest."""

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def ServerLive(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Live as soon as the worker answers."""
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Ready once the default version is loaded and warmed up."""
        return pb.ServerReadyResponse(ready=self.plane.versions.ready)

    def ModelReady(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Whether that version (the default one) is served; NOT_FOUND for another model."""
        try:
            self.plane.model(
                request.name, parse_version(request.version, self.plane.versions.served)
            )
        except ModelNotReady:
            return pb.ModelReadyResponse(ready=False)
        return pb.ModelReadyResponse(ready=True)

    def ServerMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Server name, version and protocol extensions."""
        return pb.ServerMetadataResponse(
            name=SERVER_NAME, version=SERVER_VERSION, extensions=EXTENSIONS
        )

    def ModelMetadata(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Served versions, platform, input and output tensors."""
        plane = self.plane
        model = plane.model(request.name, parse_version(request.version, plane.versions.served))
        return pb.ModelMetadataResponse(
            name=plane.settings.model_name,
            versions=[str(v) for v in sorted(plane.versions.served)],
            platform=PLATFORM,
            inputs=[
                pb.ModelMetadataResponse.TensorMetadata(**tensor_metadata(model.metadata["input"]))
            ],
            outputs=[
                pb.ModelMetadataResponse.TensorMetadata(**tensor_metadata(model.metadata["output"]))
            ],
        )

    def ModelInfer(self, request: Any, context: grpc.ServicerContext) -> Any:  # noqa: N802
        """Classify the input tensor's images; answer the probabilities as raw FP32 bytes."""
        plane = self.plane
        version = parse_version(request.model_version, plane.versions.served)
        answer = plane.infer_message(
            request, context.time_remaining(), read_infer, request.model_name, version
        )
        IMAGES.set(len(answer.request.images))
        model, probabilities = answer.model, answer.probabilities
        output = pb.ModelInferResponse.InferOutputTensor(
            name=model.output_name, datatype="FP32", shape=list(probabilities.shape)
        )
        return pb.ModelInferResponse(
            model_name=plane.settings.model_name,
            model_version=str(model.version),
            id=request.id,
            outputs=[output],
            raw_output_contents=[probabilities.astype("<f4").tobytes()],
        )


def read_infer(received: Received[Any]) -> InferCall:
    """Check the one input tensor (and any requested output) and read it as a uint8 batch."""
    message, model = received.request, received.model
    assert model is not None  # DataPlane.infer_message always names the version
    if len(message.inputs) != 1:
        raise InvalidTensor(f"The request needs exactly one input; got {len(message.inputs)}.")
    for output in message.outputs:
        if output.name != model.output_name:
            raise UnknownTensor("output", output.name, model.output_name)
    tensor = message.inputs[0]
    if tensor.name != model.input_name:
        raise UnknownTensor("input", tensor.name, model.input_name)
    max_batch = received.settings.max_batch
    shape = tuple(tensor.shape)
    image_count(shape, max_batch)
    if tensor.datatype not in DATATYPES:
        raise InvalidTensor(f"The input datatype must be UINT8 or FP32; got {tensor.datatype!r}.")
    values = shaped(tensor_values(message, tensor), shape)
    images = to_images(values, max_batch, integers=tensor.datatype == "UINT8")
    return InferCall(images, message)


def tensor_values(message: Any, tensor: Any) -> np.ndarray:
    """The tensor's values, flat: its raw bytes, or its typed contents."""
    dtype = DATATYPES[tensor.datatype]
    if message.raw_input_contents:
        if len(message.raw_input_contents) != 1:
            raise InvalidTensor("raw_input_contents must hold one entry per input.")
        raw = message.raw_input_contents[0]
        if len(raw) % dtype.itemsize:
            raise InvalidTensor(f"{len(raw)} bytes are no whole number of {tensor.datatype}s.")
        return np.frombuffer(raw, dtype=dtype)
    contents = getattr(tensor.contents, CONTENTS[tensor.datatype])
    return np.asarray(contents, dtype=np.float64)
