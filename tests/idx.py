"""Write small synthetic Fashion-MNIST-style IDX files for tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from training.data import FILES, IMAGE_MAGIC, LABEL_MAGIC


def synthetic_images(count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Make `count` 28x28 images whose class is a bright bar at a label-dependent height."""
    rng = np.random.default_rng(seed)
    labels = (np.arange(count) % 10).astype(np.uint8)
    images = rng.integers(0, 40, size=(count, 28, 28), dtype=np.uint8)
    for image, label in zip(images, labels, strict=True):
        image[2 + 2 * label : 8 + 2 * label, 4:24] = 220
    return images, labels


def write_idx(path: Path, magic: int, array: np.ndarray) -> None:
    """Write one gzip-compressed IDX file."""
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    with gzip.open(path, "wb") as stream:
        stream.write(header + array.astype(np.uint8).tobytes())


def write_dataset(folder: Path, train: int = 300, test: int = 100) -> Path:
    """Write the four Fashion-MNIST files with synthetic content; return the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, count, seed in (("train", train, 1), ("test", test, 2)):
        images, labels = synthetic_images(count, seed)
        write_idx(folder / FILES[f"{split}_images"], IMAGE_MAGIC, images)
        write_idx(folder / FILES[f"{split}_labels"], LABEL_MAGIC, labels)
    return folder
