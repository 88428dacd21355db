"""The training run end to end: load data, split, train, evaluate, export."""

from __future__ import annotations

import dataclasses
import datetime
import os
import platform
import shlex
import sys
from pathlib import Path

import keras
import tensorflow as tf

from training.data import CLASS_NAMES, load_fashion_mnist, stratified_split
from training.export import INPUT_SPEC, OUTPUT_SPEC, SIGNATURE_NAME, export
from training.models import with_mirror_averaging
from training.train import TrainConfig, TrainResult, evaluate, predict_probabilities, train

MODEL_NAME = "fashion_mnist"


def describe_machine() -> str:
    """Say what the model was trained on, for the model card."""
    return f"{os.cpu_count()} CPU cores ({platform.machine()}, {platform.system()})"


def build_metadata(
    config: TrainConfig, result: TrainResult, metrics: dict, sha256: dict[str, str]
) -> dict:
    """Collect everything a user needs to trust, reproduce and call the model."""
    return {
        "name": MODEL_NAME,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "class_names": CLASS_NAMES,
        "signature_name": SIGNATURE_NAME,
        "input": INPUT_SPEC,
        "output": OUTPUT_SPEC,
        "metrics": metrics,
        "parameters": result.model.count_params(),
        "training_seconds": round(result.seconds, 1),
        "epochs_run": result.epochs_run,
        "best_epoch": result.best_epoch,
        "best_val_accuracy": round(result.best_val_accuracy, 4),
        "hyperparameters": dataclasses.asdict(config),
        "seed": config.seed,
        "tensorflow_version": tf.__version__,
        "keras_version": keras.__version__,
        "data_sha256": sha256,
        "command": shlex.join(["python", "-m", "training", *sys.argv[1:]]),
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
    result = train(config, train_split, validation, logdir)
    model = with_mirror_averaging(result.model) if config.mirror_average else result.model
    metrics = evaluate(predict_probabilities(model, data.test.images), data.test.labels)
    print(
        f"test accuracy {metrics['accuracy']:.4f} after {result.epochs_run} epochs "
        f"in {result.seconds:.0f}s",
        flush=True,
    )
    folder = export(model, build_metadata(config, result, metrics, data.sha256), output, version)
    print(f"exported {folder}", flush=True)
    return folder
