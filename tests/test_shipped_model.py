"""The committed model: its interface, and (with FASHION_MNIST_DIR) its test accuracy."""

from __future__ import annotations

import json

import numpy as np
import pytest

from harness import SHIPPED_MODEL_DIR
from harness.images import synthetic_images
from service.inference.model import list_versions, load_version
from service.settings import Settings
from tests.artifacts import check_serving_artifacts
from tests.skips import dataset_dir
from training.data import load_split

MAX_VERSION_BYTES = 10 * 1024 * 1024
# The project's target (issue 29), which the shipped version reaches through the default
# runtime's 8-bit weights (docs/training.md, docs/runtimes.md).
MIN_ACCURACY = 0.945
MAX_TRAINING_SECONDS = 90 * 60  # `make train` reproduces it in 90 minutes on 2 CPU cores
# Per image served, mirror averaging included: no more than version 1 (issue 29).
MAX_MULTIPLY_ADDS = 16_000_000
SHIPPED_VERSION = 3
SHIPPED_FOLDER = SHIPPED_MODEL_DIR / str(SHIPPED_VERSION)


def shipped():
    """Load the shipped version into the runtime the service uses by default."""
    return load_version(SHIPPED_MODEL_DIR, SHIPPED_VERSION, Settings().runtime)


def test_shipped_model_is_one_version_alone_under_10_mb_with_its_documents():
    assert list_versions(SHIPPED_MODEL_DIR) == [SHIPPED_VERSION]
    size = sum(p.stat().st_size for p in SHIPPED_FOLDER.rglob("*") if p.is_file())
    assert size <= MAX_VERSION_BYTES
    metadata = json.loads((SHIPPED_FOLDER / "metadata.json").read_text())
    assert metadata["hyperparameters"]["model"] == "cnn"
    assert metadata["metrics"]["accuracy"] >= MIN_ACCURACY
    assert metadata["training_seconds"] <= MAX_TRAINING_SECONDS
    assert metadata["multiply_adds"] <= MAX_MULTIPLY_ADDS
    assert (SHIPPED_FOLDER / "README.md").is_file()
    assert (SHIPPED_FOLDER / "confusion_matrix.png").is_file()


def test_shipped_model_maps_uint8_images_to_probabilities():
    model = shipped()
    probabilities = model.predict(np.zeros((3, 28, 28), np.uint8))
    assert probabilities.shape == (3, 10)
    np.testing.assert_allclose(probabilities.sum(axis=1), 1, atol=1e-5)


def test_shipped_model_carries_its_serving_artifacts():
    garments, _ = synthetic_images(32, seed=3)
    noise = np.random.default_rng(0).integers(0, 256, (32, 28, 28), np.uint8)
    check_serving_artifacts(SHIPPED_FOLDER, np.concatenate([garments, noise]))


@pytest.mark.dataset
def test_shipped_model_accuracy_on_the_full_test_set_matches_its_metadata():
    folder = dataset_dir()
    test = load_split(folder / "t10k-images-idx3-ubyte.gz", folder / "t10k-labels-idx1-ubyte.gz")
    model = shipped()
    predicted = np.concatenate(
        [model.predict(test.images[i : i + 1000]).argmax(axis=1) for i in range(0, 10_000, 1000)]
    )
    accuracy = float((predicted == test.labels).mean())
    assert len(test.labels) == 10_000
    assert accuracy >= MIN_ACCURACY
    assert abs(accuracy - model.metadata["metrics"]["accuracy"]) <= 0.001


def test_shipped_models_cost_per_image_is_what_its_metadata_says():
    from training.export import load_network
    from training.models import multiply_adds

    metadata = json.loads((SHIPPED_FOLDER / "metadata.json").read_text())
    passes = 2 if metadata["hyperparameters"]["mirror_average"] else 1
    assert metadata["multiply_adds"] == passes * multiply_adds(load_network(SHIPPED_FOLDER))
