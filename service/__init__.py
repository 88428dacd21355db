"""The Fashion-MNIST prediction service: `create_app()` wires its parts together.

The parts are imported inside the factory, as Flask's tutorial app does: gunicorn.conf.py
imports service.settings in the master, which must load neither Flask nor prometheus_client's
metrics nor the model's runtime.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flask import Flask


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the app: defaults, then FMNIST_* environment, then `config` overrides."""
    from flask import Flask

    from service import errors
    from service.api.kserve_v2 import v2
    from service.api.openapi import openapi
    from service.api.page import page
    from service.api.routes import api
    from service.api.tf_serving import v1
    from service.inference.batching import BatchingConfig
    from service.inference.dataplane import DataPlane
    from service.inference.versions import ModelVersions
    from service.io.jsonio import OrjsonProvider
    from service.observability.buffers import MetricBuffer
    from service.observability.instrumentation import Instrumentation
    from service.settings import Settings

    settings = Settings.from_env(**(config or {}))
    app = Flask(__name__)
    app.json = OrjsonProvider(app)  # keys in insertion order: probabilities in class order
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    app.extensions["settings"] = settings
    metric_buffer = MetricBuffer()  # the app's metric updates, written by a thread of its own
    instrumentation = Instrumentation(metric_buffer)
    versions = ModelVersions(
        Path(settings.model_dir),  # a config override may give a string
        settings.model_versions,
        settings.model_poll_seconds,
        name=settings.model_name,
        warmup=settings.warmup,
        runtime=settings.runtime,
        tf_threads=settings.tf_threads,
        batching=BatchingConfig.from_settings(settings, instrumentation.requests_in_process),
        metric_buffer=metric_buffer,
    )
    app.extensions["versions"] = versions
    app.extensions["dataplane"] = DataPlane(settings, versions, metric_buffer)
    errors.register_error_handlers(app)
    instrumentation.init_app(app)
    app.register_blueprint(api)
    app.register_blueprint(v1)
    app.register_blueprint(v2)
    app.register_blueprint(page)
    app.register_blueprint(openapi)
    versions.start()
    return app
