"""The Fashion-MNIST prediction service: `create_app()` wires its parts together."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

from service import errors, instrumentation
from service.model import Predictor
from service.openapi import openapi
from service.page import page
from service.routes import api
from service.settings import Settings


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then FMNIST_* environment, then `config` overrides."""
    settings = Settings.from_env(**(config or {}))
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.json.sort_keys = False  # keep probabilities in class order
    app.extensions["settings"] = settings
    predictor = Predictor(Path(settings.model_dir), settings.warmup, settings.tf_threads)
    app.extensions["predictor"] = predictor
    errors.register_error_handlers(app)
    instrumentation.init_app(app)
    app.register_blueprint(api)
    app.register_blueprint(page)
    app.register_blueprint(openapi)
    predictor.start()
    return app
