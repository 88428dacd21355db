"""Train a model on Fashion-MNIST and evaluate it on the held-out test set."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from training.data import IMAGE_SIZE, NUM_CLASSES, Dataset
from training.models import BUILDERS, CNN_FILTERS

SHUFFLE_BUFFER = 60_000  # the whole training split: a full shuffle every epoch
MAX_SHIFT = 2  # pixels; garments in Fashion-MNIST are centred to within a few pixels
ERASE_SIDES = (4, 10)  # random erasing: a rectangle of 4 to 10 pixels a side, set to black
LR_PATIENCE = 2  # plateau schedule: epochs without validation-loss progress before halving
MIN_LEARNING_RATE = 1e-5


@dataclass(frozen=True)
class TrainConfig:
    """Every hyper-parameter of one training run."""

    model: str = "cnn"
    filters: tuple[int, ...] = CNN_FILTERS  # the CNN's convolution blocks
    epochs: int = 100
    batch_size: int = 512
    optimizer: str = "adamw"
    learning_rate: float = 3e-3
    weight_decay: float = 5e-4  # AdamW's decoupled decay
    schedule: str = "cosine"
    warmup_epochs: int = 8  # cosine schedule: a linear ramp to the full rate, then to zero
    l2: float = 0.0
    dropout: float = 0.3
    label_smoothing: float = 0.1
    augment: bool = True
    erase_probability: float = 0.5  # random erasing, with augment
    photo_fraction: float = 0.4  # share of training images replaced by a photo's round trip
    photos_per_image: int = 3  # photos drawn of each training image; each use takes one of them
    mirror_average: bool = True
    mirror_ramp: tuple[float, float] | None = None
    # Epochs without validation progress before stopping early and taking the best epoch's
    # weights; 0: train every epoch and keep the last weights, where the cosine schedule ends
    # (docs/training.md, "What each lever bought").
    patience: int = 0
    validation_fraction: float = 0.1
    seed: int = 42


@dataclass(frozen=True)
class TrainResult:
    """A trained model and what happened while training it."""

    model: keras.Model
    epochs_run: int
    best_epoch: int
    best_val_accuracy: float
    seconds: float


class EpochProgress(keras.callbacks.Callback):
    """Print one progress line per epoch and put the learning rate into the logs."""

    def __init__(self, epochs: int) -> None:
        super().__init__()
        self.epochs = epochs
        self.started = 0.0

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Start the epoch's clock."""
        self.started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        """Record the learning rate (for TensorBoard, which runs after) and print the line."""
        logs = logs if logs is not None else {}
        logs["learning_rate"] = float(
            keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)
        )
        print(
            f"epoch {epoch + 1}/{self.epochs}"
            f"  loss {logs['loss']:.4f}  accuracy {logs['accuracy']:.4f}"
            f"  val_loss {logs['val_loss']:.4f}  val_accuracy {logs['val_accuracy']:.4f}"
            f"  lr {logs['learning_rate']:.2e}  {time.perf_counter() - self.started:.1f}s",
            flush=True,
        )


