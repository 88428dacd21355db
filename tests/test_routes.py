"""The HTTP routes through Flask's test client, with a tiny real model."""

from __future__ import annotations

import base64
import io
import json
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from harness.images import catalogue_photo, encode, garment
from service.io.images import decode_image

CLASS_COUNT = 10


def multipart(*files: bytes, field: str = "image", **fields: str) -> dict:
    """Build a multipart form for the test client."""
    data: dict = {field: [(io.BytesIO(f), f"upload{i}.png") for i, f in enumerate(files)]}
    data.update(fields)
    return data


def assert_predictions(body: dict, count: int) -> None:
    """Check the shape of a 200 /predict body."""
    assert body["model"] == {"name": "fashion_mnist", "version": 1}
    assert len(body["predictions"]) == count
    for prediction in body["predictions"]:
        probabilities = prediction["probabilities"]
        assert len(probabilities) == CLASS_COUNT
        assert sum(probabilities.values()) == pytest.approx(1.0, abs=1e-4)
        assert prediction["label"] == max(probabilities, key=probabilities.get)
        assert list(probabilities)[prediction["class_id"]] == prediction["label"]
        assert prediction["confidence"] == probabilities[prediction["label"]]


def test_health_and_readiness(client):
    assert client.get("/healthz").json == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json["version"] == 1


def test_readiness_is_503_until_the_model_is_loaded(tmp_path):
    from service import create_app

    app = create_app({"model_dir": tmp_path})  # no model there: never ready
    app.extensions["versions"].wait_ready(5)
    client = app.test_client()
    assert client.get("/healthz").status_code == 200
    response = client.get("/readyz")
    assert response.status_code == 503 and "no model version" in response.json["error"]
    predict = client.post("/predict", data=encode(garment()), content_type="image/png")
    assert predict.status_code == 503 and predict.json["code"] == "model_not_ready"
    assert predict.headers["Retry-After"] == "1"


def test_model_metadata(client):
    body = client.get("/v1/models/fashion_mnist").json
    assert body["model_version_status"][0] == {
        "version": "1",
        "state": "AVAILABLE",
        "status": {"error_code": "OK", "error_message": ""},
    }
    metadata = body["metadata"]
    assert (
        len(metadata["class_names"]) == CLASS_COUNT and metadata["class_names"][0] == "T-shirt/top"
    )
    assert metadata["inputs"]["dtype"] == "uint8" and metadata["inputs"]["shape"] == [None, 28, 28]
    assert 0 <= metadata["test_accuracy"] <= 1
    assert client.get("/v1/models/other").json["code"] == "model_not_found"


def test_the_tiny_model_tells_its_classes_apart(client, tiny_data_dir):
    # Tests that compare labels across routes rely on it: a model answering one class for
    # every image would pass them all. Its test split (harness/images.py synthetic_images)
    # holds ten images of each class, each class a bright bar at a height of its own.
    from training.data import load_fashion_mnist

    test = load_fashion_mnist(tiny_data_dir).test
    predicted = []
    for start in range(0, len(test.labels), 50):
        images = test.images[start : start + 50].tolist()
        predicted += [
            p["class_id"]
            for p in client.post("/predict", json={"instances": images}).json["predictions"]
        ]
    accuracy = np.mean(np.asarray(predicted) == test.labels)
    assert accuracy >= 0.6, f"accuracy {accuracy:.2f}; chance is 0.1"
    # And most of the one garment per class that many tests send is labelled right.
    garments = client.post("/predict", json={"instances": [garment(c).tolist() for c in range(10)]})
    right = [p["class_id"] for p in garments.json["predictions"]] == np.arange(10)
    assert right.sum() >= 8, right


def test_multipart_batch_keeps_request_order(client):
    images = [garment(label) for label in (1, 7, 3)]
    response = client.post("/predict", data=multipart(*(encode(i) for i in images)))
    assert response.status_code == 200, response.json
    assert_predictions(response.json, 3)
    singles = [
        client.post("/predict", data=encode(i), content_type="image/png").json["predictions"][0]
        for i in images
    ]
    for batched, single in zip(response.json["predictions"], singles, strict=True):
        assert batched["probabilities"] == pytest.approx(single["probabilities"], abs=1e-6)


def test_a_multipart_batch_of_large_files_is_accepted(client):
    noise = np.random.default_rng(0).integers(0, 256, (12, 200, 200), dtype=np.uint8)
    files = [encode(image) for image in noise]  # about 40 KB each, 480 KB in all
    assert sum(map(len, files)) > 400_000
    response = client.post("/predict", data=multipart(*files))
    assert response.status_code == 200, response.json
    assert_predictions(response.json, 12)


