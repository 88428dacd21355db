"""The data plane: the one call of every route that runs the model, whatever its protocol.

As MLServer's handlers/dataplane.py owns `infer`, `DataPlane.infer` owns the sequence of
/predict, TensorFlow Serving's :predict and the Open Inference Protocol's infer: find the
version the request names (404, or 503 while none is loaded, before reading a body), read the
whole body under the request deadline (408), let the route's wire format turn it into images,
run them through that version's batcher under the same deadline (503), count the predictions.
A protocol module only translates its wire format: the `read` function it passes, and the
answer it shapes from the result. /preprocess runs the same steps up to the images.

gRPC calls (service/grpc/) take the same sequence through `DataPlane.call`, the one both
transports share: their message has arrived whole, and their deadline is the client's, capped
by FMNIST_REQUEST_TIMEOUT. REST and gRPC requests of a worker queue in the same batcher.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

import numpy as np
from flask import Request, current_app, g
from werkzeug.exceptions import RequestEntityTooLarge

from service.errors import ModelNotFound
from service.inference.model import LoadedModel
from service.inference.versions import ModelVersions
from service.io.deadline import Deadline
from service.observability import metrics
from service.observability.buffers import MetricBuffer
from service.settings import Settings


class Decoded(Protocol):
    """What a route's wire format makes of a request: at least its images."""

    @property
    def images(self) -> np.ndarray:
        """The request's images, a uint8 batch (N, 28, 28)."""
        ...


Parsed = TypeVar("Parsed", bound=Decoded)
Message = TypeVar("Message")  # what a transport hands over: a Flask Request, a gRPC message


@dataclass(frozen=True)
class Received(Generic[Message]):
    """A request whose body has arrived within its deadline, and the version it names."""

    request: Message
    deadline: Deadline
    settings: Settings
    model: LoadedModel | None  # None for /preprocess, which runs no model
    metric_buffer: MetricBuffer  # where reading it is timed (decoding, preprocessing)


@dataclass(frozen=True)
class Inference(Generic[Parsed]):
    """What DataPlane.infer hands back to the route: the version that answered, the request as
    its wire format read it, and one row of probabilities per image."""

    model: LoadedModel
    request: Parsed
    probabilities: np.ndarray


class DataPlane:
    """What every model route does, whatever its protocol; registered once per app."""

    def __init__(
        self, settings: Settings, versions: ModelVersions, metric_buffer: MetricBuffer
    ) -> None:
        self.settings = settings
        self.versions = versions
        self.metric_buffer = metric_buffer

    def infer(
        self,
        request: Request,
        read: Callable[[Received[Request]], Parsed],
        name: str | None = None,
        version: int | None = None,
    ) -> Inference[Parsed]:
        """Run one REST request through the model version it names, `read` translating its
        body, which is read whole under the request deadline first."""
        deadline = Deadline(self.settings.request_timeout)
        answer = self.call(request, deadline, read, name, version, receive=receive_body)
        g.images = len(answer.request.images)
        return answer

    def infer_message(
        self,
        message: Message,
        timeout: float | None,
        read: Callable[[Received[Message]], Parsed],
        name: str | None = None,
        version: int | None = None,
    ) -> Inference[Parsed]:
        """Run one gRPC message through the model version it names, `read` translating it,
        within the client's `timeout` (None: none set), capped by the request time limit."""
        limit = self.settings.request_timeout
        deadline = Deadline(limit if timeout is None else min(timeout, limit))
        return self.call(message, deadline, read, name, version)

    def call(
        self,
        request: Message,
        deadline: Deadline,
        read: Callable[[Received[Message]], Parsed],
        name: str | None,
        version: int | None,
        receive: Callable[[Message, Deadline], None] | None = None,
    ) -> Inference[Parsed]:
        """The sequence of every transport: find the version (404, or 503 while none is loaded,
        before reading a body), `receive` the body under the deadline where it still arrives,
        let `read` translate it into images, run them through the version's batcher, count."""
        model = self.model(name, version)
        if receive is not None:
            receive(request, deadline)
        parsed = read(Received(request, deadline, self.settings, model, self.metric_buffer))
        return Inference(model, parsed, self.predict(model, parsed.images, deadline))

    def preprocess(self, request: Request, read: Callable[[Received[Request]], Parsed]) -> Parsed:
        """Read a request as `infer` does, up to its images, without running the model."""
        deadline = Deadline(self.settings.request_timeout)
        receive_body(request, deadline)
        parsed = read(Received(request, deadline, self.settings, None, self.metric_buffer))
        g.images = len(parsed.images)
        return parsed

    def model(self, name: str | None = None, version: int | None = None) -> LoadedModel:
        """The served version a request names, the default without one.

        404 for another model's name or a version not served; 503 while none is loaded. The
        request then holds this version: it answers even if a newer one is published meanwhile.
        """
        if name is not None and name != self.settings.model_name:
            raise ModelNotFound(name, self.settings.model_name)
        return self.versions.current(version)

    def predict(self, model: LoadedModel, images: np.ndarray, deadline: Deadline) -> np.ndarray:
        """Run a uint8 batch (N, 28, 28) on `model` within the deadline; count its predictions."""
        deadline.check("running the model")
        batcher = model.batcher
        if batcher is None:
            probabilities = model.predict(images)
        else:
            # Waiting in the queue counts against the same deadline (503 deadline_exceeded).
            probabilities = batcher.predict(images, max(deadline.remaining(), 0.0))
        buffer = self.metric_buffer
        for row in probabilities:
            buffer.add(metrics.PREDICTIONS, (model.class_names[int(row.argmax())],), 1)
            buffer.observe(metrics.CONFIDENCE, (), float(row.max()))
        return probabilities


def dataplane() -> DataPlane:
    """The app's data plane, registered once by create_app."""
    plane: DataPlane = current_app.extensions["dataplane"]
    return plane


def receive_body(request: Request, deadline: Deadline) -> None:
    """Read the whole body now, as bytes, giving up when the deadline passes (408).

    Every route parses the bytes itself, whatever the Content-Type says (curl -d sends a form
    type with a JSON body); /predict's multipart forms are parsed by service/io/uploads.py.
    """
    with deadline.reading_body(request.environ):
        body = request.get_data()
        # Werkzeug stops a body at the size limit without an error, and its stream raises 413
        # for any read past the limit, even where the body ends there. One byte more from the
        # server's own stream tells a body longer than the limit (413) from one of exactly it.
        limit = request.max_content_length
        if limit is not None and len(body) >= limit and request.environ["wsgi.input"].read(1):
            raise RequestEntityTooLarge()
