"""Write a trained model as a versioned SavedModel folder, atomically, with its metadata."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from service.inference.convert import METADATA_KEY, write_atomically, write_serving_artifacts
from training.data import CLASS_NAMES, IMAGE_SIZE

SIGNATURE_NAME = "serving_default"
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
INPUT_SPEC = {
    "name": INPUT_NAME,
    "dtype": "uint8",
    "shape": [None, IMAGE_SIZE, IMAGE_SIZE],
    "range": [0, 255],
    "meaning": "grayscale pixel intensities, garment light on a black background (Fashion-MNIST)",
}
OUTPUT_SPEC = {
    "name": OUTPUT_NAME,
    "dtype": "float32",
    "shape": [None, len(CLASS_NAMES)],
    "meaning": "softmax probabilities over class_names, each row sums to 1",
}


class NotAVersionFolder(Exception):
    """A folder named as an exported version that is not one."""

    def __init__(self, folder: Path, reason: str) -> None:
        super().__init__(f"{folder} is not a version folder: {reason}")


def version_metadata(folder: Path) -> dict[str, Any]:
    """The metadata.json of an exported version folder (a number, with a SavedModel)."""
    if not folder.name.isdigit():
        raise NotAVersionFolder(folder, "its name is not a version number")
    if not (folder / "saved_model.pb").is_file():
        raise NotAVersionFolder(folder, "it holds no saved_model.pb")
    try:
        metadata: dict[str, Any] = json.loads((folder / "metadata.json").read_text())
    except (OSError, ValueError) as error:
        raise NotAVersionFolder(folder, f"no readable metadata.json ({error})") from error
    return metadata


def add_serving_artifacts(folder: Path) -> dict[str, str]:
    """Write the serving artifacts into an exported version folder and list them in its
    metadata.json, each file replaced by one rename; the SavedModel is left as it is."""
    metadata = version_metadata(folder)
    checksums = write_serving_artifacts(folder, metadata["signature_name"])
    metadata = {**metadata, METADATA_KEY: checksums}
    write_atomically(folder / "metadata.json", (json.dumps(metadata, indent=2) + "\n").encode())
    return checksums


def load_network(folder: Path) -> keras.Model:
    """The network of an exported version, without its mirror averaging: built anew from its
    metadata's hyperparameters, its weights read back from the SavedModel in order.

    The SavedModel keeps the network's variables in the order of model.weights; each is checked
    against its weight's shape, and the dropout layer's random-number state is skipped. Nothing
    depends on layer names, which Keras numbers per process.
    """
    from training.models import BUILDERS, CNN_FILTERS

    hyperparameters = json.loads((folder / "metadata.json").read_text())["hyperparameters"]
    network = BUILDERS[hyperparameters["model"]](
        hyperparameters["dropout"],
        hyperparameters["l2"],
        tuple(hyperparameters.get("filters", CNN_FILTERS)),  # older versions: the one shape
    )
    saved = [
        v.numpy()
        for v in tf.saved_model.load(str(folder)).variables
        if "seed_generator" not in v.name
    ]
    weights = [w for w in network.weights if "seed_generator" not in w.path]
    shapes = [tuple(w.shape) for w in weights]
    if [v.shape for v in saved] != shapes:
        raise ValueError(f"{folder} does not hold a {hyperparameters['model']} network's weights")
    for weight, value in zip(weights, saved, strict=True):
        weight.assign(value)
    return network


def next_version(output: Path) -> int:
    """Return one more than the highest integer version folder in `output` (1 if none)."""
    versions = [int(p.name) for p in output.glob("*") if p.is_dir() and p.name.isdigit()]
    return max(versions, default=0) + 1


def save_signature(model: keras.Model, path: Path) -> None:
    """Save a SavedModel whose serving signature maps uint8 images to probabilities."""
    if not model.built:  # a subclassed model (MirrorAveraged) builds on its first call
        model(np.zeros((1, IMAGE_SIZE, IMAGE_SIZE, 1), np.float32))
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(images: tf.Tensor) -> dict[str, tf.Tensor]:
        pixels = tf.cast(images, tf.float32)[..., tf.newaxis]
        return {OUTPUT_NAME: model(pixels, training=False)}

    archive.add_endpoint(
        name=SIGNATURE_NAME,
        fn=serve,
        input_signature=[tf.TensorSpec([None, IMAGE_SIZE, IMAGE_SIZE], tf.uint8, INPUT_NAME)],
    )
    archive.write_out(str(path), verbose=False)


def save_confusion_image(confusion: list[list[int]], path: Path) -> None:
    """Draw the confusion matrix as a PNG, counts in every cell."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    matrix = np.asarray(confusion)
    figure, axes = plt.subplots(figsize=(8, 7))
    axes.imshow(matrix, cmap="Blues")
    axes.set_xticks(range(len(CLASS_NAMES)), CLASS_NAMES, rotation=45, ha="right")
    axes.set_yticks(range(len(CLASS_NAMES)), CLASS_NAMES)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    threshold = matrix.max() / 2
    for (row, column), count in np.ndenumerate(matrix):
        axes.text(
            column,
            row,
            str(count),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if count > threshold else "black",
        )
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def mirror_note(hyperparameters: dict[str, Any]) -> str:
    """Say, when it is so, how an answer averages an image and its mirror image."""
    if not hyperparameters.get("mirror_average"):
        return ""
    ramp = hyperparameters.get("mirror_ramp")
    if ramp is None:  # versions exported before the ramp averaged every image
        return (
            "\nEach row averages the network's probabilities for the image and for its mirror"
            "\nimage (test-time augmentation: two forward passes, the same weights)."
        )
    low, high = ramp
    return (
        "\nWhere the network is unsure, a row averages its probabilities for the image with"
        "\nthose for its mirror image (test-time augmentation, the same weights): the mirror"
        f"\nimage weighs a half below a top probability of {low:g}, nothing from {high:g} up,"
        f"\nand in proportion between. Only images below {high:g} take the second pass."
    )


