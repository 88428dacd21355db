"""The JSON Schemas of every documented model, for /openapi.json (service/api/openapi.py)."""

from __future__ import annotations

from typing import Any

from pydantic.json_schema import GenerateJsonSchema

from service.contract.errors import Problem, ProtocolError
from service.contract.kserve_v2 import (
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ServerMetadata,
)
from service.contract.predict import Alive, Loading, PredictRequest, PredictResponse, Ready
from service.contract.tf_serving import (
    TfColumnsResponse,
    TfModelMetadata,
    TfModelStatus,
    TfPredictRequest,
    TfRowsResponse,
)


class Schemas(GenerateJsonSchema):
    """JSON Schema as the document shows it: no titles repeating the property names."""

    def field_title_should_be_set(self, schema: Any) -> bool:
        """Never: a property's name says it."""
        return False

    def default_schema(self, schema: Any) -> Any:
        """A field's schema without a default of None: an absent optional field is absent, and
        null is no value of most of these schemas (`top_k` is an array), which OpenAPI's
        validators refuse."""
        json_schema = super().default_schema(schema)
        if "default" in json_schema and json_schema["default"] is None:
            del json_schema["default"]
        return json_schema


DOCUMENTED = (
    Problem,
    ProtocolError,
    Alive,
    Ready,
    Loading,
    PredictRequest,
    PredictResponse,
    TfPredictRequest,
    TfRowsResponse,
    TfColumnsResponse,
    TfModelStatus,
    TfModelMetadata,
    ServerMetadata,
    ModelMetadata,
    InferenceRequest,
    InferenceResponse,
)


def json_schemas(ref_template: str) -> dict[str, Any]:
    """Every documented model's JSON Schema, and the schemas they refer to, by name."""
    from pydantic.json_schema import models_json_schema

    _, top = models_json_schema(
        [(model, "validation") for model in DOCUMENTED],
        ref_template=ref_template,
        schema_generator=Schemas,
    )
    definitions: dict[str, Any] = top["$defs"]
    return definitions
