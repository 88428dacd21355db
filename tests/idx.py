"""Write small synthetic Fashion-MNIST-style IDX files for tests."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from harness.images import synthetic_images
from training.data import FILES, IMAGE_MAGIC, LABEL_MAGIC


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
