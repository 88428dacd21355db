"""gRPC: NVIDIA's tritonclient and TensorFlow Serving's own stubs against gunicorn, and the
data plane's conditions (a held batcher, no model yet) by construction, in process."""

from __future__ import annotations

import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
import pytest
import requests

from harness.images import garment
from harness.server import LiveServer
from service.grpc.observed import ERROR_CODE_KEY, RETRY_AFTER_KEY

MODEL = "fashion_mnist"
CLASS_COUNT = 10


def pixels(count: int = 3) -> np.ndarray:
    """A uint8 batch [count, 28, 28] of synthetic garments."""
    return np.stack([garment(label % CLASS_COUNT) for label in range(count)])


def predicted(server: LiveServer, images: np.ndarray) -> np.ndarray:
    """/predict's probabilities [N, 10] for uint8 images [N, 28, 28], in class order."""
    answer = requests.post(server.url + "/predict", json={"instances": images.tolist()}, timeout=30)
    assert answer.status_code == 200, answer.text[:300]
    rows = [list(p["probabilities"].values()) for p in answer.json()["predictions"]]
    return np.asarray(rows, dtype=np.float32)


@pytest.fixture(scope="module")
def triton(live_server):
    """NVIDIA's own gRPC client, unmodified, pointed at the live server's gRPC port."""
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(live_server.grpc_target)
    yield client
    client.close()


@pytest.fixture(scope="module")
def channel(live_server):
    """A plain gRPC channel to the live server, for TF Serving's and the health stubs."""
    with grpc.insecure_channel(live_server.grpc_target) as opened:
        yield opened


@pytest.fixture(scope="module")
def tf_serving(channel):
    """TensorFlow Serving's own PredictionServiceStub (tensorflow-serving-api)."""
    from tensorflow_serving.apis import prediction_service_pb2_grpc

    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


def predict_request(images: np.ndarray, **spec):
    """A TF Serving PredictRequest whose input is tf.make_tensor_proto(images)."""
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2

    request = predict_pb2.PredictRequest()
    request.model_spec.name = spec.pop("name", MODEL)
    if "version" in spec:
        request.model_spec.version.value = spec.pop("version")
    if "label" in spec:
        request.model_spec.version_label = spec.pop("label")
    request.model_spec.signature_name = spec.pop("signature", "")
    request.inputs[spec.pop("input", "images")].CopyFrom(tf.make_tensor_proto(images))
    assert not spec
    return request


def failure(call) -> tuple[grpc.StatusCode, str | None, dict[str, str]]:
    """Run a call expected to fail: its status code, stable code and trailing metadata."""
    with pytest.raises(grpc.RpcError) as raised:
        call()
    trailers = dict(raised.value.trailing_metadata() or ())
    return raised.value.code(), trailers.get(ERROR_CODE_KEY), trailers


# --- the Open Inference Protocol through tritonclient.grpc ---


@pytest.mark.slow
def test_triton_grpc_health_and_metadata(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready(MODEL) and triton.is_model_ready(MODEL, "1")
    metadata = triton.get_model_metadata(MODEL, as_json=True)
    assert metadata["name"] == MODEL and metadata["versions"] == ["1"]
    assert metadata["platform"] == "tensorflow_savedmodel"
    assert metadata["inputs"] == [
        {"name": "images", "datatype": "UINT8", "shape": ["-1", "28", "28"]}
    ]
    assert metadata["outputs"] == [
        {"name": "probabilities", "datatype": "FP32", "shape": ["-1", str(CLASS_COUNT)]}
    ]
    assert triton.get_server_metadata(as_json=True)["name"] == "fashion-mnist-serving"


@pytest.mark.slow
@pytest.mark.parametrize(
    ("datatype", "shape"),
    [("UINT8", (3, 28, 28)), ("FP32", (3, 28, 28)), ("FP32", (3, 28, 28, 1))],
)
def test_triton_grpc_infer_matches_predict(live_server, triton, datatype, shape):
    import tritonclient.grpc as grpcclient

    images = pixels().astype(np.uint8 if datatype == "UINT8" else np.float32).reshape(shape)
    tensor = grpcclient.InferInput("images", list(shape), datatype)
    tensor.set_data_from_numpy(images)  # raw_input_contents: binary, as tritonclient sends
    result = triton.infer(MODEL, [tensor], request_id="req-9")
    probabilities = result.as_numpy("probabilities")  # from raw_output_contents
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, CLASS_COUNT)
    np.testing.assert_allclose(probabilities, predicted(live_server, pixels()), atol=1e-6)
    response = result.get_response()
    assert response.id == "req-9" and response.model_version == "1"


