"""POST /preprocess: the 28x28 image /predict gives the model, as a PNG."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from harness.images import catalogue_photo, encode, garment
from service.io.images import decode_image
from service.io.preprocessing import to_model_input

PHOTO = encode(catalogue_photo(garment(2), scale=6, pad=(30, 12)), "JPEG", quality=92)


def png_pixels(response) -> np.ndarray:
    """Decode a 200 /preprocess answer, checking it is a 28x28 grayscale PNG."""
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    assert response.content_type == "image/png"
    image = Image.open(io.BytesIO(response.data))
    assert image.format == "PNG" and image.mode == "L" and image.size == (28, 28)
    return np.asarray(image)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": PHOTO, "content_type": "image/jpeg"},
        {"data": {"image": (io.BytesIO(PHOTO), "photo.jpg")}},
        {"json": {"instances": [{"b64": base64.b64encode(PHOTO).decode()}]}},
    ],
    ids=["raw", "multipart", "json-b64"],
)
def test_every_request_form_gives_the_preprocessing_modules_output(client, kwargs):
    expected = to_model_input(decode_image(PHOTO, 25_000_000, 20), "auto")
    assert np.array_equal(png_pixels(client.post("/preprocess", **kwargs)), expected)


def test_a_pixel_array_comes_back_bit_for_bit(client):
    pixels = garment(7)
    response = client.post("/preprocess", json={"instances": [pixels.tolist()]})
    assert np.array_equal(png_pixels(response), pixels)


def test_predicting_the_png_gives_the_same_probabilities_as_the_upload(client):
    png = client.post("/preprocess", data=PHOTO, content_type="image/jpeg").data
    direct = client.post("/predict", data=PHOTO, content_type="image/jpeg").json
    # invert=false: the PNG already is what the model saw; "auto" must not flip it back.
    again = client.post("/predict?invert=false", data=png, content_type="image/png").json
    # Two model calls: the same input, the same answer up to the runtime's rounding.
    again_probabilities = again["predictions"][0]["probabilities"]
    direct_probabilities = direct["predictions"][0]["probabilities"]
    assert list(again_probabilities) == list(direct_probabilities)
    np.testing.assert_allclose(
        list(again_probabilities.values()), list(direct_probabilities.values()), atol=1e-6, rtol=0
    )


def test_invert_is_read_from_the_query_and_from_form_fields(client):
    pixels = garment(4)
    kept = png_pixels(
        client.post("/preprocess?invert=false", data=encode(pixels), content_type="image/png")
    )
    form = {"image": (io.BytesIO(encode(pixels)), "a.png"), "invert": "true"}
    flipped = png_pixels(client.post("/preprocess", data=form))
    assert np.array_equal(kept, pixels) and np.array_equal(flipped, 255 - pixels)


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        (
            {"data": {"image": [(io.BytesIO(PHOTO), "a.jpg"), (io.BytesIO(PHOTO), "b.jpg")]}},
            413,
            "batch_too_large",
        ),
        ({"json": {"instances": [[[0] * 28] * 28] * 2}}, 413, "batch_too_large"),
        ({"data": b"hello", "content_type": "image/png"}, 415, "not_an_image"),
        ({"data": b"hello", "content_type": "text/plain"}, 415, "unsupported_media_type"),
        (
            {"data": encode(np.zeros((40, 40), np.uint8)), "content_type": "image/png"},
            422,
            "unusable_image",
        ),
        ({"json": {"instances": []}}, 400, "malformed_request"),
    ],
)
def test_bad_uploads_get_problem_json(client, kwargs, status, code):
    response = client.post("/preprocess", **kwargs)
    assert response.status_code == status and response.content_type == "application/problem+json"
    assert response.json["code"] == code and response.json["detail"]


def test_a_bad_invert_is_400(client):
    response = client.post("/preprocess?invert=sideways", data=PHOTO, content_type="image/jpeg")
    assert response.status_code == 400 and response.json["code"] == "invalid_parameter"


def test_it_answers_before_the_model_is_loaded(tmp_path):
    from service import create_app

    app = create_app({"model_dir": tmp_path})  # no model there: never ready
    client = app.test_client()
    assert client.post("/predict", data=PHOTO, content_type="image/jpeg").status_code == 503
    png_pixels(client.post("/preprocess", data=PHOTO, content_type="image/jpeg"))
