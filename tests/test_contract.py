"""The contract's models: real answers fit them, the document holds them, refusals map exactly."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from pydantic import ValidationError

from harness.images import encode, garment
from service import errors
from service.api.kserve_v2 import HEADER_LENGTH
from service.api.openapi import document
from service.contract.document import DOCUMENTED
from service.contract.errors import Problem, ProtocolError
from service.contract.kserve_v2 import (
    INFERENCE_REFUSALS,
    InferenceRequest,
    InferenceResponse,
    ModelMetadata,
    ServerMetadata,
)
from service.contract.predict import (
    PREDICT_REFUSALS,
    Alive,
    Loading,
    PredictRequest,
    PredictResponse,
    Ready,
)
from service.contract.reading import refusal_key
from service.contract.tf_serving import (
    TF_PREDICT_REFUSALS,
    TfColumnsResponse,
    TfModelMetadata,
    TfModelStatus,
    TfPredictRequest,
    TfRowsResponse,
)

MODEL = "fashion_mnist"
PIXELS = garment(3).tolist()
V2 = f"/v2/models/{MODEL}/infer"
V1 = f"/v1/models/{MODEL}:predict"


def tensor(**fields) -> dict:
    """A v2 inference request whose input tensor has `fields` changed ("DROP": left out)."""
    base = {"name": "images", "shape": [1, 28, 28], "datatype": "UINT8", "data": [0] * 784}
    base |= fields
    return {"inputs": [{key: value for key, value in base.items() if value != "DROP"}]}


@pytest.mark.parametrize(
    ("method", "path", "body", "model"),
    [
        ("get", "/healthz", None, Alive),
        ("get", "/readyz", None, Ready),
        ("post", "/predict", {"instances": [PIXELS]}, PredictResponse),
        ("post", "/predict?top_k=3", {"instances": [PIXELS] * 2}, PredictResponse),
        ("get", f"/v1/models/{MODEL}", None, TfModelStatus),
        ("get", f"/v1/models/{MODEL}/metadata", None, TfModelMetadata),
        ("post", V1, {"instances": [PIXELS]}, TfRowsResponse),
        ("post", V1, {"inputs": {"images": [PIXELS]}}, TfColumnsResponse),
        ("get", "/v2", None, ServerMetadata),
        ("get", f"/v2/models/{MODEL}", None, ModelMetadata),
        ("post", V2, tensor(data=PIXELS) | {"id": "7"}, InferenceResponse),
        ("post", "/predict", {"instances": [7]}, Problem),
        ("get", "/nope", None, Problem),
        ("post", V2, tensor(name="x"), ProtocolError),
        ("post", V1, {"instances": 5}, ProtocolError),
    ],
)
def test_real_answers_fit_their_models(client, method, path, body, model):
    response = getattr(client, method)(path, json=body)
    model.model_validate(response.json, strict=True)
    refused = model in (Problem, ProtocolError)
    assert (response.status_code >= 400) == refused, response.json


def test_a_binary_inference_answer_fits_its_model(client):
    body = tensor(data=PIXELS) | {"parameters": {"binary_data_output": True}}
    response = client.post(V2, json=body)
    length = int(response.headers[HEADER_LENGTH])
    answer = InferenceResponse.model_validate_json(response.data[:length])
    assert answer.outputs[0].parameters.binary_data_size == len(response.data) - length == 40


def test_readiness_before_loading_fits_its_model(tmp_path):
    from service import create_app

    app = create_app({"model_dir": tmp_path})
    app.extensions["versions"].wait_ready(2)
    response = app.test_client().get("/readyz")
    assert response.status_code == 503
    Loading.model_validate(response.json)
    app.extensions["versions"].stop()


def test_every_documented_model_is_in_the_document(app):
    schemas = document(app)["components"]["schemas"]
    assert {model.__name__ for model in DOCUMENTED} <= set(schemas)
    assert "x-batch-limit" not in json.dumps(schemas)  # every marker got the limit


def test_every_route_documents_the_errors_it_declares(app):
    from service.api import kserve_v2, routes, tf_serving

    spec = document(app)["paths"]
    declared = {
        ("/predict", "post"): routes.PREDICT_ERRORS,
        ("/preprocess", "post"): routes.UPLOAD_ERRORS,
        ("/v1/models/{name}:predict", "post"): tf_serving.PREDICT_ERRORS,
        ("/v2/models/{name}/infer", "post"): kserve_v2.INFER_ERRORS,
        ("/v2/models/{name}/versions/{version}/ready", "get"): (
            *kserve_v2.READY_ERRORS,
            errors.ModelVersionNotFound,
        ),
    }
    for (path, method), answers in declared.items():
        responses = spec[path][method]["responses"]
        for answer in (*answers, errors.InternalError):
            media = next(iter(responses[str(answer.status)]["content"].values()))
            assert answer.code in media["schema"]["allOf"][1]["properties"]["code"]["enum"]


# Every entry of the refusal tables, each with the message it answers (the same as before the
# models: tests/test_protocols.py and test_routes.py check the codes of most of them).
REFUSALS = [
    ("/predict", [], 400, "malformed_request", 'an "instances" list'),
    ("/predict", {"instances": []}, 400, "malformed_request", "The request holds no image."),
    ("/predict", {"instances": [7]}, 400, "malformed_request", "instances[0] must be {"),
    ("/predict", {"instances": [{"b64": 5}]}, 400, "malformed_request", '"<base64 image>"'),
    ("/predict", {"instances": [{"b64": "%"}]}, 400, "malformed_request", "not valid base64"),
    (V1, 5, 400, "malformed_request", 'with "instances" or "inputs"'),
    (V1, {"signature_name": 5, "inputs": []}, 400, "invalid_parameter", "signature 5 is"),
    (V1, {"signature_name": None, "inputs": []}, 400, "invalid_parameter", "signature None"),
    (V1, {"instances": None}, 400, "malformed_request", '"instances" must be a list'),
    (V2, [], 400, "malformed_request", 'an "inputs" list'),
    (V2, tensor() | {"id": 5}, 400, "malformed_request", '"id" must be a string.'),
    (V2, {"inputs": []}, 400, "invalid_tensor", "Send exactly one input tensor, 'images'."),
    (V2, tensor() | {"inputs": [{}, {}]}, 400, "invalid_tensor", "Send exactly one input"),
    (V2, {"inputs": [5]}, 400, "invalid_tensor", "Send exactly one input"),
    (V2, tensor(name="DROP"), 400, "invalid_tensor", "Unknown input None;"),
    (V2, tensor(name=5), 400, "invalid_tensor", "Unknown input 5;"),
    (V2, tensor(datatype="BYTES"), 400, "invalid_tensor", "Datatype 'BYTES' is not"),
    (V2, tensor(shape=[1, 28, -28]), 400, "invalid_tensor", "list of non-negative integers"),
    (V2, tensor(parameters=[]), 400, "malformed_request", '"parameters" must be an object.'),
    (
        V2,
        tensor(parameters={"binary_data_size": "784"}),
        400,
        "invalid_tensor",
        "binary_data_size must be an integer; got '784'.",
    ),
    (V2, tensor() | {"parameters": 5}, 400, "malformed_request", '"parameters" must be an'),
    (
        V2,
        tensor() | {"parameters": {"binary_data_output": 1}},
        400,
        "malformed_request",
        '"binary_data_output" must be true or false.',
    ),
    (V2, tensor() | {"outputs": {}}, 400, "malformed_request", '"outputs" must be a list.'),
    (V2, tensor() | {"outputs": [5]}, 400, "invalid_tensor", "Unknown output 5;"),
    (V2, tensor() | {"outputs": [{}]}, 400, "invalid_tensor", "Unknown output None;"),
    (
        V2,
        tensor() | {"outputs": [{"name": "probabilities", "parameters": 1}]},
        400,
        "malformed_request",
        '"parameters" must be an object.',
    ),
    (
        V2,
        tensor() | {"outputs": [{"name": "probabilities", "parameters": {"binary_data": 1}}]},
        400,
        "malformed_request",
        '"binary_data" must be true or false.',
    ),
]


@pytest.mark.parametrize(("path", "body", "status", "code", "words"), REFUSALS)
def test_each_refusal_answers_its_code_and_message(client, path, body, status, code, words):
    response = client.post(path, json=body)
    assert response.status_code == status and response.json["code"] == code
    assert words in response.json.get("detail", response.json.get("error"))


def test_the_cases_above_reach_every_entry_of_the_refusal_tables():
    tables = {
        "/predict": (PredictRequest, PREDICT_REFUSALS),
        V1: (TfPredictRequest, TF_PREDICT_REFUSALS),
        V2: (InferenceRequest, INFERENCE_REFUSALS),
    }
    reached = {path: set() for path in tables}
    for path, body, *_ in REFUSALS:
        model, table = tables[path]
        try:
            model.model_validate(body)
        except ValidationError as error:
            reached[path].add(refusal_key(error.errors()[0], table))
    for path, (_, table) in tables.items():
        assert reached[path] == set(table), path


def deep(levels: int, leaf: object = 0) -> list:
    """A value nested `levels` lists deep."""
    return json.loads("[" * levels + json.dumps(leaf) + "]" * levels)


@pytest.mark.parametrize(
    ("instance", "words"),
    [
        ([[0] * 28] * 27 + [[0] * 29], "28 rows of 28 numbers"),  # ragged
        ([[10**400] * 28] * 28, "28 rows of 28 numbers"),  # beyond float64
        ([[0] * 28] * 27, "28x28; got shape [27, 28]"),
        ([[[0, 0]] * 28] * 28, "28x28; got shape [28, 28, 2]"),
        ([[True] * 28] * 28, "finite numbers."),
        ([["7"] * 28] * 28, "finite numbers."),
        ([[None] * 28] * 28, "finite numbers."),
        ([[-1] * 28] * 28, "between 0 and 255."),
        ([[[300]] * 28] * 28, "between 0 and 255."),
    ],
)
def test_each_pixel_array_refusal_says_what_is_wrong(client, instance, words):
    response = client.post("/predict", json={"instances": [instance]})
    assert response.status_code == 422 and response.json["code"] == "invalid_pixels"
    assert words in response.json["detail"]


def test_pixel_arrays_of_both_layouts_and_rounded_values_are_taken(client):
    columns = (np.asarray(PIXELS)[..., np.newaxis] + 0.4).tolist()
    both = client.post("/predict", json={"instances": [PIXELS, columns]}).json["predictions"]
    assert both[0]["probabilities"] == pytest.approx(both[1]["probabilities"], abs=1e-6)


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ([0] * 783 + [[True]], "found true."),
        ([0] * 783 + ["7"], 'found "7".'),
        ([[0] * 392, [[0] * 391, None]], "found null."),
        ([10**400] * 784, "too large for any pixel."),
        # Deeper than pydantic follows (255 levels): checked all the same, as before the models.
        (deep(300), "needs 784 values; got 1."),
        (deep(300, "x"), 'found "x".'),
        ([[0] * 783, [0]], None),  # ragged nesting: its values in row-major order
    ],
)
def test_tensor_data_is_numbers_at_any_depth(client, data, words):
    response = client.post(V2, json=tensor(data=data))
    if words is None:
        assert response.status_code == 200
    else:
        assert response.status_code == 400 and words in response.json["error"]


def test_a_base64_image_is_decoded_by_its_model():
    png = encode(garment())
    request = PredictRequest.model_validate(
        {"instances": [{"b64": base64.b64encode(png).decode()}, PIXELS]}
    )
    assert request.instances[0].b64 == png and request.instances[1] == PIXELS
