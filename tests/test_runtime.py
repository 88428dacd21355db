"""Every runtime runs the shipped SavedModel to the same answers, on real image files: the
float ones within 1e-5, the int8 one within a few hundredths and to the same class."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import requests

from harness import SHIPPED_MODEL_DIR
from harness.images import catalogue_photo, encode, synthetic_images
from service.inference.model import list_versions, load_version
from service.inference.runtime import RUNTIMES
from service.io.images import decode_image
from service.io.preprocessing import to_model_input
from service.settings import Settings

TOLERANCE = 1e-5
# 8-bit weights move the shipped model's probabilities by at most 0.028 over the 10,000 test
# images (docs/runtimes.md); its accuracy: tests/test_shipped_model.py.
INT8_TOLERANCE = 0.05
FLOAT_RUNTIMES = tuple(kind for kind in RUNTIMES if not kind.endswith("int8"))


@pytest.fixture(scope="module")
def shipped_by_runtime():
    """The newest shipped version, loaded once into each runtime."""
    version = list_versions(SHIPPED_MODEL_DIR)[-1]
    return {kind: load_version(SHIPPED_MODEL_DIR, version, kind) for kind in RUNTIMES}


FILES = 20  # the first images of real_images come from image files, the rest is noise


@pytest.fixture(scope="module")
def real_images() -> np.ndarray:
    """Model inputs made the service's way from real files: PNGs, JPEG and WebP catalogue
    photos, and a few of every kind of noise, 64 in all (a full batch)."""
    garments, _ = synthetic_images(FILES, seed=3)
    files = [encode(image) for image in garments[:10]]
    files += [encode(catalogue_photo(image), "JPEG", quality=90) for image in garments[10:16]]
    files += [encode(catalogue_photo(image), "WEBP") for image in garments[16:FILES]]
    inputs = [to_model_input(decode_image(data, 25_000_000, 20.0)) for data in files]
    noise = np.random.default_rng(0).integers(0, 256, (64 - len(inputs), 28, 28), np.uint8)
    return np.concatenate([np.stack(inputs), noise])


def margins(probabilities: np.ndarray) -> np.ndarray:
    """How far each image's top probability is above its second."""
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    return top_two[:, 1] - top_two[:, 0]


def test_the_default_runtime_is_litert_with_int8_weights():
    assert Settings().runtime == "litert-int8"


@pytest.mark.parametrize("batch", [1, 7, 64])
def test_every_runtime_gives_the_same_probabilities_and_class(
    shipped_by_runtime, real_images, batch
):
    reference = shipped_by_runtime["savedmodel"].predict(real_images[:batch])
    for kind, model in shipped_by_runtime.items():
        probabilities = model.predict(real_images[:batch])
        assert probabilities.shape == (batch, 10) and probabilities.dtype == np.float32, kind
        tolerance = TOLERANCE if kind in FLOAT_RUNTIMES else INT8_TOLERANCE
        np.testing.assert_allclose(probabilities, reference, atol=tolerance, rtol=0, err_msg=kind)
        # The class can change only where the top two are closer than twice the tolerance,
        # which happens for some noise; the image files keep theirs in every runtime.
        same = probabilities.argmax(axis=1) == reference.argmax(axis=1)
        assert same[: min(batch, FILES)].all(), kind
        decided = margins(reference) > 2 * tolerance
        assert same[decided].all(), kind


def test_int8_weights_change_the_answers_and_shrink_the_model(shipped_by_runtime, real_images):
    int8, float32 = shipped_by_runtime["litert-int8"], shipped_by_runtime["litert"]
    assert np.abs(int8.predict(real_images) - float32.predict(real_images)).max() > TOLERANCE
    assert len(int8.runtime._flatbuffer) < len(float32.runtime._flatbuffer) / 3


@pytest.mark.parametrize("kind", RUNTIMES)
def test_an_images_answer_does_not_depend_on_its_batch_mates(shipped_by_runtime, real_images, kind):
    model = shipped_by_runtime[kind]
    alone = np.concatenate([model.predict(image[None]) for image in real_images[:8]])
    among_others = model.predict(np.concatenate([real_images[:8], 255 - real_images[8:]]))[:8]
    # Quantizing a whole batch's activations at one scale would move these by hundredths.
    np.testing.assert_allclose(among_others, alone, atol=TOLERANCE, rtol=0)


