"""A tutorial-style model server: Flask, one SavedModel call per request, nothing else.

The reference the service is measured against (docs/benchmarks.md): it decodes the upload,
resizes it to 28x28 grayscale and calls the serving signature, with no validation, metrics,
logging, deadlines or batching. Served by the same gunicorn configuration as the service.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import tensorflow as tf
from flask import Flask, jsonify, request
from PIL import Image

from service.inference.model import list_versions
from training.data import CLASS_NAMES


def create_app() -> Flask:
    """Load the newest model version and serve /predict and /readyz."""
    model_dir = Path(os.environ.get("FMNIST_MODEL_DIR", "models/fashion_mnist"))
    saved_model = tf.saved_model.load(str(model_dir / str(list_versions(model_dir)[-1])))
    signature = saved_model.signatures["serving_default"]
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        image = Image.open(io.BytesIO(request.files["image"].read())).convert("L")
        pixels = np.asarray(image.resize((28, 28)), dtype=np.uint8)[np.newaxis]
        probabilities = signature(images=tf.constant(pixels))["probabilities"].numpy()[0]
        return jsonify(
            label=CLASS_NAMES[int(probabilities.argmax())],
            probabilities=dict(zip(CLASS_NAMES, map(float, probabilities), strict=True)),
        )

    @app.get("/readyz")
    def readyz():
        return jsonify(status="ready")

    return app
