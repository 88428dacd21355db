"""The training module end to end on tiny synthetic data, and its data validation."""

from __future__ import annotations

import gzip
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from harness import ROOT
from service.inference.convert import METADATA_KEY
from tests.artifacts import check_serving_artifacts
from tests.idx import write_dataset
from training.data import FILES, IMAGE_MAGIC, load_fashion_mnist, stratified_split
from training.export import load_network, next_version
from training.models import MirrorAveraged

METADATA_FIELDS = {
    "name",
    "version",
    "class_names",
    "input",
    "output",
    "signature_name",
    "metrics",
    "parameters",
    "multiply_adds",
    "training_seconds",
    "epochs_run",
    "hyperparameters",
    "seed",
    "tensorflow_version",
    "keras_version",
    "data_sha256",
    "command",
}


def run_cli(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    """Run `python -m training` as a user would."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "training", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.slow
@pytest.mark.parametrize("family", ["cnn", "dfn"])
def test_cli_trains_and_exports_a_loadable_versioned_model(family, tiny_data_dir, tmp_path):
    output = tmp_path / "models"
    result = run_cli(
        "--data-dir",
        str(tiny_data_dir),
        "--model",
        family,
        "--epochs",
        "1",
        "--output",
        str(output),
        "--logdir",
        str(tmp_path / "logs"),
    )
    assert result.returncode == 0, result.stderr
    assert "epoch 1/1" in result.stdout and "test accuracy" in result.stdout

    folder = output / "1"
    import tensorflow as tf

    signature = tf.saved_model.load(str(folder)).signatures["serving_default"]
    assert signature.structured_input_signature[1]["images"].dtype == tf.uint8
    assert signature.structured_input_signature[1]["images"].shape.as_list() == [None, 28, 28]
    images = np.random.default_rng(0).integers(0, 256, (5, 28, 28), dtype=np.uint8)
    probabilities = signature(images=tf.constant(images))["probabilities"].numpy()
    assert probabilities.shape == (5, 10) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    # Mirror averaging (on by default): an image and its mirror image get the same answer, the
    # mean of the network's for each (the network read back out of the export).
    mirrored = signature(images=tf.constant(images[:, :, ::-1].copy()))["probabilities"]
    np.testing.assert_allclose(mirrored.numpy(), probabilities, atol=1e-6)
    network = load_network(folder)
    np.testing.assert_allclose(probabilities, by_the_ramp(network, images, None), atol=1e-6)

    metadata = json.loads((folder / "metadata.json").read_text())
    assert METADATA_FIELDS <= set(metadata)
    assert metadata["version"] == 1 and metadata["hyperparameters"]["model"] == family
    assert len(metadata["metrics"]["confusion_matrix"]) == 10
    assert sum(map(sum, metadata["metrics"]["confusion_matrix"])) == 100
    assert 0 <= metadata["metrics"]["photo_accuracy"] <= 1
    assert "catalogue-style photos" in (folder / "README.md").read_text()
    network_multiply_adds = {"cnn": 7_977_984, "dfn": 535_040}[family]  # the default shapes
    assert metadata["multiply_adds"] == 2 * network_multiply_adds  # mirror averaged
    assert set(metadata["data_sha256"]) == set(FILES.values())
    assert (folder / "README.md").read_text().startswith("# Fashion-MNIST classifier")
    assert (folder / "confusion_matrix.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert any((tmp_path / "logs").rglob("events.out.tfevents.*"))
    check_serving_artifacts(folder, images)

    # The next run, without --version, becomes version 2; this one exports the bare network.
    one_dfn_epoch = ("--data-dir", str(tiny_data_dir), "--model", "dfn", "--epochs", "1")
    second = run_cli(*one_dfn_epoch, "--no-mirror-average", "--output", str(output))
    assert second.returncode == 0 and (output / "2" / "saved_model.pb").is_file()
    bare = tf.saved_model.load(str(output / "2")).signatures["serving_default"]
    as_is, flipped = (
        bare(images=tf.constant(x))["probabilities"].numpy()
        for x in (images, images[:, :, ::-1].copy())
    )
    assert not np.allclose(as_is, flipped, atol=1e-6)
    second_metadata = json.loads((output / "2" / "metadata.json").read_text())
    assert second_metadata["hyperparameters"]["mirror_average"] is False

    # An explicit existing version is refused.
    clash = run_cli(*one_dfn_epoch, "--output", str(output), "--version", "1")
    assert clash.returncode == 2 and "already exists" in clash.stderr
    assert not [p for p in output.iterdir() if p.name.startswith(".tmp")]

    # Version 1's network exported again, averaged only where unsure: no training, a version
    # 3 that answers by the ramp, whose training record is version 1's.
    ramp = (0.3, 0.5)
    again = run_cli(
        "--data-dir", str(tiny_data_dir), "--from-version", str(folder),
        "--mirror-ramp", *map(str, ramp), "--output", str(output),
    )  # fmt: skip
    assert again.returncode == 0, again.stderr
    assert "epoch" not in again.stdout and "exported again" in again.stdout
    ramped = tf.saved_model.load(str(output / "3")).signatures["serving_default"]
    answers = ramped(images=tf.constant(images))["probabilities"].numpy()
    np.testing.assert_allclose(answers, by_the_ramp(network, images, ramp), atol=1e-6)
    third = json.loads((output / "3" / "metadata.json").read_text())
    assert (
        third["exported_from"]["version"] == 1
        and "--from-version" in third["exported_from"]["command"]
    )
    assert metadata["hyperparameters"]["mirror_ramp"] is None
    assert third["hyperparameters"] == {**metadata["hyperparameters"], "mirror_ramp": list(ramp)}
    for field in ("command", "training_seconds", "epochs_run", "data_sha256", "parameters"):
        assert third[field] == metadata[field], field
    check_serving_artifacts(output / "3", images)  # the ramp's gathers convert too
    card = (output / "3" / "README.md").read_text()
    assert "exported again" in card and "weighs a half below a top probability of 0.3" in card

    # ... but only measured on the files it was trained with.
    other = tmp_path / "other-data"
    shutil.copytree(tiny_data_dir, other)
    test_labels = other / FILES["test_labels"]
    test_labels.write_bytes(gzip.compress(gzip.decompress(test_labels.read_bytes())[:-1] + b"\x00"))
    refused = run_cli(
        "--data-dir", str(other), "--from-version", str(folder), "--output", str(output)
    )
    assert refused.returncode == 2 and "differ from those" in refused.stderr


def test_export_is_atomic_and_leaves_nothing_behind_on_failure(tmp_path, monkeypatch):
    from training import export

    def fail(*_args, **_kwargs):
        assert any(p.name.startswith(".tmp-") for p in tmp_path.iterdir())  # staged, not final
        assert not (tmp_path / "3").exists()
        raise RuntimeError("disk full")

    monkeypatch.setattr(export, "save_signature", fail)
    with pytest.raises(RuntimeError):
        export.export(model=None, metadata={}, output=tmp_path, version=3)
    assert list(tmp_path.iterdir()) == []


def test_an_export_carries_its_serving_artifacts_and_their_checksums(tiny_model_dir, tiny_data_dir):
    check_serving_artifacts(tiny_model_dir / "1", load_fashion_mnist(tiny_data_dir).test.images)


def test_serving_artifacts_are_added_to_a_version_exported_without_them(
    tiny_model_dir, tiny_data_dir, tmp_path, capsys
):
    from training.__main__ import main

    folder = Path(shutil.copytree(tiny_model_dir / "1", tmp_path / "1"))
    shutil.rmtree(folder / "litert")
    metadata = json.loads((folder / "metadata.json").read_text())
    del metadata[METADATA_KEY]
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
    saved_model = {
        p: p.read_bytes() for p in folder.rglob("*") if p.is_file() and p.name != "metadata.json"
    }

    assert main(["--from-version", str(folder), "--serving-artifacts"]) == 0
    check_serving_artifacts(folder, load_fashion_mnist(tiny_data_dir).test.images)
    added = json.loads((folder / "metadata.json").read_text())
    assert {key: value for key, value in added.items() if key != METADATA_KEY} == metadata
    assert {p: p.read_bytes() for p in saved_model} == saved_model  # the SavedModel untouched
    assert not list(folder.rglob(".tmp-*"))
    assert "exported" not in capsys.readouterr().out  # no new version

    # Refused, with nothing written: a folder that is not a version, or holds no SavedModel.
    (tmp_path / "2").mkdir()
    for refused, reason in ((tmp_path, "not a version number"), (tmp_path / "2", "saved_model")):
        assert main(["--from-version", str(refused), "--serving-artifacts"]) == 2
        assert reason in capsys.readouterr().err
        assert not (refused / "litert").exists()
    with pytest.raises(SystemExit):
        main(["--serving-artifacts"])
    assert "--serving-artifacts needs --from-version" in capsys.readouterr().err


def test_next_version_counts_only_integer_folders(tmp_path):
    for name in ("1", "7", "latest", ".tmp-8-x"):
        (tmp_path / name).mkdir()
    (tmp_path / "9").write_text("a file, not a version")
    assert next_version(tmp_path) == 8
    assert next_version(tmp_path / "missing") == 1


def test_stratified_split_is_seeded_and_keeps_class_balance(tiny_data_dir):
    data = load_fashion_mnist(tiny_data_dir).train
    train_a, validation_a = stratified_split(data, 0.1, seed=3)
    train_b, validation_b = stratified_split(data, 0.1, seed=3)
    assert np.array_equal(validation_a.labels, validation_b.labels)
    assert np.array_equal(train_a.images, train_b.images)
    assert np.bincount(validation_a.labels).tolist() == [3] * 10
    assert len(train_a.labels) + len(validation_a.labels) == len(data.labels)


def _corrupt(folder: Path, name: str, how: str) -> None:
    """Damage one file of a copied dataset in one way."""
    path = folder / name
    raw = gzip.decompress(path.read_bytes())
    if how == "missing":
        path.unlink()
    elif how == "truncated-gzip":
        path.write_bytes(path.read_bytes()[:-40])
    elif how == "not-gzip":
        path.write_bytes(b"hello, I am not compressed")
    elif how == "truncated-data":
        path.write_bytes(gzip.compress(raw[:-100]))
    elif how == "bad-magic":
        path.write_bytes(gzip.compress(b"\x00\x00\x08\x99" + raw[4:]))
    elif how == "short-header":
        path.write_bytes(gzip.compress(raw[:6]))
    elif how == "wrong-dimensions":
        path.write_bytes(gzip.compress(raw[:8] + (27).to_bytes(4, "big") + raw[12:]))
    elif how == "label-out-of-range":
        path.write_bytes(gzip.compress(raw[:-1] + b"\x0c"))
    elif how == "count-mismatch":
        header = raw[:4] + (len(raw) - 9).to_bytes(4, "big")
        path.write_bytes(gzip.compress(header + raw[8:-1]))


@pytest.mark.integration  # runs python -m training
@pytest.mark.parametrize(
    ("name", "how", "message"),
    [
        (FILES["train_images"], "missing", "file not found"),
        (FILES["train_images"], "truncated-gzip", "not a complete gzip file"),
        (FILES["test_labels"], "not-gzip", "not a complete gzip file"),
        (FILES["train_images"], "truncated-data", "header promises"),
        (FILES["test_images"], "bad-magic", "bad magic number"),
        (FILES["train_labels"], "short-header", "truncated header"),
        (FILES["train_images"], "wrong-dimensions", "header promises"),
        (FILES["test_labels"], "label-out-of-range", "outside 0 to 9"),
        (FILES["train_labels"], "count-mismatch", "labels for"),
    ],
)
def test_bad_data_files_give_a_one_line_error_naming_the_file(
    name, how, message, tiny_data_dir, tmp_path
):
    data = tmp_path / "data"
    shutil.copytree(tiny_data_dir, data)
    _corrupt(data, name, how)
    result = run_cli("--data-dir", str(data), "--epochs", "1", "--output", str(tmp_path / "m"))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: ") and name in lines[-1] and message in lines[-1]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "m").exists() or not any((tmp_path / "m").iterdir())


def test_wrong_image_dimensions_are_named(tmp_path):
    from tests.idx import write_idx

    folder = write_dataset(tmp_path)
    write_idx(folder / FILES["train_images"], IMAGE_MAGIC, np.zeros((300, 28, 27), np.uint8))
    from training.data import DatasetError

    with pytest.raises(DatasetError, match="expected 28x28"):
        load_fashion_mnist(folder)


@pytest.mark.integration  # runs python -m training
def test_help_lists_every_option():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in (
        "--data-dir",
        "--model",
        "--epochs",
        "--batch-size",
        "--optimizer",
        "--learning-rate",
        "--weight-decay",
        "--schedule",
        "--warmup-epochs",
        "--l2",
        "--dropout",
        "--label-smoothing",
        "--no-augment",
        "--erase-probability",
        "--photo-fraction",
        "--photos-per-image",
        "--no-mirror-average",
        "--mirror-ramp",
        "--from-version",
        "--serving-artifacts",
        "--patience",
        "--seed",
        "--output",
        "--version",
        "--logdir",
    ):
        assert option in result.stdout


def test_cosine_schedule_warms_up_then_decays_to_zero_and_plateau_halves_on_a_callback():
    import keras

    from training.train import TrainConfig, make_callbacks, make_learning_rate

    cosine = TrainConfig(epochs=10, warmup_epochs=1, learning_rate=0.002)
    schedule = make_learning_rate(cosine, steps_per_epoch=100)
    rate = [float(schedule(step)) for step in (0, 50, 100, 550, 1000)]
    assert rate[0] == 0 and rate[1] == pytest.approx(0.001) and rate[2] == pytest.approx(0.002)
    assert rate[2] > rate[3] > rate[4] and rate[4] == pytest.approx(0, abs=1e-9)
    assert not any(
        isinstance(c, keras.callbacks.ReduceLROnPlateau) for c in make_callbacks(cosine, None)
    )

    plateau = TrainConfig(schedule="plateau", learning_rate=0.002)
    assert make_learning_rate(plateau, steps_per_epoch=100) == 0.002
    assert any(
        isinstance(c, keras.callbacks.ReduceLROnPlateau) for c in make_callbacks(plateau, None)
    )


def test_augmentation_flips_and_shifts_whole_pixels_repeatably_and_keeps_labels():
    from training.data import Dataset
    from training.train import MAX_SHIFT, TrainConfig, make_dataset

    images = np.zeros((64, 28, 28), dtype=np.uint8)
    images[:, 13, 10] = 255  # one bright pixel left of centre: flips and shifts move it
    labels = np.arange(64, dtype=np.uint8) % 10
    config = TrainConfig(erase_probability=0, photo_fraction=0)

    def one_epoch() -> tuple[np.ndarray, np.ndarray]:
        batches = list(make_dataset(Dataset(images, labels), 16, 7, config))
        return (
            np.concatenate([b[0].numpy() for b in batches])[..., 0],
            np.concatenate([b[1].numpy() for b in batches]),
        )

    augmented, one_hot = one_epoch()
    assert augmented.shape == (64, 28, 28)
    assert (one_hot.sum(axis=1) == 1).all()
    assert sorted(one_hot.argmax(axis=1)) == sorted(labels)
    rows, columns = [], []
    for image in augmented:
        bright = np.argwhere(image == 255)
        assert len(bright) == 1 and set(np.unique(image)) == {0, 255}  # whole pixels, no blur
        rows.append(bright[0][0])
        columns.append(bright[0][1])
    assert all(abs(r - 13) <= MAX_SHIFT for r in rows) and len(set(rows)) > 1
    flipped = [c for c in columns if c > 13]  # mirrored to 17, then shifted
    assert all(abs(c - 17) <= MAX_SHIFT for c in flipped) and 0 < len(flipped) < 64
    assert all(abs(c - 10) <= MAX_SHIFT for c in columns if c <= 13)
    again, _ = one_epoch()
    np.testing.assert_array_equal(again, augmented)  # seeded: the same epoch again


def test_random_erasing_blacks_out_one_rectangle_of_the_drawn_size_in_some_images():
    import tensorflow as tf

    from training.train import ERASE_SIDES, erase

    images = tf.fill([400, 28, 28, 1], 200.0)
    erased = erase(images, 0.5, seed=3).numpy()[..., 0]
    touched = 0
    for image in erased:
        black = np.argwhere(image == 0)
        if not len(black):
            assert (image == 200).all()
            continue
        touched += 1
        (top, left), (bottom, right) = black.min(axis=0), black.max(axis=0)
        height, width = bottom - top + 1, right - left + 1
        assert len(black) == height * width  # one filled rectangle, the rest untouched
        assert ERASE_SIDES[0] <= min(height, width) and max(height, width) <= ERASE_SIDES[1]
    assert 140 < touched < 260  # about half of 400 (binomial: 6 standard deviations)


def test_photo_mixing_replaces_about_the_asked_share_of_images_by_their_photos():
    from training.data import Dataset
    from training.train import TrainConfig, make_dataset

    images = np.zeros((400, 28, 28), dtype=np.uint8)
    photos = np.full((400, 28, 28), 255, dtype=np.uint8)
    labels = np.arange(400, dtype=np.uint8) % 10
    config = TrainConfig(augment=False, photo_fraction=0.25)
    batches = list(make_dataset(Dataset(images, labels), 50, 7, config, photos))
    mixed = np.concatenate([b[0].numpy() for b in batches])
    from_photos = (mixed == 255).all(axis=(1, 2, 3))
    assert ((mixed == 0).all(axis=(1, 2, 3)) | from_photos).all()  # whole images, not blends
    assert 60 < from_photos.sum() < 140  # about a quarter of 400


def test_photo_mixing_draws_among_each_images_photos():
    from training.data import Dataset
    from training.train import TrainConfig, make_dataset

    images = np.zeros((400, 28, 28), dtype=np.uint8)
    photos = np.stack([np.full((400, 28, 28), value, dtype=np.uint8) for value in (255, 128)], 1)
    labels = np.arange(400, dtype=np.uint8) % 10
    config = TrainConfig(augment=False, photo_fraction=0.5)
    batches = list(make_dataset(Dataset(images, labels), 50, 7, config, photos))
    mixed = np.concatenate([b[0].numpy() for b in batches])
    counts = [int((mixed == value).all(axis=(1, 2, 3)).sum()) for value in (0, 255, 128)]
    assert sum(counts) == 400  # whole images, each the raw one or one of its two photos
    assert 140 < counts[0] < 260  # about half of 400 raw (6 standard deviations)
    assert 50 < counts[1] < 150 and 50 < counts[2] < 150  # the rest split about evenly


def test_photo_sets_draw_a_style_per_photo_and_start_with_photo_versions():
    from training.photos import photo_sets, photo_versions

    pixels = np.random.default_rng(3).integers(0, 256, (4, 28, 28), dtype=np.uint8)
    sets = photo_sets(pixels, 42, 3)
    assert sets.shape == (4, 3, 28, 28) and sets.dtype == np.uint8
    assert np.array_equal(sets[:, 0], photo_versions(pixels, 42))
    assert not np.array_equal(sets[:, 1], sets[:, 2])  # styles of their own


def by_the_ramp(network, images: np.ndarray, ramp: tuple[float, float] | None) -> np.ndarray:
    """What mirror averaging answers for uint8 images (N, 28, 28), computed by hand."""
    pixels = images[..., np.newaxis].astype(np.float32)
    first = network(pixels).numpy()
    second = network(pixels[:, :, ::-1]).numpy()
    if ramp is None:
        return (first + second) / 2
    low, high = ramp
    top = first.max(axis=1, keepdims=True)
    weight = np.where(top < high, np.clip((high - top) / (high - low), 0, 1) / 2, 0)
    return first + weight * (second - first)


def test_mirror_averaging_weighs_the_mirror_image_by_how_unsure_the_network_is():
    import keras

    network = keras.Sequential(
        [keras.Input((28, 28, 1)), keras.layers.Flatten(), keras.layers.Dense(10, "softmax")]
    )
    rng = np.random.default_rng(5)
    network.layers[-1].set_weights([rng.normal(0, 0.01, (784, 10)), np.zeros(10)])
    images = rng.integers(0, 256, (200, 28, 28), np.uint8)
    top = network(images[..., np.newaxis].astype(np.float32)).numpy().max(axis=1)
    ramp = (float(np.quantile(top, 0.3)), float(np.quantile(top, 0.7)))
    model = MirrorAveraged(network, ramp)
    answers = model(images[..., np.newaxis].astype(np.float32)).numpy()
    # A third of the images below the ramp, a third on it, a third above: each rule is used.
    np.testing.assert_allclose(answers, by_the_ramp(network, images, ramp), atol=1e-6)
    above = top >= ramp[1]
    # Probabilities of batches of other sizes: kernels may order their sums differently on
    # another CPU, so an absolute tolerance (values as small as 1e-38 defeat a relative one).
    np.testing.assert_allclose(
        answers[above],
        network(images[above][..., np.newaxis].astype(np.float32)).numpy(),
        atol=1e-6,
        rtol=0,
    )
    # A batch in which no image is unsure, and single images, answer alike.
    sure = images[above][:5][..., np.newaxis].astype(np.float32)
    np.testing.assert_allclose(model(sure).numpy(), answers[above][:5], atol=1e-6)
    for index in (0, int(np.argmax(above))):
        one = images[index : index + 1][..., np.newaxis].astype(np.float32)
        np.testing.assert_allclose(model(one).numpy(), answers[index : index + 1], atol=1e-6)


@pytest.mark.integration  # runs python -m training
def test_a_mirror_ramp_must_rise():
    result = run_cli("--mirror-ramp", "0.9", "0.8")
    assert result.returncode == 2 and "0 < LOW < HIGH" in result.stderr


@pytest.mark.integration  # runs python -m training
def test_photos_per_image_must_be_at_least_one():
    result = run_cli("--photos-per-image", "0")
    assert result.returncode == 2 and "--photos-per-image needs at least 1" in result.stderr


def test_multiply_adds_count_every_convolution_and_dense_layer():
    import keras

    from training.models import build_cnn, multiply_adds

    inputs = keras.Input((10, 10, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 10*10*4 outputs, 3*3*3 each
    x = keras.layers.Conv2D(5, 2, padding="valid")(x)  # 9*9*5 outputs, 2*2*4 each
    x = keras.layers.Dense(6)(keras.layers.Flatten()(x))  # 405 inputs, 6 outputs
    assert multiply_adds(keras.Model(inputs, x)) == 10 * 10 * 4 * 27 + 9 * 9 * 5 * 16 + 405 * 6
    # The CNN's blocks: 28x28, 14x14 and 7x7 convolutions, then 4x4x128 into 256, into 10.
    expected = 28 * 28 * 32 * 9 + 14 * 14 * 64 * 9 * 32 + 7 * 7 * 128 * 9 * 64 + 2048 * 256 + 2560
    assert multiply_adds(build_cnn(0.1, 0.0, (32, 64, 128))) == expected


def test_early_stopping_is_off_by_default_and_restores_the_best_epoch_when_asked():
    import keras

    from training.train import TrainConfig, make_callbacks

    def stoppers(config: TrainConfig) -> list:
        callbacks = make_callbacks(config, None)
        return [c for c in callbacks if isinstance(c, keras.callbacks.EarlyStopping)]

    assert stoppers(TrainConfig()) == []  # the cosine schedule's last weights are kept
    (stopper,) = stoppers(TrainConfig(patience=3))
    assert stopper.patience == 3 and stopper.restore_best_weights
    assert stopper.monitor == "val_accuracy"


@pytest.mark.integration  # runs python -m training.photo_gap
def test_photo_gap_measures_the_validation_split_per_seed(tiny_model_dir, tiny_data_dir):
    import re

    version = tiny_model_dir / "1"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = [sys.executable, "-m", "training.photo_gap", str(version)]
    result = subprocess.run(
        [*command, "--data-dir", str(tiny_data_dir), "--seeds", "2"],
        env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = re.findall(
        r"seed (\d+): raw ([\d.]+), photos ([\d.]+), gap (-?[\d.]+) points .* of (\d+)\)",
        result.stdout,
    )
    assert [int(line[0]) for line in lines] == [1000, 1001]
    validation = stratified_split(load_fashion_mnist(tiny_data_dir).train, 0.1, 42)[1]
    for _, raw, photos, gap, count in lines:
        assert int(count) == len(validation.labels)
        assert float(gap) == pytest.approx(100 * (float(raw) - float(photos)), abs=0.011)
    mean = float(re.findall(r"mean gap (-?[\d.]+) points over 2 seeds", result.stdout)[0])
    assert mean == pytest.approx(np.mean([float(line[3]) for line in lines]), abs=0.011)
    refused = subprocess.run(
        [*command, "--seeds", "0"], env=env, capture_output=True, text=True, timeout=60
    )
    assert refused.returncode == 2 and "--seeds needs at least 1" in refused.stderr