# --- TensorFlow Serving's PredictionService through its own stub ---


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [np.uint8, np.float32])
def test_tf_serving_predict_matches_predict(live_server, tf_serving, dtype):
    import tensorflow as tf

    response = tf_serving.Predict(predict_request(pixels().astype(dtype)), timeout=30)
    probabilities = tf.make_ndarray(response.outputs["probabilities"])
    assert probabilities.dtype == np.float32 and probabilities.shape == (3, CLASS_COUNT)
    np.testing.assert_allclose(probabilities, predicted(live_server, pixels()), atol=1e-6)
    assert response.model_spec.name == MODEL and response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"


@pytest.mark.slow
def test_tf_serving_get_model_metadata(tf_serving):
    from tensorflow_serving.apis import get_model_metadata_pb2

    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = MODEL
    response = tf_serving.GetModelMetadata(request, timeout=30)
    assert response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    signature = signatures.signature_def["serving_default"]
    assert list(signature.inputs) == ["images"] and list(signature.outputs) == ["probabilities"]
    assert [d.size for d in signature.outputs["probabilities"].tensor_shape.dim] == [-1, 10]


@pytest.mark.slow
def test_grpc_health_serves_once_ready(channel):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "inference.GRPCInferenceService", "tensorflow.serving.PredictionService"):
        answer = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert answer.status == health_pb2.HealthCheckResponse.SERVING


# --- every error, its status code and its stable code ---

