"""The data plane: the one request path of every route that takes a body or runs the model.

As in MLServer's handlers/dataplane.py, /predict, /preprocess, TensorFlow Serving's :predict and
the Open Inference Protocol's infer all go through the same calls: find the version the request
names, read the body under the request deadline, run the images through that version's batcher
under the same deadline, count the predictions. The routes of service/api/routes.py and
service/api/ only translate their wire format to and from these calls.
"""

from __future__ import annotations

import numpy as np
from flask import Request, current_app
from werkzeug.exceptions import RequestEntityTooLarge

from service.errors import ModelNotFound
from service.inference.model import LoadedModel
from service.inference.versions import ModelVersions
from service.io.deadline import Deadline
from service.observability import metrics
from service.settings import Settings


class DataPlane:
    """What every model route does, whatever its protocol; registered once per app."""

    def __init__(self, settings: Settings, versions: ModelVersions) -> None:
        self.settings = settings
        self.versions = versions

    def model(self, name: str | None = None, version: int | None = None) -> LoadedModel:
        """The served version a request names, the default without one.

        404 for another model's name or a version not served; 503 while none is loaded. The
        request then holds this version: it answers even if a newer one is published meanwhile.
        """
        if name is not None and name != self.settings.model_name:
            raise ModelNotFound(
                f"No model named {name!r}; this server serves {self.settings.model_name!r}."
            )
        return self.versions.current(version)

    def receive(self, request: Request) -> Deadline:
        """Start the request's deadline and read its whole body under it."""
        deadline = Deadline(self.settings.request_timeout)
        receive_body(request, deadline)
        return deadline

    def infer(self, model: LoadedModel, images: np.ndarray, deadline: Deadline) -> np.ndarray:
        """Run a uint8 batch (N, 28, 28) on `model` within the deadline; count its predictions."""
        deadline.check("running the model")
        batcher = model.batcher
        if batcher is None:
            probabilities = model.predict(images)
        else:
            # Waiting in the queue counts against the same deadline (503 deadline_exceeded).
            probabilities = batcher.predict(images, max(deadline.remaining(), 0.0))
        for row in probabilities:
            metrics.add(metrics.PREDICTIONS, 1, model.class_names[int(row.argmax())])
            metrics.observe(metrics.CONFIDENCE, float(row.max()))
        return probabilities


def dataplane() -> DataPlane:
    """The app's data plane, registered once by create_app."""
    return current_app.extensions["dataplane"]


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
