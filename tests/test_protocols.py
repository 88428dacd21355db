"""KServe v2 and TensorFlow Serving REST: real clients against gunicorn, and validation tables."""

from __future__ import annotations

import json
import tomllib

import numpy as np
import pytest
import requests

from harness import ROOT
from harness.images import garment
from harness.server import LiveServer
from service.contract.kserve_v2 import SERVER_VERSION

CLASS_COUNT = 10
MODEL = "fashion_mnist"


def pixels(count: int = 3) -> np.ndarray:
    """A uint8 batch [count, 28, 28] of synthetic garments, one class each."""
    return np.stack([garment(label) for label in range(count)])


def v2_input(data: object, shape: list[int], datatype: str = "UINT8", **extra) -> dict:
    """One KServe v2 inference request with a single input tensor."""
    return {
        "inputs": [{"name": "images", "shape": shape, "datatype": datatype, "data": data}]
    } | extra


def predicted(live_server: LiveServer, images: np.ndarray) -> np.ndarray:
    """/predict's probabilities [N, 10] for uint8 images [N, 28, 28], in class order."""
    answer = requests.post(
        live_server.url + "/predict", json={"instances": images.tolist()}, timeout=30
    )
    assert answer.status_code == 200, answer.text[:300]
    rows = [list(p["probabilities"].values()) for p in answer.json()["predictions"]]
    return np.asarray(rows, dtype=np.float32)


@pytest.fixture(scope="module")
def triton(live_server):
    """NVIDIA's own HTTP client, unmodified, pointed at the live server."""
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(live_server.url.removeprefix("http://"))
    yield client
    client.close()


# --- KServe v2 through tritonclient, against gunicorn ---


@pytest.mark.slow
def test_triton_client_health_and_server_metadata(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready(MODEL) and triton.is_model_ready(MODEL, "1")
    assert not triton.is_model_ready(MODEL, "9") and not triton.is_model_ready("other")
    metadata = triton.get_server_metadata()
    assert metadata["name"] == "fashion-mnist-serving"
    assert "binary_tensor_data" in metadata["extensions"]


@pytest.mark.slow
def test_triton_client_model_metadata(triton):
    metadata = triton.get_model_metadata(MODEL)
    assert metadata["name"] == MODEL and metadata["versions"] == ["1"]
    assert metadata["inputs"] == [{"name": "images", "datatype": "UINT8", "shape": [-1, 28, 28]}]
    assert metadata["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": [-1, CLASS_COUNT]}
    ]
    assert triton.get_model_metadata(MODEL, "1") == metadata


@pytest.mark.slow
@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize(
    ("datatype", "shape"),
    [("UINT8", (3, 28, 28)), ("FP32", (3, 28, 28)), ("FP32", (3, 28, 28, 1))],
)
def test_triton_client_infer(live_server, triton, binary, datatype, shape):
    import tritonclient.http as httpclient

    images = pixels().astype(np.uint8 if datatype == "UINT8" else np.float32).reshape(shape)
    tensor = httpclient.InferInput("images", list(shape), datatype)
    tensor.set_data_from_numpy(images, binary_data=binary)
    output = httpclient.InferRequestedOutput("probabilities", binary_data=binary)
    result = triton.infer(MODEL, [tensor], outputs=[output], request_id="req-7")
    probabilities = result.as_numpy("probabilities")
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, CLASS_COUNT)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)
    # The same pixels, whatever their datatype and shape, get /predict's answer.
    np.testing.assert_allclose(probabilities, predicted(live_server, pixels()), atol=1e-6)
    response = result.get_response()
    assert response["id"] == "req-7" and response["model_version"] == "1"
    sent_binary = "binary_data_size" in result.get_output("probabilities").get("parameters", {})
    assert sent_binary == binary


@pytest.mark.slow
def test_triton_client_default_outputs_come_back_binary(triton):
    import tritonclient.http as httpclient

    tensor = httpclient.InferInput("images", [2, 28, 28], "UINT8")
    tensor.set_data_from_numpy(pixels(2))
    result = triton.infer(MODEL, [tensor], model_version="1")  # asks binary_data_output
    output = result.get_output("probabilities")
    assert output["parameters"] == {"binary_data_size": 2 * CLASS_COUNT * 4}
    assert result.as_numpy("probabilities").shape == (2, CLASS_COUNT)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "version", "datatype", "status", "words"),
    [
        ("pixels", "", "UINT8", "400", "Unknown input 'pixels'"),
        ("images", "", "INT64", "400", "Datatype 'INT64'"),
        ("images", "9", "UINT8", "404", "Version 9 is not served"),
    ],
)
def test_triton_client_sees_protocol_errors(triton, name, version, datatype, status, words):
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    tensor = httpclient.InferInput(name, [1, 28, 28], datatype)
    tensor.set_data_from_numpy(pixels(1).astype(np.int64 if datatype == "INT64" else np.uint8))
    with pytest.raises(InferenceServerException) as raised:
        triton.infer(MODEL, [tensor], model_version=version)
    assert raised.value.status() == status and words in raised.value.message()


