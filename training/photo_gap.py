"""The gap between photos and raw images on an exported version's validation split, over several
photo seeds:

    python -m training.photo_gap models/fashion_mnist/3 --data-dir DIR [--seeds 5]

The test set gives one figure, from one style per image (tests/test_photo_accuracy.py); from one
seed to the next it moves by as much as the choices between recipes change it (docs/training.md,
"Photos"), and the test set must not choose anyway. This measures where choosing is allowed: on the
validation images the version did not train on (its metadata's split), each drawn as a photo in
a style of its own with each of `--seeds` seeds, through the service's preprocessing as it is in
this checkout. It prints one line per seed and the mean.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Read the command line."""
    parser = argparse.ArgumentParser(prog="python -m training.photo_gap", description=__doc__)
    parser.add_argument("version", type=Path, help="an exported version folder")
    parser.add_argument("--data-dir", type=Path, default=None, help="the Fashion-MNIST IDX files")
    parser.add_argument("--seeds", type=int, default=5, help="photo seeds: 1000, 1001, ...")
    args = parser.parse_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds needs at least 1; got {args.seeds}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Measure and print the gap per seed, then the mean."""
    args = parse_args(argv)
    from training.data import DatasetError, load_fashion_mnist, stratified_split
    from training.export import NotAVersionFolder, load_network, version_metadata
    from training.photos import TEST_SCALES, photo_versions
    from training.pipeline import export_model
    from training.train import TrainConfig, predict_probabilities

    try:
        hyperparameters = version_metadata(args.version)["hyperparameters"]
        data = load_fashion_mnist(args.data_dir)
    except (DatasetError, NotAVersionFolder) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    ramp = hyperparameters.get("mirror_ramp")
    served = TrainConfig(
        mirror_average=hyperparameters["mirror_average"], mirror_ramp=tuple(ramp) if ramp else None
    )
    model = export_model(load_network(args.version), served)  # what the version serves
    _, validation = stratified_split(
        data.train, hyperparameters["validation_fraction"], hyperparameters["seed"]
    )

    def correct(images: np.ndarray) -> np.ndarray:
        predicted = predict_probabilities(model, images).argmax(axis=1)
        answers: np.ndarray = predicted == validation.labels
        return answers

    raw = correct(validation.images)
    gaps = []
    for seed in range(1000, 1000 + args.seeds):
        photos = correct(photo_versions(validation.images, seed, TEST_SCALES))
        gaps.append(float(raw.mean() - photos.mean()))
        print(
            f"seed {seed}: raw {raw.mean():.4f}, photos {photos.mean():.4f}, "
            f"gap {100 * gaps[-1]:.2f} points ({np.sum(raw & ~photos)} right only raw, "
            f"{np.sum(~raw & photos)} right only as photos, of {len(raw)})",
            flush=True,
        )
    print(f"mean gap {100 * np.mean(gaps):.2f} points over {len(gaps)} seeds", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
