"""The training run end to end: load data, split, train, evaluate, export."""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import shlex
import sys
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from training.data import (
    CLASS_NAMES,
    Dataset,
    DatasetError,
    load_fashion_mnist,
    stratified_split,
)
from training.export import (
    INPUT_SPEC,
    OUTPUT_SPEC,
    SIGNATURE_NAME,
    add_serving_artifacts,
    export,
    load_network,
    version_metadata,
)
from training.models import MirrorAveraged, multiply_adds
from training.photos import TEST_PHOTO_SEED, TEST_SCALES, photo_sets, photo_versions
from training.train import TrainConfig, TrainResult, evaluate, predict_probabilities, train

MODEL_NAME = "fashion_mnist"


def this_command() -> str:
    """The command line of this run, as a user would type it."""
    return shlex.join(["python", "-m", "training", *sys.argv[1:]])


def now() -> str:
    """The time of export, UTC, in seconds."""
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def describe_machine() -> str:
    """Say what the model was trained on, for the model card."""
    return f"{os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()})"


def build_metadata(
    config: TrainConfig, result: TrainResult, metrics: dict[str, Any], sha256: dict[str, str]
) -> dict[str, Any]:
    """Collect everything a user needs to trust, reproduce and call the model."""
    return {
        "name": MODEL_NAME,
        "created": now(),
        "class_names": CLASS_NAMES,
        "signature_name": SIGNATURE_NAME,
        "input": INPUT_SPEC,
        "output": OUTPUT_SPEC,
        "metrics": metrics,
        "parameters": result.model.count_params(),
        "multiply_adds": served_multiply_adds(result.model, config),
        "training_seconds": round(result.seconds, 1),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_val_accuracy": round(result.best_val_accuracy, 4),
        "hyperparameters": dataclasses.asdict(config),
        "seed": config.seed,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "data_sha256": sha256,
        "command": this_command(),
        "training_machine": describe_machine(),
    }


def run(
    config: TrainConfig,
    data_dir: Path | None,
    output: Path,
    version: int | None,
    logdir: Path | None,
) -> Path:
    """Train one model and export it as a new version folder; return that folder."""
    data = load_fashion_mnist(data_dir)
    train_split, validation = stratified_split(data.train, config.validation_fraction, config.seed)
    print(
        f"data: {len(train_split.labels)} train, {len(validation.labels)} validation, "
        f"{len(data.test.labels)} test images",
        flush=True,
    )
    photos = (
        photo_sets(train_split.images, config.seed, config.photos_per_image)
        if config.photo_fraction > 0
        else None
    )
    result = train(config, train_split, validation, logdir, photos)
    model = export_model(result.model, config)
    metrics = evaluate(predict_probabilities(model, data.test.images), data.test.labels)
    print(
        f"test accuracy {metrics['accuracy']:.4f} after {result.epochs_run} epochs "
        f"in {result.seconds:.0f}s",
        flush=True,
    )
    metrics["photo_accuracy"] = photo_accuracy(model, data.test)
    folder = export(model, build_metadata(config, result, metrics, data.sha256), output, version)
    print(f"exported {folder}", flush=True)
    return folder


def photo_accuracy(model: keras.Model, test: Dataset) -> float:
    """The accuracy on the test images as photos, each of a style of its own (training's
    photos were drawn with the run's seed, these with another): the renders
    tests/test_photo_accuracy.py sends through /predict."""
    photos = photo_versions(test.images, TEST_PHOTO_SEED, scales=TEST_SCALES)
    accuracy: float = evaluate(predict_probabilities(model, photos), test.labels)["accuracy"]
    print(f"test accuracy on photos {accuracy:.4f}", flush=True)
    return accuracy


def served_multiply_adds(network: keras.Model, config: TrainConfig) -> int:
    """Multiply-adds per image served: the network's, twice with mirror averaging (at most
    twice, with a ramp)."""
    return multiply_adds(network) * (2 if config.mirror_average else 1)


def export_model(network: keras.Model, config: TrainConfig) -> keras.Model:
    """What a version serves: the network, mirror averaged unless switched off."""
    return MirrorAveraged(network, config.mirror_ramp) if config.mirror_average else network


def reexport(
    config: TrainConfig, data_dir: Path | None, source: Path, output: Path, version: int | None
) -> Path:
    """Export the network of an exported version again, with `config`'s mirror averaging, as a
    new version: no training. Its training record is the source's; its test accuracy is
    measured anew, on the test files the source was measured with."""
    metadata = version_metadata(source)
    data = load_fashion_mnist(data_dir)
    differ = sorted(
        name for name, digest in data.sha256.items() if metadata["data_sha256"].get(name) != digest
    )
    if differ:
        raise DatasetError(
            data_dir or Path("Keras's cache"),
            f"{', '.join(differ)} differ from those {source} was trained and measured with",
        )
    network = load_network(source)
    model = export_model(network, config)
    metrics = evaluate(predict_probabilities(model, data.test.images), data.test.labels)
    print(f"test accuracy {metrics['accuracy']:.4f}, {source}'s network exported again", flush=True)
    metrics["photo_accuracy"] = photo_accuracy(model, data.test)
    hyperparameters = {
        **metadata["hyperparameters"],
        "mirror_average": config.mirror_average,
        "mirror_ramp": list(config.mirror_ramp) if config.mirror_ramp else None,
    }
    again = {
        **{key: value for key, value in metadata.items() if key != "version"},
        "created": now(),
        "metrics": metrics,
        "hyperparameters": hyperparameters,
        "multiply_adds": served_multiply_adds(network, config),
        "exported_from": {"version": metadata["version"], "command": this_command()},
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
    }
    folder = export(model, again, output, version)
    print(f"exported {folder}", flush=True)
    return folder


def add_artifacts(folder: Path) -> None:
    """Give an exported version its serving artifacts in place: nothing trained or exported."""
    for path, digest in add_serving_artifacts(folder).items():
        print(f"wrote {folder / path}, sha256 {digest}", flush=True)
