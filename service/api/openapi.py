"""The OpenAPI 3.1 document of the service, served at /openapi.json.

Derived from the app, not written beside it: a walk over the app's URL map documents every
route from what its view declares next to it with `@documented` (summary, answers, request
body, the error classes it raises), its path parameters from the route's converters, and the
schemas from service/contract/'s models. Each declared error class becomes an answer in the
error form of its path (RFC 9457, or `{"error", "code"}` under /v1 and /v2); a route with a
version in its path also answers a version that is not served.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import Blueprint, Flask, Response, current_app, jsonify
from werkzeug.routing import Map, Rule
from werkzeug.routing.converters import NumberConverter

from service import errors
from service.contract.document import json_schemas
from service.contract.values import BATCH_LIMIT, SIZE
from service.settings import Settings

OPENAPI_VERSION = "3.1.0"
REF = "#/components/schemas/{model}"
PROTOCOL_JSON = "application/json"  # what /v1 and /v2 answer, errors included
IMPLICIT_METHODS = frozenset({"HEAD", "OPTIONS"})  # Flask adds them to every route
EXAMPLE_VERSION = 1  # the first version python -m training writes
PIXELS_EXAMPLE = [[0] * SIZE] * SIZE
MAX_BATCH = "{max_batch}"  # in a description: the server's batch limit
# A variable of a route, <converter:name> or <name>, as Werkzeug's rules spell it.
VARIABLE = re.compile(r"<(?:(?P<converter>\w+)(?:\([^)]*\))?:)?(?P<name>\w+)>")
# What a path parameter means, by its name in the route, and an example of it.
PATH_PARAMETERS = {
    "name": "The model's name; another answers 404 `model_not_found`.",
    "version": "A model version (an integer folder name).",
    "filename": "A file of the upload page.",
}

View = TypeVar("View", bound=Callable[..., Any])
Body = Callable[[dict[str, Any]], dict[str, Any]]  # the contract's schemas -> a request body


@dataclass(frozen=True)
class Operation:
    """What a view declares of itself: the document's operation for each of its routes."""

    summary: str
    responses: dict[str, Any]  # its answers that are not errors, by status
    raises: tuple[errors.Answer, ...] = ()
    description: str = ""
    body: Body | None = None
    parameters: tuple[dict[str, Any], ...] = ()  # query and header parameters
    examples: dict[str, Any] = field(default_factory=dict)  # path parameters' examples


def documented(summary: str, *responses: dict[str, Any], **fields: Any) -> Callable[[View], View]:
    """Declare a view's OpenAPI operation next to its route (under its route decorators)."""
    merged = {status: answer for response in responses for status, answer in response.items()}
    operation = Operation(summary, merged, **fields)

    def declare(view: View) -> View:
        setattr(view, "openapi", operation)  # noqa: B010 - an attribute functions do not declare
        return view

    return declare


def ok(schema: dict[str, Any], description: str = "The answer.") -> dict[str, Any]:
    """A 200 JSON response."""
    return {
        "200": {"description": description, "content": {"application/json": {"schema": schema}}}
    }


def empty(status: int, description: str) -> dict[str, Any]:
    """A response with no body."""
    return {str(status): {"description": description + " Empty body."}}


def ref(name: str) -> dict[str, str]:
    """A reference to a component schema (a model of service/contract/)."""
    return {"$ref": REF.format(model=name)}


def json_body(schema: str, example: dict[str, Any]) -> dict[str, Any]:
    """A required JSON request body: one of the contract's models."""
    return {
        "required": True,
        "content": {PROTOCOL_JSON: {"schema": ref(schema), "example": example}},
    }


def with_batch_limit(schema: Any, limit: int) -> Any:
    """Replace contract.values.BATCH_LIMIT's marker by the batch limit, wherever it is."""
    if isinstance(schema, list):
        return [with_batch_limit(item, limit) for item in schema]
    if not isinstance(schema, dict):
        return schema
    found = {key: with_batch_limit(value, limit) for key, value in schema.items()}
    if found.pop(next(iter(BATCH_LIMIT)), False):
        found["maxItems"] = limit
    return found


# Flask's own route for the page's files: the one view this project does not write.
STATIC = Operation(
    "The page's files",
    {
        "200": {
            "description": "The file.",
            "content": {
                media: {} for media in ("text/css", "text/javascript", "image/svg+xml", "text/html")
            },
        }
    },
    raises=(errors.RouteNotFound,),
    examples={"filename": "app.js"},
)

openapi = Blueprint("openapi", __name__)


@openapi.get("/openapi.json")
@documented("This OpenAPI document", ok({"type": "object"}))
def openapi_json() -> Response:
    """Serve the OpenAPI document, with this server's limits filled in."""
    return jsonify(document(current_app))