@pytest.mark.parametrize("kind", ["litert-int8", "litert"])
def test_litert_answers_concurrent_calls_of_different_sizes(shipped_by_runtime, real_images, kind):
    model = shipped_by_runtime[kind]
    sizes = [1 + n % 9 for n in range(60)]
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: model.predict(real_images[:n]), sizes))
    expected = model.predict(real_images[:9])
    for size, probabilities in zip(sizes, results, strict=True):
        np.testing.assert_allclose(probabilities, expected[:size], atol=TOLERANCE, rtol=0)


def test_an_unknown_runtime_stops_start_up_naming_its_variable():
    with pytest.raises(ValueError, match="FMNIST_RUNTIME='onnx'"):
        Settings.from_env({"FMNIST_RUNTIME": "onnx"})


@pytest.mark.parametrize("kind", RUNTIMES)
def test_the_app_serves_through_the_chosen_runtime(tiny_model_dir, kind):
    from service import create_app

    app = create_app({"model_dir": tiny_model_dir, "runtime": kind})
    predictor = app.extensions["versions"]
    try:
        assert predictor.wait_ready(60), predictor.error
        runtime = predictor.model.runtime
        assert type(runtime).__name__.lower().startswith(kind.removesuffix("-int8"))
        assert getattr(runtime, "int8", False) == kind.endswith("-int8")
        garments, _ = synthetic_images(1, seed=5)
        response = app.test_client().post(
            "/predict", data=encode(garments[0]), content_type="image/png"
        )
        assert response.status_code == 200
        assert abs(sum(response.json["predictions"][0]["probabilities"].values()) - 1) < 1e-5
    finally:
        predictor.stop()


@pytest.mark.slow
def test_a_litert_worker_never_loads_tensorflow(live_server):
    assert requests.get(live_server.url + "/v1/models/fashion_mnist/metadata", timeout=10).ok
    garments, _ = synthetic_images(1, seed=6)
    response = requests.post(
        live_server.url + "/predict",
        data=encode(garments[0]),
        headers={"Content-Type": "image/png"},
        timeout=10,
    )
    assert response.status_code == 200
    pids = live_server.worker_pids()
    assert len(pids) == 2
    for pid in pids:
        libraries = open(f"/proc/{pid}/maps").read()
        assert "ai_edge_litert" in libraries  # the runtime really is loaded here
        assert "tensorflow" not in libraries, f"worker {pid} mapped TensorFlow"


def test_a_conversion_is_made_once_and_reused(tiny_model_dir, tmp_path, monkeypatch):
    from service.inference import runtime

    monkeypatch.setattr(runtime.tempfile, "gettempdir", lambda: str(tmp_path))
    folder = tiny_model_dir / str(list_versions(tiny_model_dir)[-1])
    first = runtime.converted(folder, "serving_default")
    made = (first / "model.tflite").stat().st_mtime_ns
    assert runtime.converted(folder, "serving_default") == first
    assert (first / "model.tflite").stat().st_mtime_ns == made  # not converted again
    assert first.parent.stat().st_mode & 0o777 == 0o700
    int8 = runtime.converted(folder, "serving_default", int8=True)
    assert int8 != first and int8.parent == first.parent  # kept apart from the float one
    assert (int8 / "model.tflite").read_bytes() != (first / "model.tflite").read_bytes()


def test_a_version_that_does_not_convert_names_the_reason(tmp_path, monkeypatch):
    from service.inference import runtime

    monkeypatch.setattr(runtime.tempfile, "gettempdir", lambda: str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir()
    broken = tmp_path / "1"
    broken.mkdir()
    (broken / "saved_model.pb").write_bytes(b"\x00 not a protocol buffer")
    with pytest.raises(RuntimeError, match="converting .* for LiteRT failed: .+"):
        runtime.converted(broken, "serving_default")
