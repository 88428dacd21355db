"""JSON answers: Flask's `jsonify` written by orjson.

orjson writes a prediction's answer in a small part of the time the standard library's json
module takes, most of which goes to turning floats into their shortest text
(docs/request-path.md, "the answer as JSON"). As with Flask's own provider outside debug
mode, the text is compact; keys keep their insertion order (probabilities in class order);
the numbers read back the same (the shortest text that round-trips, as Python's repr, in
exponent form when small: 5.99e-5).
"""

from __future__ import annotations

import json
from typing import Any

import orjson
from flask import Flask, Response
from flask.json.provider import JSONProvider


class OrjsonProvider(JSONProvider):
    """The app's JSON provider (`app.json`): orjson's dumps and loads."""

    mimetype = "application/json"

    def __init__(self, app: Flask) -> None:
        super().__init__(app)
        # Flask's own class, which takes a body (the base class types `_app` as the app
        # without its request and response classes).
        self._response_class = app.response_class

    def dumps(self, obj: Any, **kwargs: Any) -> str:
        """Serialize `obj` as compact JSON text."""
        return dump(obj).decode()

    def loads(self, s: str | bytes, **kwargs: Any) -> Any:
        """Parse JSON text (NaN and Infinity, which are not JSON, are refused)."""
        return orjson.loads(s)

    def response(self, *args: Any, **kwargs: Any) -> Response:
        """A response of `jsonify`'s arguments as JSON, without a detour through str."""
        body = dump(self._prepare_response_obj(args, kwargs)) + b"\n"
        return self._response_class(body, mimetype=self.mimetype)


def dump(obj: Any) -> bytes:
    """`obj` as compact JSON in UTF-8.

    What orjson refuses goes through the standard library, escaped to ASCII: integers beyond 64
    bits (a Content-Length of 10**20 in an access-log line) and strings holding a lone surrogate
    (an inference request's "id": "\\ud800", valid JSON, echoed back), which have no UTF-8 form
    but a JSON one, the escape the client sent.
    """
    try:
        return orjson.dumps(obj)
    except TypeError:  # orjson.JSONEncodeError
        return json.dumps(obj, separators=(",", ":")).encode()