def document(app: Flask, settings: Settings | None = None) -> dict[str, Any]:
    """Build the whole OpenAPI document of `app` (with its settings, or these)."""
    settings = settings or app.extensions["settings"]
    models = json_schemas(REF)
    models["Problem"]["properties"]["code"]["enum"] = errors.error_codes()
    models["ProtocolError"]["properties"]["code"]["enum"] = errors.error_codes()
    paths: dict[str, dict[str, Any]] = {}
    for rule in app.url_map.iter_rules():
        view = app.view_functions[rule.endpoint]
        declared = STATIC if rule.endpoint == "static" else getattr(view, "openapi", None)
        if declared is None:
            raise LookupError(f"{rule.rule} declares no OpenAPI operation (service/api/openapi.py)")
        for method in sorted((rule.methods or set()) - IMPLICIT_METHODS):
            operation = describe(declared, rule, app.url_map, settings, models)
            paths.setdefault(template(rule), {})[method.lower()] = operation
    whole: dict[str, Any] = with_batch_limit(
        {
            "openapi": OPENAPI_VERSION,
            "info": {
                "title": "Fashion-MNIST serving",
                "version": "1",
                "description": "Classify photos of garments into the ten Fashion-MNIST classes. "
                "Every error carries a stable `code`: an RFC 9457 problem document, except under "
                "/v1 (TensorFlow Serving REST) and /v2 (Open Inference Protocol), which answer "
                '`{"error": "...", "code": "..."}` as those protocols\' clients expect.',
            },
            "paths": paths,
            "components": {"schemas": models},
        },
        settings.max_batch,
    )
    return whole


def template(rule: Rule) -> str:
    """Spell a route as an OpenAPI path template: /v1/models/<model_name:name> -> {name}."""
    return VARIABLE.sub(r"{\g<name>}", rule.rule)


def describe(
    declared: Operation, rule: Rule, url_map: Map, settings: Settings, models: dict[str, Any]
) -> dict[str, Any]:
    """One route's operation: the view's declaration, its path parameters and its errors."""
    operation: dict[str, Any] = {"summary": declared.summary}
    if declared.description:
        description = declared.description.replace(MAX_BATCH, str(settings.max_batch))
        operation["description"] = description
    variables = list(VARIABLE.finditer(rule.rule))
    parameters = [path_parameter(variable, url_map, declared, settings) for variable in variables]
    if parameters or declared.parameters:
        operation["parameters"] = [*parameters, *declared.parameters]
    if declared.body is not None:
        operation["requestBody"] = declared.body(models)
    raises = declared.raises
    if any(variable["name"] == "version" for variable in variables):
        raises = (*raises, errors.ModelVersionNotFound)
    operation["responses"] = {**declared.responses, **error_responses(rule, raises)}
    return operation


def path_parameter(
    variable: re.Match[str], url_map: Map, declared: Operation, settings: Settings
) -> dict[str, Any]:
    """A route's variable as a path parameter, its schema read from the converter matching it."""
    name = variable["name"]
    converter = url_map.converters[variable["converter"] or "default"](url_map)
    if isinstance(converter, NumberConverter):
        schema: dict[str, Any] = {"type": "integer", "minimum": 0}
    else:
        schema = {"type": "string", "pattern": f"^(?:{converter.regex})$"}
    example = declared.examples.get(name)
    if example is None:
        example = settings.model_name if name == "name" else EXAMPLE_VERSION
    if schema["type"] == "string":
        example = str(example)
    found = {"name": name, "in": "path", "required": True, "schema": schema, "example": example}
    return found | {"description": PATH_PARAMETERS[name]}


def error_responses(rule: Rule, raises: tuple[errors.Answer, ...]) -> dict[str, Any]:
    """Each declared error, and the unexpected one, as answers by status in the path's form."""
    protocol = (rule.rule + "/").startswith(errors.PROTOCOL_PREFIXES)
    by_status: dict[int, list[errors.Answer]] = defaultdict(list)
    for answer in (*raises, errors.InternalError):
        by_status[answer.status].append(answer)
    return {
        str(status): error_response(answers, protocol)
        for status, answers in sorted(by_status.items())
    }


def error_response(answers: list[errors.Answer], protocol: bool) -> dict[str, Any]:
    """One status's error answer: the error schema, its codes, what each means."""
    media, name = (PROTOCOL_JSON, "ProtocolError") if protocol else (errors.PROBLEM_JSON, "Problem")
    codes = {"properties": {"code": {"enum": [answer.code for answer in answers]}}}
    return {
        "description": " ".join(first_line(answer) for answer in answers),
        "content": {media: {"schema": {"allOf": [ref(name), codes]}}},
    }


def first_line(answer: errors.Answer) -> str:
    """The first line of an error class's docstring: when it is answered."""
    return (answer.__doc__ or answer.code).strip().splitlines()[0]