# --- TensorFlow Serving REST, plain HTTP as its documentation shows ---


@pytest.mark.slow
def test_tf_serving_status_and_metadata(live_server):
    status = requests.get(f"{live_server.url}/v1/models/{MODEL}", timeout=5).json()
    assert status["model_version_status"] == [
        {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
    ]
    versioned = requests.get(f"{live_server.url}/v1/models/{MODEL}/versions/1", timeout=5).json()
    assert versioned["model_version_status"] == status["model_version_status"]
    metadata = requests.get(f"{live_server.url}/v1/models/{MODEL}/metadata", timeout=5).json()
    assert metadata["model_spec"] == {"name": MODEL, "signature_name": "", "version": "1"}
    signature = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    assert signature["method_name"] == "tensorflow/serving/predict"
    images = signature["inputs"]["images"]
    assert images["dtype"] == "DT_UINT8"
    assert [d["size"] for d in images["tensor_shape"]["dim"]] == ["-1", "28", "28"]
    assert signature["outputs"]["probabilities"]["dtype"] == "DT_FLOAT"


@pytest.mark.slow
def test_tf_serving_predict_row_and_columnar(live_server):
    batch = pixels().tolist()
    url = f"{live_server.url}/v1/models/{MODEL}:predict"
    rows = requests.post(url, json={"instances": batch}, timeout=30).json()["predictions"]
    named_rows = requests.post(
        url, json={"instances": [{"images": image} for image in batch]}, timeout=30
    ).json()["predictions"]
    columns = requests.post(url, json={"inputs": {"images": batch}}, timeout=30).json()["outputs"]
    bare_columns = requests.post(url, json={"inputs": batch}, timeout=30).json()["outputs"]
    versioned = requests.post(
        f"{live_server.url}/v1/models/{MODEL}/versions/1:predict",
        json={"signature_name": "serving_default", "instances": batch},
        timeout=30,
    ).json()["predictions"]
    assert np.asarray(rows).shape == (3, CLASS_COUNT)
    for other in (named_rows, columns, bare_columns, versioned):
        np.testing.assert_allclose(other, rows, atol=1e-6)


@pytest.mark.slow
def test_tf_serving_predict_the_curl_way(live_server):
    # `curl -d '{...}' URL` sends application/x-www-form-urlencoded; TF Serving reads it as JSON.
    body = json.dumps({"instances": pixels(1).tolist()})
    response = requests.post(
        f"{live_server.url}/v1/models/{MODEL}:predict",
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        timeout=30,
    )
    assert response.status_code == 200
    assert len(response.json()["predictions"]) == 1


@pytest.mark.slow
@pytest.mark.parametrize(
    ("path", "body", "status", "code"),
    [
        ("/v1/models/half:predict", {"instances": [[[0] * 28] * 28]}, 404, "model_not_found"),
        (
            "/v1/models/fashion_mnist/versions/7:predict",
            {"instances": []},
            404,
            "model_version_not_found",
        ),
        ("/v1/models/fashion_mnist:predict", {"examples": []}, 400, "malformed_request"),
        ("/v1/models/fashion_mnist:predict", {"instances": [[1, 2]]}, 400, "invalid_tensor"),
    ],
)
def test_tf_serving_errors_over_http(live_server, path, body, status, code):
    response = requests.post(live_server.url + path, json=body, timeout=10)
    assert response.status_code == status
    assert response.headers["Content-Type"] == "application/json"
    assert response.json()["code"] == code and response.json()["error"]


# --- one image, three protocols, one answer ---


@pytest.mark.slow
def test_the_same_image_gets_the_same_probabilities_everywhere(live_server, triton):
    import tritonclient.http as httpclient

    image = garment(4)
    ours = requests.post(
        live_server.url + "/predict", json={"instances": [image.tolist()]}, timeout=30
    ).json()["predictions"][0]["probabilities"]
    via_predict = np.asarray(list(ours.values()), dtype=np.float32)
    tf_serving = requests.post(
        f"{live_server.url}/v1/models/{MODEL}:predict",
        json={"instances": [image.tolist()]},
        timeout=30,
    ).json()["predictions"][0]
    tensor = httpclient.InferInput("images", [1, 28, 28], "UINT8")
    tensor.set_data_from_numpy(image[np.newaxis])
    kserve = triton.infer(MODEL, [tensor]).as_numpy("probabilities")[0]
    np.testing.assert_allclose(tf_serving, via_predict, atol=1e-6)
    np.testing.assert_allclose(kserve, via_predict, atol=1e-6)


# --- validation tables, through Flask's test client ---

GOOD = pixels(1).tolist()
ONE = [1, 28, 28]
FINE = json.dumps(v2_input(GOOD, ONE)).encode()


def v2_body(data: object, shape: list, datatype: str = "UINT8", **extra) -> bytes:
    """A v2 inference request's bytes."""
    return json.dumps(v2_input(data, shape, datatype, **extra)).encode()


@pytest.mark.parametrize(
    ("body", "headers", "status", "code"),
    [
        (b"{", {}, 400, "malformed_request"),
        (b"[]", {}, 400, "malformed_request"),
        (b'{"inputs": {}}', {}, 400, "malformed_request"),
        (b"[" * 100_000 + b"]" * 100_000, {}, 400, "malformed_request"),
        (FINE, {"Content-Encoding": "gzip"}, 415, "unsupported_media_type"),
        (FINE, {"Inference-Header-Content-Length": "x"}, 400, "malformed_request"),
        (FINE, {"Inference-Header-Content-Length": "9" * 5000}, 400, "malformed_request"),
        (b'{"inputs": []}', {}, 400, "invalid_tensor"),
        (v2_body(GOOD, ONE, outputs=[{"name": "logits"}]), {}, 400, "invalid_tensor"),
        (v2_body(GOOD, ONE, "BYTES"), {}, 400, "invalid_tensor"),
        (v2_body(GOOD, [1, 28]), {}, 400, "invalid_tensor"),
        (v2_body(GOOD, [1, 28, 28, 3]), {}, 400, "invalid_tensor"),
        (v2_body(GOOD, [2, 28, 28]), {}, 400, "invalid_tensor"),
        (v2_body([], [0, 28, 28]), {}, 400, "invalid_tensor"),
        (v2_body(GOOD, [1, 28, "28"]), {}, 400, "invalid_tensor"),
        (v2_body([True] * 784, ONE), {}, 400, "invalid_tensor"),
        (v2_body(["7"] * 784, ONE), {}, 400, "invalid_tensor"),
        (v2_body([256] * 784, ONE), {}, 400, "invalid_tensor"),
        (v2_body([0.5] * 784, ONE), {}, 400, "invalid_tensor"),
        (v2_body([-1.0] * 784, ONE, "FP32"), {}, 400, "invalid_tensor"),
        (v2_body([10**400] * 784, ONE, "FP32"), {}, 400, "invalid_tensor"),
        (v2_body([float("nan")] * 784, ONE, "FP32"), {}, 400, "malformed_request"),
        (v2_body(GOOD * 65, [65, 28, 28]), {}, 413, "batch_too_large"),
        # Members of the wrong JSON type were ignored, or an "id" echoed off the protocol.
        (v2_body(GOOD, ONE, id=5), {}, 400, "malformed_request"),
        (v2_body(GOOD, ONE, parameters=[]), {}, 400, "malformed_request"),
        (
            v2_body(GOOD, ONE, parameters={"binary_data_output": "yes"}),
            {},
            400,
            "malformed_request",
        ),
        (v2_body(GOOD, ONE, outputs={}), {}, 400, "malformed_request"),
        (
            v2_body(GOOD, ONE, outputs=[{"name": "probabilities", "parameters": 5}]),
            {},
            400,
            "malformed_request",
        ),
        (
            v2_body(
                GOOD,
                ONE,
                outputs=[{"name": "probabilities", "parameters": {"binary_data": "true"}}],
            ),
            {},
            400,
            "malformed_request",
        ),
        (
            json.dumps({"inputs": [v2_input(GOOD, ONE)["inputs"][0] | {"parameters": 0}]}).encode(),
            {},
            400,
            "malformed_request",
        ),
    ],
)
def test_v2_infer_refuses_bad_requests(client, body, headers, status, code):
    response = client.post(f"/v2/models/{MODEL}/infer", data=body, headers=headers)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.content_type == "application/json"
    assert response.json["code"] == code and response.json["error"]


def test_v2_infer_takes_null_members_as_absent(client):
    body = v2_input(GOOD, ONE, id=None, parameters=None, outputs=None)
    body["inputs"][0]["parameters"] = None
    response = client.post(f"/v2/models/{MODEL}/infer", json=body)
    assert response.status_code == 200 and response.content_type == "application/json"
    assert "id" not in response.json and len(response.json["outputs"][0]["data"]) == CLASS_COUNT


def binary_request(header: dict, data: bytes) -> tuple[bytes, dict]:
    """Frame a binary-data request: the JSON header, then the raw tensor bytes."""
    text = json.dumps(header).encode()
    return text + data, {"Inference-Header-Content-Length": str(len(text))}


@pytest.mark.parametrize(
    ("declared", "sent", "datatype"),
    [(784, 783, "UINT8"), (784, 784, "FP32"), (3136, 3136, "FP32")],
)
def test_v2_binary_data_must_match_its_declared_size(client, declared, sent, datatype):
    header = {
        "inputs": [
            {
                "name": "images",
                "shape": [1, 28, 28] if declared != 3136 else [2, 28, 28],
                "datatype": datatype,
                "parameters": {"binary_data_size": declared},
            }
        ]
    }
    body, headers = binary_request(header, bytes(sent))
    response = client.post(f"/v2/models/{MODEL}/infer", data=body, headers=headers)
    assert response.status_code == 400 and response.json["code"] == "invalid_tensor"


def test_v2_binary_request_and_flat_json_agree(client):
    image = garment(6)
    header = {
        "id": "b",
        "inputs": [
            {
                "name": "images",
                "shape": [1, 28, 28, 1],
                "datatype": "UINT8",
                "parameters": {"binary_data_size": 784},
            }
        ],
        "outputs": [{"name": "probabilities", "parameters": {"binary_data": True}}],
    }
    body, headers = binary_request(header, image.tobytes())
    binary = client.post(f"/v2/models/{MODEL}/infer", data=body, headers=headers)
    assert binary.status_code == 200 and binary.content_type == "application/octet-stream"
    length = int(binary.headers["Inference-Header-Content-Length"])
    meta = json.loads(binary.data[:length])
    assert meta["id"] == "b" and meta["outputs"][0]["shape"] == [1, CLASS_COUNT]
    from_binary = np.frombuffer(binary.data[length:], dtype="<f4")
    flat = client.post(
        f"/v2/models/{MODEL}/infer",
        json=v2_input(image.ravel().tolist(), [1, 28, 28], "FP32"),
    ).json["outputs"][0]["data"]
    np.testing.assert_allclose(from_binary, flat, atol=1e-6)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"instances": GOOD, "inputs": GOOD}, 400, "malformed_request"),
        ({"instances": {"images": GOOD}}, 400, "malformed_request"),
        ({"signature_name": "classify", "instances": GOOD}, 400, "invalid_parameter"),
        ({"instances": [{"pixels": GOOD[0]}]}, 400, "invalid_tensor"),
        ({"inputs": {"images": GOOD, "extra": 1}}, 400, "invalid_tensor"),
        ({"instances": GOOD[0]}, 400, "invalid_tensor"),
        ({"instances": []}, 400, "invalid_tensor"),
        ({"instances": [[[0] * 28] * 27]}, 400, "invalid_tensor"),
        ({"instances": [[[300] * 28] * 28]}, 400, "invalid_tensor"),
        ({"instances": [[[None] * 28] * 28]}, 400, "invalid_tensor"),
        ({"instances": GOOD * 65}, 413, "batch_too_large"),
    ],
)
def test_tf_serving_predict_refuses_bad_requests(client, body, status, code):
    response = client.post(f"/v1/models/{MODEL}:predict", json=body)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.json["code"] == code and response.json["error"]


