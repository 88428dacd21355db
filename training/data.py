"""Load Fashion-MNIST from IDX files, validated, and split it for training."""

from __future__ import annotations

import gzip
import hashlib
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# Keras's own download location and file names; the cache lands in ~/.keras/datasets/.
KERAS_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/"
KERAS_CACHE_SUBDIR = "datasets/fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}
IMAGE_MAGIC = 0x00000803  # unsigned bytes, three dimensions
LABEL_MAGIC = 0x00000801  # unsigned bytes, one dimension
IMAGE_SIZE = 28
NUM_CLASSES = 10
CLASS_NAMES = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
]


class DatasetError(Exception):
    """A dataset file is missing, truncated or malformed."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")


@dataclass(frozen=True)
class Dataset:
    """Images (N, 28, 28) uint8 and labels (N,) uint8 of one split."""

    images: np.ndarray
    labels: np.ndarray


@dataclass(frozen=True)
class FashionMNIST:
    """The training and test splits plus the SHA-256 of each file read."""

    train: Dataset
    test: Dataset
    sha256: dict[str, str]


def _read_gzip(path: Path) -> bytes:
    """Return the decompressed content of a gzip file, or raise DatasetError."""
    if not path.is_file():
        raise DatasetError(path, "file not found")
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read()
    except (OSError, EOFError) as error:  # BadGzipFile is an OSError
        raise DatasetError(path, f"not a complete gzip file ({error})") from None


def parse_idx(path: Path, magic: int) -> np.ndarray:
    """Parse one gzip-compressed IDX file whose header must carry `magic`."""
    raw = _read_gzip(path)
    ndim = magic & 0xFF
    header_size = 4 + 4 * ndim
    if len(raw) < header_size:
        raise DatasetError(path, f"truncated header ({len(raw)} bytes)")
    (found,) = struct.unpack(">I", raw[:4])
    if found != magic:
        raise DatasetError(path, f"bad magic number {found:#010x}, expected {magic:#010x}")
    shape = struct.unpack(f">{ndim}I", raw[4:header_size])
    expected = int(np.prod(shape))
    body = len(raw) - header_size
    if body != expected:
        raise DatasetError(path, f"header promises {expected} data bytes, file has {body}")
    return np.frombuffer(raw, dtype=np.uint8, offset=header_size).reshape(shape)


def load_split(images_path: Path, labels_path: Path) -> Dataset:
    """Load and cross-check one images file and its labels file."""
    images = parse_idx(images_path, IMAGE_MAGIC)
    labels = parse_idx(labels_path, LABEL_MAGIC)
    if images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DatasetError(images_path, f"images are {images.shape[1:]}, expected 28x28")
    if len(images) == 0:
        raise DatasetError(images_path, "holds no images")
    if labels.max(initial=0) >= NUM_CLASSES:
        raise DatasetError(labels_path, f"label {labels.max()} outside 0 to 9")
    if len(images) != len(labels):
        raise DatasetError(
            labels_path, f"{len(labels)} labels for {len(images)} images in {images_path.name}"
        )
    return Dataset(images, labels)


def sha256_of(path: Path) -> str:
    """Return the hex SHA-256 of a file."""
    return hashlib.sha256(path.read_bytes()).hexdigest()


def download_to_keras_cache() -> Path:
    """Fetch the four files through Keras's standard download and cache; return the folder."""
    import keras

    paths = [
        keras.utils.get_file(name, origin=KERAS_ORIGIN + name, cache_subdir=KERAS_CACHE_SUBDIR)
        for name in FILES.values()
    ]
    return Path(paths[0]).parent


def load_fashion_mnist(data_dir: Path | None = None) -> FashionMNIST:
    """Load both splits from `data_dir`, or from Keras's cache when it is None."""
    folder = Path(data_dir) if data_dir is not None else download_to_keras_cache()
    paths = {key: folder / name for key, name in FILES.items()}
    train = load_split(paths["train_images"], paths["train_labels"])
    test = load_split(paths["test_images"], paths["test_labels"])
    sha256 = {name: sha256_of(paths[key]) for key, name in FILES.items()}
    return FashionMNIST(train, test, sha256)


def stratified_split(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, Dataset]:
    """Carve a seeded validation set holding `fraction` of every class."""
    rng = np.random.default_rng(seed)
    held_out = []
    for label in np.unique(data.labels):
        members = np.flatnonzero(data.labels == label)
        count = max(1, round(len(members) * fraction))
        held_out.append(rng.choice(members, size=count, replace=False))
    mask = np.zeros(len(data.labels), dtype=bool)
    mask[np.concatenate(held_out)] = True
    train_index = rng.permutation(np.flatnonzero(~mask))
    return (
        Dataset(data.images[train_index], data.labels[train_index]),
        Dataset(data.images[mask], data.labels[mask]),
    )
