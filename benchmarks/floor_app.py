"""The HTTP floor: an app that reads the multipart upload and answers, nothing else.

Served by the same gunicorn configuration as the real service, it shows what HTTP, WSGI
and multipart parsing cost before any preprocessing or inference.
"""

from __future__ import annotations

from flask import Flask, jsonify, request


def create_app() -> Flask:
    """Build the do-nothing app."""
    app = Flask(__name__)

    @app.post("/predict")
    def predict():
        files = request.files.getlist("image")
        return jsonify(received=sum(len(f.read()) for f in files))

    @app.get("/readyz")
    def readyz():
        return jsonify(status="ready")

    return app
