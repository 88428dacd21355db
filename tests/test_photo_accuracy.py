"""Photos classify nearly as well as the raw images: catalogue-style renders of the whole test
set, uploaded to /predict, score within MAX_GAP of the same images sent as raw 28x28 pixels.

The renders are training/photos.py's, styles drawn with TEST_PHOTO_SEED (the ones the shipped
model's metadata records its `photo_accuracy` with): upscaled 3 to 12 times, blurred or not,
padded unevenly on white or tinted backdrops, as JPEG, PNG or WebP, some with a transparent
backdrop, some stored rotated with an EXIF orientation.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from harness import SHIPPED_MODEL_DIR
from harness.images import encode
from harness.server import LiveServer
from service.inference.model import list_versions
from tests.skips import dataset_dir
from training.data import load_split
from training.photos import TEST_PHOTO_SEED, TEST_SCALES, render, styles

pytestmark = [pytest.mark.dataset, pytest.mark.slow]

BATCH = 50  # images per request, within FMNIST_MAX_BATCH
MAX_GAP = 0.005  # photos at most half a point below the raw images (issue 29)
# The photo accuracy through /predict (LiteRT, 8-bit weights by default) against the one the
# export measured (the SavedModel): a few of 10,000 answers may differ (docs/runtimes.md).
RUNTIME_TOLERANCE = 0.002


@pytest.fixture(scope="module")
def shipped_server(tmp_path_factory) -> Iterator[LiveServer]:
    """gunicorn serving the shipped model."""
    server = LiveServer(SHIPPED_MODEL_DIR, tmp_path_factory.mktemp("photo") / "gunicorn.log")
    server.start()
    yield server
    server.stop()


def post_batch(server: LiveServer, files: list[tuple[bytes, str]]) -> list[int]:
    """Classify a batch of uploaded files; return predicted class ids."""
    payload = [("image", (f"{i}", data, kind)) for i, (data, kind) in enumerate(files)]
    response = requests.post(server.url + "/predict", files=payload, timeout=120)
    assert response.status_code == 200, response.text
    return [p["class_id"] for p in response.json()["predictions"]]


def test_photos_score_within_half_a_point_of_the_raw_images(shipped_server):
    folder = dataset_dir()
    test = load_split(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")
    photo_styles = styles(len(test.labels), TEST_PHOTO_SEED, TEST_SCALES)

    def classify(start: int) -> tuple[list[int], list[int]]:
        chunk = range(start, min(start + BATCH, len(test.labels)))
        raw = [(encode(test.images[i]), "image/png") for i in chunk]
        photos = [
            (render(test.images[i], photo_styles[i]), photo_styles[i].content_type) for i in chunk
        ]
        return post_batch(shipped_server, raw), post_batch(shipped_server, photos)

    with ThreadPoolExecutor(2) as pool:  # one batch renders while another is classified
        answers = list(pool.map(classify, range(0, len(test.labels), BATCH)))
    raw = np.concatenate([a[0] for a in answers])
    photos = np.concatenate([a[1] for a in answers])
    raw_accuracy = float(np.mean(raw == test.labels))
    photo_accuracy = float(np.mean(photos == test.labels))
    print(f"raw {raw_accuracy:.4f}, photos {photo_accuracy:.4f} on {len(photos)} renders")
    assert len(photos) == 10_000
    assert photo_accuracy >= raw_accuracy - MAX_GAP
    newest = SHIPPED_MODEL_DIR / str(list_versions(SHIPPED_MODEL_DIR)[-1]) / "metadata.json"
    recorded = json.loads(newest.read_text())["metrics"]["photo_accuracy"]
    assert abs(photo_accuracy - recorded) <= RUNTIME_TOLERANCE
