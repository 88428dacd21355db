"""Command line: `python -m training --help`."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

# Quiet TensorFlow's C++ start-up chatter; progress lines are ours.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DEFAULTS_NOTE = "Defaults reproduce the shipped model (models/fashion_mnist/3)."


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the training options."""
    from training.train import TrainConfig

    defaults = TrainConfig()
    parser = argparse.ArgumentParser(
        prog="python -m training",
        description="Train a Fashion-MNIST classifier and export it as a versioned SavedModel.",
        epilog=DEFAULTS_NOTE,
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--data-dir",
        type=Path,
        default=None,
        help="folder with the four IDX .gz files (default: Keras's download cache)",
    )
    parser.add_argument(
        "--model",
        choices=["cnn", "dfn"],
        default=defaults.model,
        help="cnn, or dfn: the dense feed-forward baseline",
    )
    parser.add_argument(
        "--filters",
        type=int,
        nargs="+",
        default=list(defaults.filters),
        help="the CNN's convolution blocks: filters in each (each block halves the resolution)",
    )
    parser.add_argument("--epochs", type=int, default=defaults.epochs)
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--optimizer", choices=["sgd", "adam", "adamw"], default=defaults.optimizer)
    parser.add_argument("--learning-rate", type=float, default=defaults.learning_rate)
    parser.add_argument(
        "--weight-decay",
        type=float,
        default=defaults.weight_decay,
        help="AdamW's decoupled weight decay",
    )
    parser.add_argument(
        "--schedule",
        choices=["cosine", "plateau"],
        default=defaults.schedule,
        help="learning-rate schedule: --warmup-epochs of linear warm-up then cosine decay to "
        "zero over --epochs, or halve the rate after validation-loss plateaus",
    )
    parser.add_argument("--warmup-epochs", type=int, default=defaults.warmup_epochs)
    parser.add_argument(
        "--label-smoothing",
        type=float,
        default=defaults.label_smoothing,
        help="share of each target spread evenly over the ten classes",
    )
    parser.add_argument(
        "--erase-probability",
        type=float,
        default=defaults.erase_probability,
        help="random erasing: the chance an image has a rectangle blacked out (with augmentation)",
    )
    parser.add_argument(
        "--photo-fraction",
        type=float,
        default=defaults.photo_fraction,
        help="share of training images replaced, each epoch, by what the service's "
        "preprocessing makes of a catalogue-style photo of them (training/photos.py)",
    )
    parser.add_argument(
        "--photos-per-image",
        type=int,
        default=defaults.photos_per_image,
        help="photos drawn of each training image, in styles of their own; each time an image "
        "is replaced, one of them is taken at random",
    )
    parser.add_argument("--l2", type=float, default=defaults.l2, help="L2 weight penalty")
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument(
        "--no-augment",
        dest="augment",
        action="store_false",
        help="switch off random flips, shifts and erasing (and with them mirror averaging)",
    )
    parser.add_argument(
        "--no-mirror-average",
        dest="mirror_average",
        action="store_false",
        help="export the bare network instead of averaging each image's prediction with its "
        "mirror image's (test-time augmentation, one more forward pass)",
    )
    parser.add_argument(
        "--mirror-ramp",
        type=float,
        nargs=2,
        metavar=("LOW", "HIGH"),
        default=defaults.mirror_ramp,
        help="average an image with its mirror image only where the network is unsure: half "
        "and half where its top probability is below LOW, not at all from HIGH up, in "
        "proportion between; only images below HIGH take the second pass (default: every "
        "image, half and half; docs/mirror-averaging.md measured 0.8 0.95)",
    )
    parser.add_argument(
        "--from-version",
        type=Path,
        default=None,
        metavar="VERSION_DIR",
        help="train nothing: export the network of this version folder again, with this run's "
        "mirror averaging, as a new version (its test accuracy measured anew; the training "
        "options are the source version's)",
    )
    parser.add_argument(
        "--serving-artifacts",
        action="store_true",
        help="with --from-version: train and export nothing, but write the serving artifacts "
        "(the LiteRT models, float and 8-bit weights, and the signature: what every export "
        "writes beside the SavedModel) into VERSION_DIR itself, and their SHA-256 into its "
        "metadata.json; the SavedModel is left as it is",
    )
    parser.add_argument(
        "--patience",
        type=int,
        default=defaults.patience,
        help="epochs without validation progress before stopping early and restoring the best "
        "epoch's weights (0: no early stopping; the last epoch's weights are exported)",
    )
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--output", type=Path, default=Path("models/fashion_mnist"))
    parser.add_argument(
        "--version",
        type=int,
        default=None,
        help="version folder to write (default: one more than the highest)",
    )
    parser.add_argument("--logdir", type=Path, default=None, help="TensorBoard log folder")
    args = parser.parse_args(argv)
    if args.serving_artifacts and args.from_version is None:
        parser.error("--serving-artifacts needs --from-version VERSION_DIR")
    if args.mirror_ramp is not None and not 0 < args.mirror_ramp[0] < args.mirror_ramp[1]:
        low, high = args.mirror_ramp
        parser.error(f"--mirror-ramp needs 0 < LOW < HIGH; got {low:g} {high:g}")
    if args.photos_per_image < 1:
        parser.error(f"--photos-per-image needs at least 1; got {args.photos_per_image}")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run training with the parsed options; print one-line errors, never a traceback."""
    args = parse_args(argv)
    from training.data import DatasetError
    from training.export import NotAVersionFolder
    from training.pipeline import add_artifacts, reexport, run
    from training.train import TrainConfig

    # A network never shown flipped images is not averaged with its mirror image.
    mirror_average = args.mirror_average and args.augment
    config = TrainConfig(
        model=args.model,
        filters=tuple(args.filters),
        epochs=args.epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        schedule=args.schedule,
        warmup_epochs=args.warmup_epochs,
        l2=args.l2,
        dropout=args.dropout,
        label_smoothing=args.label_smoothing,
        augment=args.augment,
        erase_probability=args.erase_probability,
        photo_fraction=args.photo_fraction,
        photos_per_image=args.photos_per_image,
        mirror_average=mirror_average,
        mirror_ramp=tuple(args.mirror_ramp) if mirror_average and args.mirror_ramp else None,
        patience=args.patience,
        seed=args.seed,
    )
    try:
        if args.serving_artifacts:
            add_artifacts(args.from_version)
        elif args.from_version is not None:
            reexport(config, args.data_dir, args.from_version, args.output, args.version)
        else:
            run(config, args.data_dir, args.output, args.version, args.logdir)
    except (DatasetError, FileExistsError, NotAVersionFolder) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