@pytest.mark.parametrize(
    ("content_type", "fmt", "options"),
    [
        ("image/png", "PNG", {}),
        ("image/jpeg", "JPEG", {"quality": 95}),
        ("image/webp", "WEBP", {"lossless": True}),
        ("image/gif", "GIF", {}),
        ("image/bmp", "BMP", {}),
        ("image/tiff", "TIFF", {}),
    ],
)
def test_raw_bodies_in_every_accepted_format(client, content_type, fmt, options):
    response = client.post(
        "/predict", data=encode(garment(), fmt, **options), content_type=content_type
    )
    assert response.status_code == 200, response.json
    assert_predictions(response.json, 1)


def test_json_b64_and_pixel_arrays_agree_with_the_png_upload(client):
    pixels = garment(5)
    instances = [{"b64": base64.b64encode(encode(pixels)).decode()}, pixels.tolist()]
    response = client.post("/predict", json={"instances": instances})
    assert response.status_code == 200, response.json
    assert_predictions(response.json, 2)
    first, second = response.json["predictions"]
    # Same pixels, two rows of one model call: oneDNN may take different code paths for
    # different rows of a batch, so the last float bits can differ (seen: 7e-9).
    assert first["probabilities"] == pytest.approx(second["probabilities"], abs=1e-6)
    assert first["label"] == second["label"]


def test_top_k_lists_the_best_classes_in_order(client):
    response = client.post("/predict?top_k=3", data=encode(garment()), content_type="image/png")
    prediction = response.json["predictions"][0]
    top = prediction["top_k"]
    assert len(top) == 3 and top[0]["label"] == prediction["label"]
    assert [t["probability"] for t in top] == sorted(
        prediction["probabilities"].values(), reverse=True
    )[:3]
    form = client.post("/predict", data=multipart(encode(garment()), top_k="2"))
    assert len(form.json["predictions"][0]["top_k"]) == 2


def test_invert_parameter_changes_what_the_model_sees(client):
    data = encode(garment())
    auto = client.post("/predict?invert=auto", data=data, content_type="image/png").json
    forced = client.post("/predict?invert=true", data=data, content_type="image/png").json
    assert auto["predictions"][0]["probabilities"] != forced["predictions"][0]["probabilities"]


def test_catalogue_photo_upload(client):
    photo = catalogue_photo(garment(), scale=6, pad=(50, 20))
    response = client.post("/predict", data=encode(photo, "JPEG"), content_type="image/jpeg")
    assert response.status_code == 200
    assert_predictions(response.json, 1)


