"""The Fashion-MNIST prediction service: `create_app()` wires its parts together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from service import errors, instrumentation
from service.model import Predictor
from service.routes import api
from service.settings import Settings

FORM_PARAMETER_PARTS = 8
MAX_FORM_FIELD_BYTES = 64 * 1024


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then FMNIST_* environment, then `config` overrides."""
    settings = Settings.from_env(**(config or {}))
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    # Werkzeug's multipart limits, set on purpose (413 above them): a form holds the images
    # plus a few parameter fields, and its text fields (top_k, invert) are a few bytes.
    app.config["MAX_FORM_PARTS"] = settings.max_batch + FORM_PARAMETER_PARTS
    app.config["MAX_FORM_MEMORY_SIZE"] = MAX_FORM_FIELD_BYTES
    app.json.sort_keys = False  # keep probabilities in class order
    app.extensions["settings"] = settings
    predictor = Predictor(Path(settings.model_dir), settings.warmup, settings.tf_threads)
    app.extensions["predictor"] = predictor
    errors.register_error_handlers(app)
    instrumentation.init_app(app)
    app.register_blueprint(api)
    predictor.start()
    return app