def test_protocol_paths_answer_errors_in_the_protocol_form(client):
    for path in ("/v2/nope", "/v1/nope", f"/v1/models/{MODEL}/versions/{'9' * 5000}"):
        response = client.get(path)
        assert response.status_code == 404 and set(response.json) == {"error", "code"}
    wrong_method = client.get(f"/v2/models/{MODEL}/infer")
    assert wrong_method.status_code == 405 and wrong_method.json["code"] == "method_not_allowed"
    assert client.get("/nope").content_type == "application/problem+json"


def test_the_predict_url_allows_only_post(client):
    # TF Serving's names hold no ":", so GET /v1/models/<name> does not take "m:predict".
    response = client.get(f"/v1/models/{MODEL}:predict")
    assert response.status_code == 405 and response.json["code"] == "method_not_allowed"
    allow = client.options(f"/v1/models/{MODEL}:predict").headers["Allow"]
    assert set(allow.split(", ")) == {"OPTIONS", "POST"}
    assert client.get(f"/v1/models/{MODEL}:status").json["code"] == "not_found"


def test_health_is_false_until_the_model_is_loaded(tmp_path):
    from service import create_app

    app = create_app({"model_dir": tmp_path})  # nothing to load: never ready
    app.extensions["versions"].wait_ready(2)
    client = app.test_client()
    assert client.get("/v2/health/live").status_code == 200
    assert client.get("/v2/health/ready").status_code == 400
    assert client.get(f"/v2/models/{MODEL}/ready").status_code == 400
    infer = client.post(f"/v2/models/{MODEL}/infer", json=v2_input(GOOD, [1, 28, 28]))
    assert infer.status_code == 503 and infer.headers["Retry-After"] == "1"
    assert "no model version" in infer.json["error"]
    app.extensions["versions"].stop()


def test_server_metadata_version_is_the_project_version():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert SERVER_VERSION == project["version"]