BIG_PNG = encode(Image.new("L", (6000, 5000)))


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": b"", "content_type": "image/png"}, 415, "not_an_image"),
        ({"data": b"abc"}, 415, "unsupported_media_type"),
        ({"data": b"abc", "content_type": "text/plain"}, 415, "unsupported_media_type"),
        ({"data": b"plain text", "content_type": "image/png"}, 415, "not_an_image"),
        ({"data": encode(garment())[:50], "content_type": "image/png"}, 400, "corrupt_image"),
        ({"data": BIG_PNG, "content_type": "image/png"}, 413, "image_too_large"),
        (
            {"data": encode(Image.new("L", (900, 20))), "content_type": "image/png"},
            422,
            "unusable_image",
        ),
        ({"data": b"{", "content_type": "application/json"}, 400, "malformed_request"),
        ({"json": {"images": []}}, 400, "malformed_request"),
        ({"json": {"instances": []}}, 400, "malformed_request"),
        ({"json": {"instances": [{"b64": "%%%"}]}}, 400, "malformed_request"),
        ({"json": {"instances": [7]}}, 400, "malformed_request"),
        ({"json": {"instances": [[[0] * 28] * 27]}}, 422, "invalid_pixels"),
        ({"json": {"instances": [[[300] * 28] * 28]}}, 422, "invalid_pixels"),
        ({"json": {"instances": [[[10**400] * 28] * 28]}}, 422, "invalid_pixels"),
        (
            {"data": '{"instances": [[[NaN]]]}', "content_type": "application/json"},
            400,
            "malformed_request",
        ),
        (
            {"data": "[" * 100_000 + "]" * 100_000, "content_type": "application/json"},
            400,
            "malformed_request",
        ),
        ({"json": {"instances": [[[0] * 28] * 28] * 65}}, 413, "batch_too_large"),
        ({"data": {"file": (io.BytesIO(encode(garment())), "a.png")}}, 400, "malformed_request"),
        (
            {"data": {"note": "no file at all"}, "content_type": "multipart/form-data"},
            400,
            "malformed_request",
        ),
    ],
)
def test_bad_requests_get_problem_json(client, kwargs, status, code):
    response = client.post("/predict", **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    assert response.content_type == "application/problem+json"
    body = response.json
    assert body["code"] == code and body["status"] == status and body["detail"]


@pytest.mark.parametrize(
    ("query", "code"),
    [
        ("top_k=0", "invalid_parameter"),
        ("top_k=11", "invalid_parameter"),
        ("top_k=x", "invalid_parameter"),
        ("top_k=%C2%B2", "invalid_parameter"),  # "²": str.isdigit() says yes, int() says no
        ("top_k=" + "9" * 5000, "invalid_parameter"),  # over int()'s 4300-digit limit
        ("invert=maybe", "invalid_parameter"),
    ],
)
def test_bad_parameters(client, query, code):
    response = client.post(f"/predict?{query}", data=encode(garment()), content_type="image/png")
    assert response.status_code == 400 and response.json["code"] == code


def test_body_over_the_limit_is_413(tiny_model_dir):
    from service import create_app

    app = create_app({"model_dir": tiny_model_dir, "max_body_bytes": 1000})
    app.extensions["versions"].wait_ready(60)
    response = app.test_client().post("/predict", data=b"x" * 5000, content_type="image/png")
    assert response.status_code == 413 and response.json["code"] == "body_too_large"


def test_a_request_over_the_time_limit_gets_a_clean_503(tiny_model_dir, monkeypatch):
    from service import create_app
    from service.io import deadline, uploads

    # A clock the test moves: each image decoded brings the request a second nearer its
    # 5-second limit, as a full batch of large photos would on a slow enough machine.
    clock = [0.0]
    monkeypatch.setattr(deadline, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    decoded = []

    def decode_in_a_second(data: bytes, *limits: float) -> Image.Image:
        decoded.append(len(data))
        clock[0] += 1.0
        return decode_image(data, *limits)

    monkeypatch.setattr(uploads, "decode_image", decode_in_a_second)
    app = create_app({"model_dir": tiny_model_dir, "request_timeout": 5})
    try:
        assert app.extensions["versions"].wait_ready(60)
        client = app.test_client()
        response = client.post("/predict", data=multipart(*[encode(garment())] * 64))
        assert response.status_code == 503, response.get_data(as_text=True)[:300]
        assert response.json["code"] == "deadline_exceeded"
        assert response.headers["Retry-After"] == "1"
        assert len(decoded) == 5  # it stopped at the deadline, checked between images
        raw = client.post("/predict", data=encode(garment()), content_type="image/png")
        assert raw.status_code == 200  # the next request has a limit of its own
    finally:
        app.extensions["versions"].stop()
        if "metric_buffer" in app.extensions:
            app.extensions["metric_buffer"].close()


def test_unknown_routes_and_wrong_methods_answer_json(client):
    missing = client.get("/nope")
    assert missing.status_code == 404 and missing.json["code"] == "not_found"
    wrong = client.get("/predict")
    assert wrong.status_code == 405 and wrong.json["code"] == "method_not_allowed"
    assert "POST" in wrong.headers["Allow"]


def test_an_unexpected_failure_is_a_json_500_without_traceback(app, monkeypatch):
    def explode(model, images, deadline):
        raise RuntimeError("secret internal detail")

    monkeypatch.setattr(app.extensions["dataplane"], "infer", explode)
    response = app.test_client().post("/predict", data=encode(garment()), content_type="image/png")
    assert response.status_code == 500 and response.json["code"] == "internal_error"
    assert "secret" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)


def test_settings_come_from_the_environment(monkeypatch, tiny_model_dir):
    from service.settings import Settings

    monkeypatch.setenv("FMNIST_MAX_BATCH", "3")
    monkeypatch.setenv("FMNIST_WARMUP", "false")
    settings = Settings.from_env(model_dir=tiny_model_dir)
    assert settings.max_batch == 3 and settings.warmup is False
    monkeypatch.setenv("FMNIST_MAX_BATCH", "many")
    with pytest.raises(ValueError, match="FMNIST_MAX_BATCH"):
        Settings.from_env()


def test_every_response_is_logged_as_one_json_line(client, caplog):
    caplog.set_level("INFO", logger="service.access")
    client.post("/predict", data=b"junk", content_type="image/png")
    lines = [json.loads(r.getMessage()) for r in caplog.records if r.name == "service.access"]
    assert len(lines) == 1
    assert lines[0]["status"] == 415 and lines[0]["error_code"] == "not_an_image"
    assert lines[0]["endpoint"] == "/predict" and lines[0]["duration_ms"] >= 0


def test_probabilities_are_numbers_not_numpy(client):
    body = client.post("/predict", data=encode(garment()), content_type="image/png").json
    assert all(isinstance(v, float) for v in body["predictions"][0]["probabilities"].values())
    assert np.isclose(sum(body["predictions"][0]["probabilities"].values()), 1, atol=1e-4)