def make_dataset(
    data: Dataset,
    batch_size: int,
    seed: int,
    config: TrainConfig | None = None,
    photos: np.ndarray | None = None,
) -> tf.data.Dataset:
    """Batch (image, one-hot label) pairs as float32 (N, 28, 28, 1); with `config`, shuffle
    and augment as it says, mixing in `photos` (uint8 round trips of each image's photos, same
    order: (N, 28, 28) for one photo an image, (N, K, 28, 28) for K)."""
    images = data.images[..., np.newaxis].astype("float32")
    labels = np.eye(NUM_CLASSES, dtype="float32")[data.labels]
    mixed = config is not None and photos is not None and config.photo_fraction > 0
    if mixed and photos is not None:
        pairs = (images, photos[:, np.newaxis] if photos.ndim == 3 else photos)
        dataset = tf.data.Dataset.from_tensor_slices((pairs, labels))
    else:
        dataset = tf.data.Dataset.from_tensor_slices((images, labels))
    if config is not None:
        dataset = dataset.shuffle(SHUFFLE_BUFFER, seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(batch_size)
    if config is not None and mixed:
        dataset = dataset.map(make_photo_mixer(config.photo_fraction, seed))
    if config is not None and config.augment:
        dataset = dataset.map(make_augmenter(seed, config.erase_probability))
    return dataset.prefetch(tf.data.AUTOTUNE)


def make_photo_mixer(
    fraction: float, seed: int
) -> Callable[[tuple[tf.Tensor, tf.Tensor], tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """Replace each image, with probability `fraction`, by the round trip of one of its photos
    drawn at random."""

    def mix(images: tuple[tf.Tensor, tf.Tensor], labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        raw, photos = images  # (B, 28, 28, 1) float32, (B, K, 28, 28) uint8
        count = tf.shape(raw)[0]
        which = tf.random.uniform([count], 0, tf.shape(photos)[1], tf.int32, seed=seed + 3)
        photo = tf.cast(tf.gather(photos, which, batch_dims=1), tf.float32)[..., tf.newaxis]
        chosen = tf.random.uniform([count, 1, 1, 1], seed=seed + 2) < fraction
        return tf.where(chosen, photo, raw), labels

    return mix


def erase(images: tf.Tensor, probability: float, seed: int) -> tf.Tensor:
    """Random erasing: with `probability`, black out one rectangle of each image, its sides
    drawn from ERASE_SIDES."""
    count = tf.shape(images)[0]
    low, high = ERASE_SIDES
    sides = tf.random.uniform([2, count], low, high + 1, dtype=tf.int32, seed=seed)
    corner = tf.random.uniform([2, count], seed=seed + 1)
    starts = tf.cast(corner * tf.cast(IMAGE_SIZE - sides + 1, tf.float32), tf.int32)
    erased = tf.random.uniform([count], seed=seed + 2) < probability
    positions = tf.range(IMAGE_SIZE)[tf.newaxis, :]
    inside = (positions >= starts[..., tf.newaxis]) & (
        positions < (starts + sides)[..., tf.newaxis]
    )  # (2, N, 28): rows, then columns
    mask = inside[0][:, :, tf.newaxis] & inside[1][:, tf.newaxis, :]
    mask &= erased[:, tf.newaxis, tf.newaxis]
    return tf.where(mask[..., tf.newaxis], tf.zeros_like(images), images)


def make_augmenter(
    seed: int, erase_probability: float = 0.0
) -> Callable[[tf.Tensor, tf.Tensor], tuple[tf.Tensor, tf.Tensor]]:
    """Flip left-right (garments are symmetric), shift whole pixels (imperfect centring) and
    erase a rectangle (occlusion) at random."""
    # Whole batches at a time: less CPU time than the same ops image by image
    # (docs/training.md, "Time budget").
    flip = keras.layers.RandomFlip("horizontal", seed=seed)
    shift = keras.layers.RandomTranslation(
        MAX_SHIFT / IMAGE_SIZE,
        MAX_SHIFT / IMAGE_SIZE,
        fill_mode="constant",
        interpolation="nearest",  # whole-pixel shifts: no blurring between neighbours
        seed=seed + 1,
    )

    def augment(images: tf.Tensor, labels: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        """Augment one batch of images; labels pass through."""
        images = shift(flip(images, training=True), training=True)
        if erase_probability > 0:
            images = erase(images, erase_probability, seed + 3)
        return images, labels

    return augment


def make_learning_rate(
    config: TrainConfig, steps_per_epoch: int
) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """A fixed rate (halved on plateaus by a callback), or warm-up then cosine decay to zero."""
    if config.schedule == "plateau":
        return config.learning_rate
    warmup = min(config.warmup_epochs, config.epochs) * steps_per_epoch
    return keras.optimizers.schedules.CosineDecay(
        0.0,
        decay_steps=max(1, config.epochs * steps_per_epoch - warmup),
        warmup_target=config.learning_rate,
        warmup_steps=warmup,
    )


def make_optimizer(
    config: TrainConfig, learning_rate: float | keras.optimizers.schedules.LearningRateSchedule
) -> keras.optimizers.Optimizer:
    """Return mini-batch SGD with Nesterov momentum, Adam, or AdamW (decoupled weight decay)."""
    if config.optimizer == "sgd":
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)
    if config.optimizer == "adamw":
        return keras.optimizers.AdamW(learning_rate, weight_decay=config.weight_decay)
    return keras.optimizers.Adam(learning_rate)


def make_callbacks(config: TrainConfig, logdir: Path | None) -> list[keras.callbacks.Callback]:
    """Progress, early stopping on validation if asked, plateau decay if chosen, and
    TensorBoard."""
    callbacks: list[keras.callbacks.Callback] = [EpochProgress(config.epochs)]
    if config.patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_accuracy", patience=config.patience, restore_best_weights=True
            )
        )
    if config.schedule == "plateau":
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=LR_PATIENCE, min_lr=MIN_LEARNING_RATE
            )
        )
    if logdir is not None:
        callbacks.append(keras.callbacks.TensorBoard(log_dir=str(logdir)))
    return callbacks


def train(
    config: TrainConfig,
    train: Dataset,
    validation: Dataset,
    logdir: Path | None = None,
    photos: np.ndarray | None = None,
) -> TrainResult:
    """Train a fresh model of `config.model`, mixing in `photos` (the training images' photo
    round trips) if given; keep the weights of the best validation epoch."""
    keras.utils.set_random_seed(config.seed)
    tf.config.experimental.enable_op_determinism()
    model = BUILDERS[config.model](config.dropout, config.l2, config.filters)
    steps_per_epoch = math.ceil(len(train.labels) / config.batch_size)
    model.compile(
        optimizer=make_optimizer(config, make_learning_rate(config, steps_per_epoch)),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=config.label_smoothing),
        metrics=["accuracy"],
    )
    started = time.perf_counter()
    history = model.fit(
        make_dataset(train, config.batch_size, config.seed, config, photos),
        validation_data=make_dataset(validation, 1024, config.seed),
        epochs=config.epochs,
        callbacks=make_callbacks(config, logdir),
        shuffle=False,  # the dataset shuffles itself (make_dataset); Keras warned otherwise
        verbose=0,
    )
    val_accuracy = history.history["val_accuracy"]
    return TrainResult(
        model=model,
        epochs_run=len(val_accuracy),
        best_epoch=int(np.argmax(val_accuracy)) + 1,
        best_val_accuracy=float(max(val_accuracy)),
        seconds=time.perf_counter() - started,
    )


def predict_probabilities(model: keras.Model, images: np.ndarray) -> np.ndarray:
    """Return (N, 10) class probabilities for uint8 images (N, 28, 28)."""
    probabilities: np.ndarray = model.predict(
        images[..., np.newaxis].astype("float32"), batch_size=1024, verbose=0
    )
    return probabilities


def evaluate(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Accuracy, per-class precision and recall, and the confusion matrix (rows: true)."""
    predicted = probabilities.argmax(axis=1)
    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=int)
    np.add.at(confusion, (labels, predicted), 1)
    correct = np.diag(confusion)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.nan_to_num(correct / confusion.sum(axis=0))
        recall = np.nan_to_num(correct / confusion.sum(axis=1))
    return {
        "accuracy": float(correct.sum() / len(labels)),
        "precision": [round(float(p), 4) for p in precision],
        "recall": [round(float(r), 4) for r in recall],
        "confusion_matrix": confusion.tolist(),
    }
