"""Preprocessing is faithful: catalogue-style photos of test images classify like the originals."""

from __future__ import annotations

import numpy as np
import pytest
import requests

from harness import SHIPPED_MODEL_DIR
from harness.images import catalogue_photo, encode
from harness.server import LiveServer
from tests.skips import dataset_dir
from training.data import load_split

pytestmark = [pytest.mark.dataset, pytest.mark.slow]

SAMPLE = 1000  # the first 1,000 test images: about 100 per class
BATCH = 50
MAX_DROP = 0.03


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory):
    """gunicorn serving the shipped model."""
    server = LiveServer(SHIPPED_MODEL_DIR, tmp_path_factory.mktemp("photo") / "gunicorn.log")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def test_images():
    """The sample of Fashion-MNIST test images and labels."""
    folder = dataset_dir()
    test = load_split(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")
    return test.images[:SAMPLE], test.labels[:SAMPLE]


def render(index: int, pixels: np.ndarray) -> tuple[bytes, str]:
    """Render one image as a photo, varying scale, padding (aspect ratio), mode and format."""
    scale = (4, 6, 9, 12)[index % 4]
    pad = ((10, 10), (60, 8), (8, 50), (30, 30))[(index // 4) % 4]
    photo = catalogue_photo(pixels, scale=scale, pad=pad, mode="RGB")
    if index % 2:
        return encode(photo, "JPEG", quality=90), "image/jpeg"
    return encode(photo, "PNG"), "image/png"


def post_batch(server: LiveServer, files: list[tuple[bytes, str]]) -> list[int]:
    """Classify a batch of uploaded files; return predicted class ids."""
    payload = [("image", (f"{i}", data, kind)) for i, (data, kind) in enumerate(files)]
    response = requests.post(server.url + "/predict", files=payload, timeout=120)
    assert response.status_code == 200, response.text
    return [p["class_id"] for p in response.json()["predictions"]]


def test_photo_accuracy_stays_within_3_points_of_the_originals(shipped_server, test_images):
    images, labels = test_images
    original, photos = [], []
    for start in range(0, SAMPLE, BATCH):
        chunk = images[start : start + BATCH]
        original += post_batch(shipped_server, [(encode(p), "image/png") for p in chunk])
        photos += post_batch(shipped_server, [render(start + i, p) for i, p in enumerate(chunk)])
    original_accuracy = float(np.mean(np.array(original) == labels))
    photo_accuracy = float(np.mean(np.array(photos) == labels))
    print(f"original {original_accuracy:.4f}, photos {photo_accuracy:.4f}")
    assert original_accuracy >= 0.9
    assert photo_accuracy >= original_accuracy - MAX_DROP