def exported_note(metadata: dict[str, Any]) -> str:
    """Say, when it is so, that the network was trained for another version and exported again."""
    source = metadata.get("exported_from")
    if source is None:
        return ""
    return (
        f"\nThe network of version {source['version']}, trained by that command, exported again"
        f"\nas this version by `{source['command']}`."
    )


def weights_note(hyperparameters: dict[str, Any]) -> str:
    """Which epoch's weights the version holds."""
    if hyperparameters.get("patience", 1) > 0:  # early stopping restores the best epoch's
        return "the weights are that epoch's"
    return "the weights are the last epoch's, where the learning rate reached zero"


def photo_note(metrics: dict[str, Any]) -> str:
    """The card's line on photos, for a version whose export measured them."""
    if "photo_accuracy" not in metrics:
        return ""
    return (
        f"\nOn catalogue-style photos of the same images (`training/photos.py`: upscaled, blurred,"
        f"\npadded on tinted backdrops, JPEG, PNG or WebP, cut-outs, EXIF-rotated), through the"
        f"\nservice's preprocessing: **{metrics['photo_accuracy']:.4f}**."
    )


def model_card(metadata: dict[str, Any]) -> str:
    """Return the version folder's README: intended use, data, metrics, known limits."""
    metrics = metadata["metrics"]
    rows = "\n".join(
        f"| {name} | {p:.3f} | {r:.3f} |"
        for name, p, r in zip(CLASS_NAMES, metrics["precision"], metrics["recall"], strict=True)
    )
    hp = metadata["hyperparameters"]
    photos = photo_note(metrics)
    weights, exported = weights_note(hp), exported_note(metadata)
    return f"""# Fashion-MNIST classifier, version {metadata["version"]}

A `{hp["model"]}` model ({metadata["parameters"]:,} parameters) that sorts a 28x28 grayscale
image of a garment into one of ten Fashion-MNIST classes.

## Intended use
Demonstrating and load-testing a model server, and teaching. Not for decisions about people
or products: it knows ten coarse classes of centred, single-garment catalogue images only.

## Data
Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017): 60,000 training images, of which a seeded,
stratified {hp["validation_fraction"]:.0%} was held out for early stopping and model selection,
and the 10,000 test images, used once for the figures below. File checksums are in
`metadata.json`.

## Interface
SavedModel signature `{SIGNATURE_NAME}`: input `{INPUT_NAME}`, uint8 `[N, 28, 28]`, values 0 to 255,
light garment on a black background; output `{OUTPUT_NAME}`, float32 `[N, 10]`, rows sum to 1,
columns in the order of `class_names` in `metadata.json`.{mirror_note(hp)}

## Metrics (test set)
Accuracy **{metrics["accuracy"]:.4f}**. Confusion matrix: `confusion_matrix.png`.{photos}

| class | precision | recall |
| --- | --- | --- |
{rows}

## Training
`{metadata["command"]}`: {metadata["epochs_run"]} epochs in {metadata["training_seconds"]:.0f} s
on {metadata["training_machine"]}; best validation accuracy
{metadata["best_val_accuracy"]:.4f} at epoch {metadata["best_epoch"]}; {weights}.{exported}

## Known limits
- Shirt, T-shirt/top, pullover and coat are often confused (see the matrix): they look alike at
  28x28.
- Photos must show one garment on a plain, light background; the service's preprocessing
  trims, centres and inverts them the way Fashion-MNIST was made, but clutter, people wearing
  the garment and several items per image are outside what it saw.
- Nothing outside the ten classes is rejected: every input gets one of the ten labels.
"""


def export(model: keras.Model, metadata: dict[str, Any], output: Path, version: int | None) -> Path:
    """Write `output/<version>/` through a temporary folder and one rename; return it. Beside
    the SavedModel: its LiteRT serving artifacts, listed with their SHA-256 in metadata.json."""
    output.mkdir(parents=True, exist_ok=True)
    version = version if version is not None else next_version(output)
    final = output / str(version)
    if final.exists():
        raise FileExistsError(f"{final} already exists; choose another --version")
    staging = Path(tempfile.mkdtemp(prefix=f".tmp-{version}-", dir=output))
    try:
        save_signature(model, staging)
        checksums = write_serving_artifacts(staging, SIGNATURE_NAME)
        metadata = {**metadata, "version": version, METADATA_KEY: checksums}
        (staging / "metadata.json").write_text(json.dumps(metadata, indent=2) + "\n")
        save_confusion_image(
            metadata["metrics"]["confusion_matrix"], staging / "confusion_matrix.png"
        )
        (staging / "README.md").write_text(model_card(metadata))
        os.chmod(staging, 0o755)
        staging.rename(final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return final