TF_ERRORS = [
    ({"name": "other"}, grpc.StatusCode.NOT_FOUND, "model_not_found"),
    ({"version": 9}, grpc.StatusCode.NOT_FOUND, "model_version_not_found"),
    ({"label": "stable"}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_parameter"),
    ({"signature": "other"}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_parameter"),
    ({"input": "pixels"}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_tensor"),
    ({"images": pixels(65)}, grpc.StatusCode.RESOURCE_EXHAUSTED, "batch_too_large"),
    ({"images": np.zeros((1, 27, 28))}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_tensor"),
    ({"images": np.full((1, 28, 28), 300.0)}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_tensor"),
    ({"images": np.full((1, 28, 28), "x")}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_tensor"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "status", "code"), TF_ERRORS)
def test_tf_serving_errors(tf_serving, spec, status, code):
    images = spec.pop("images", pixels(1))
    request = predict_request(images, **spec)
    assert failure(lambda: tf_serving.Predict(request, timeout=30))[:2] == (status, code)


@pytest.mark.slow
def test_tf_serving_metadata_needs_a_known_field(tf_serving):
    from tensorflow_serving.apis import get_model_metadata_pb2

    for fields in ([], ["signature_def", "other"]):
        request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=fields)
        request.model_spec.name = MODEL
        status, code, _ = failure(lambda r=request: tf_serving.GetModelMetadata(r, timeout=30))
        assert (status, code) == (grpc.StatusCode.INVALID_ARGUMENT, "invalid_parameter")


def infer_request(images: np.ndarray, datatype: str = "UINT8", **fields):
    """tritonclient's own ModelInferRequest message, its input in raw_input_contents."""
    from tritonclient.grpc import service_pb2

    name = fields.pop("input", "images")
    request = service_pb2.ModelInferRequest(model_name=fields.pop("model", MODEL), **fields)
    tensor = request.inputs.add(name=name, datatype=datatype)
    tensor.shape.extend(images.shape)
    dtype = {"UINT8": "u1", "FP32": "<f4", "INT32": "<i4"}[datatype]
    request.raw_input_contents.append(images.astype(dtype).tobytes())
    return request


OIP_ERRORS = [
    ({"model": "other"}, grpc.StatusCode.NOT_FOUND, "model_not_found"),
    ({"model_version": "9"}, grpc.StatusCode.NOT_FOUND, "model_version_not_found"),
    ({"model_version": "x"}, grpc.StatusCode.NOT_FOUND, "model_version_not_found"),
    ({"images": pixels(65)}, grpc.StatusCode.RESOURCE_EXHAUSTED, "batch_too_large"),
    ({"images": np.zeros((1, 28))}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_tensor"),
    ({"datatype": "INT32"}, grpc.StatusCode.INVALID_ARGUMENT, "invalid_tensor"),
    (
        {"images": np.full((1, 28, 28), 256.0), "datatype": "FP32"},
        grpc.StatusCode.INVALID_ARGUMENT,
        "invalid_tensor",
    ),
]


@pytest.mark.slow
@pytest.mark.parametrize(("fields", "status", "code"), OIP_ERRORS)
def test_open_inference_protocol_errors(channel, fields, status, code):
    from tritonclient.grpc import service_pb2_grpc  # the client's own stub

    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    images = fields.pop("images", pixels(1))
    request = infer_request(images, fields.pop("datatype", "UINT8"), **fields)
    assert failure(lambda: stub.ModelInfer(request, timeout=30))[:2] == (status, code)


@pytest.mark.slow
def test_an_oversized_message_is_refused_before_a_handler(live_server, triton):
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    images = np.zeros((3600, 28, 28), dtype=np.float32)  # 11.3 MB, over the 10 MiB body limit
    tensor = grpcclient.InferInput("images", list(images.shape), "FP32")
    tensor.set_data_from_numpy(images)
    with pytest.raises(InferenceServerException) as refused:
        triton.infer(MODEL, [tensor], headers={"x-request-id": "oversized-1"})
    assert refused.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
    # gRPC refused it as it arrived: no handler ran (no log line), and the worker answers.
    started = time.monotonic()
    assert triton.is_server_ready() and time.monotonic() - started < 5
    time.sleep(0.5)  # past the access log's flush interval
    assert "oversized-1" not in live_server.log_text()


@pytest.mark.slow
def test_every_call_writes_one_access_log_line(live_server, triton):
    import tritonclient.grpc as grpcclient

    tensor = grpcclient.InferInput("images", [2, 28, 28], "UINT8")
    tensor.set_data_from_numpy(pixels(2))
    triton.infer(MODEL, [tensor], headers={"x-request-id": "grpc-line-1"})
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        lines = [line for line in live_server.log_text().splitlines() if "grpc-line-1" in line]
        if lines:
            break
        time.sleep(0.1)
    (line,) = lines
    entry = json.loads(line)
    assert entry["method"] == "grpc" and entry["status"] == "OK"
    assert entry["path"] == "/inference.GRPCInferenceService/ModelInfer"
    assert entry["images"] == 2 and entry["error_code"] is None and entry["request_bytes"] > 0


# --- REST and gRPC at once, one batcher ---


def batch_buckets(server: LiveServer) -> dict[str, float]:
    """The model calls of fmnist_batch_size_images, cumulative, by bucket bound."""
    text = requests.get(server.metrics_url, timeout=10).text
    buckets: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("fmnist_batch_size_images_bucket"):
            bound = line.split('le="')[1].split('"')[0]
            buckets[bound] = float(line.rsplit(" ", 1)[1])
    return buckets


@pytest.fixture
def one_worker(tiny_model_dir, tmp_path):
    """A gunicorn server with one worker: every request of both transports meets one batcher."""
    server = LiveServer(tiny_model_dir, tmp_path / "gunicorn.log", FMNIST_WORKERS="1")
    server.start()
    yield server
    server.stop()


@pytest.mark.slow
def test_rest_and_grpc_load_share_model_calls(one_worker):
    import tritonclient.grpc as grpcclient

    clients, rounds = 8, 40  # 8 of each: a call of more than 8 images holds both transports
    image = pixels(1)

    def rest(_: int) -> None:
        with requests.Session() as session:
            for _ in range(rounds):
                url = one_worker.url + "/predict"
                answer = session.post(url, json={"instances": image.tolist()}, timeout=30)
                assert answer.status_code == 200, answer.text[:200]

    def grpc_client(_: int) -> None:
        client = grpcclient.InferenceServerClient(one_worker.grpc_target)
        tensor = grpcclient.InferInput("images", [1, 28, 28], "UINT8")
        tensor.set_data_from_numpy(image)
        for _ in range(rounds):
            assert client.infer(MODEL, [tensor]).as_numpy("probabilities").shape == (1, 10)
        client.close()

    with ThreadPoolExecutor(2 * clients) as pool:
        jobs = [pool.submit(rest, n) for n in range(clients)]
        jobs += [pool.submit(grpc_client, n) for n in range(clients)]
        for job in jobs:
            job.result()
    total = 2 * clients * rounds
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the worker writes its metrics every 0.1 s
        buckets = batch_buckets(one_worker)
        images_counted = requests.get(one_worker.metrics_url, timeout=10).text
        if buckets and sum_predictions(images_counted) >= total:
            break
        time.sleep(0.2)
    shared = buckets["+Inf"] - buckets["8.0"]
    assert shared > 0, buckets  # some model calls carried more than either transport's 8


def sum_predictions(metrics_text: str) -> float:
    """Images classified so far (fmnist_predictions_total over every class)."""
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in metrics_text.splitlines()
        if line.startswith("fmnist_predictions_total{")
    )


# --- by construction, in process: a held batcher, no model yet ---


@pytest.fixture
def grpc_app(app):
    """The test app's gRPC server on a free local port, and a channel to it."""
    from service.grpc.server import build

    server = build(app)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    with grpc.insecure_channel(f"127.0.0.1:{port}") as opened:
        yield app, opened
    server.stop(0)


def hold_batcher(app, monkeypatch) -> tuple[threading.Event, threading.Event]:
    """Make the default version's next model call wait: (called, release)."""
    batcher = app.extensions["versions"].model.batcher
    called, release, run = threading.Event(), threading.Event(), batcher._predict

    def held(images):
        called.set()
        release.wait(30)
        return run(images)

    monkeypatch.setattr(batcher, "_predict", held)
    return called, release


def test_a_deadline_shorter_than_the_queue_wait_is_deadline_exceeded(grpc_app, monkeypatch, caplog):
    from tritonclient.grpc import service_pb2_grpc

    app, channel = grpc_app
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    called, release = hold_batcher(app, monkeypatch)
    with ThreadPoolExecutor(1) as pool:
        leader = pool.submit(stub.ModelInfer, infer_request(pixels(1)), timeout=30)
        assert called.wait(10)  # the model call is running, held: the next request queues
        with caplog.at_level("INFO", logger="service.access"):
            status, _, _ = failure(lambda: stub.ModelInfer(infer_request(pixels(1)), timeout=0.3))
            assert status == grpc.StatusCode.DEADLINE_EXCEEDED
            deadline = time.monotonic() + 5
            while not caplog.records and time.monotonic() < deadline:
                time.sleep(0.05)
        release.set()
        assert leader.result().model_name == MODEL
    # The server gave up at the client's deadline itself, and left the queue.
    entries = [json.loads(r.getMessage()) for r in caplog.records if r.name == "service.access"]
    assert [(e["status"], e["error_code"]) for e in entries][0] == (
        "DEADLINE_EXCEEDED",
        "deadline_exceeded",
    )
    assert not app.extensions["versions"].model.batcher._pending


def test_rest_and_grpc_requests_join_one_model_call(grpc_app, monkeypatch):
    from tritonclient.grpc import service_pb2_grpc

    app, channel = grpc_app
    stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
    called, release = hold_batcher(app, monkeypatch)
    batcher = app.extensions["versions"].model.batcher
    sizes: list[int] = []
    run = batcher._predict
    monkeypatch.setattr(
        batcher, "_predict", lambda images: sizes.append(len(images)) or run(images)
    )
    with ThreadPoolExecutor(3) as pool:
        first = pool.submit(stub.ModelInfer, infer_request(pixels(1)), timeout=30)
        assert called.wait(10)
        rest = pool.submit(
            app.test_client().post, "/predict", json={"instances": pixels(3).tolist()}
        )
        grpc_call = pool.submit(stub.ModelInfer, infer_request(pixels(5)), timeout=30)
        while len(batcher._pending) < 2:  # both queued behind the held call
            time.sleep(0.01)
        release.set()
        assert first.result() and rest.result().status_code == 200 and grpc_call.result()
    assert sizes == [1, 8]  # the held call, then REST's 3 and gRPC's 5 images in one


@pytest.fixture
def loading_app(tmp_path):
    """An app with no model version to load: never ready."""
    from service import create_app

    app = create_app({"model_dir": tmp_path})
    yield app
    app.extensions["versions"].stop()
    app.extensions["metric_buffer"].close()


def test_no_model_yet_is_unavailable_with_retry_advice(loading_app):
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    from service.grpc.server import build

    server = build(loading_app)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
            status, code, trailers = failure(
                lambda: stub.ModelInfer(infer_request(pixels(1)), timeout=10)
            )
            assert (status, code) == (grpc.StatusCode.UNAVAILABLE, "model_not_ready")
            assert trailers[RETRY_AFTER_KEY] == "1"
            ready = stub.ModelReady(service_pb2.ModelReadyRequest(name=MODEL), timeout=10)
            assert not ready.ready
            health = health_pb2_grpc.HealthStub(channel)
            answer = health.Check(health_pb2.HealthCheckRequest(), timeout=10)
            assert answer.status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        server.stop(0)
