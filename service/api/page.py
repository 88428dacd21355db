"""The upload page for people: one HTML file whose script and style the app serves itself."""

from __future__ import annotations

from flask import Blueprint, Response, current_app

from service.api.openapi import documented
from service.errors import RouteNotFound

page = Blueprint("page", __name__)

# The page loads nothing from other hosts; the browser enforces it. blob: shows the upload
# and the preprocessed PNG without a second request.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)


@page.get("/")
@documented(
    "Upload page",
    {"200": {"description": "The page.", "content": {"text/html": {}}}},
    description="A page where a person picks or drops an image and sees what the model "
    "received and predicted.",
    raises=(RouteNotFound,),
)
def index() -> Response:
    """Serve the upload page."""
    response = current_app.send_static_file("index.html")
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    return response
