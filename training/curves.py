"""Plot training runs' accuracy per epoch from their TensorBoard logs, side by side.

    python -m training.curves docs/training-curves.png "shipped=runs/cnn" "wider=/tmp/b/runs"

Each run's `--logdir` holds Keras's `train` and `validation` event files; the plot shows
validation accuracy (solid) and training accuracy (dotted) per epoch for every run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import numpy as np


def scalars(folder: Path, tag: str = "epoch_accuracy") -> list[float]:
    """The values of `tag` per epoch in the event files of `folder`, in step order."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"tensors": 0, "scalars": 0})
    events.Reload()
    if tag in events.Tags()["tensors"]:
        points = [(e.step, float(tensor_value(e).item())) for e in events.Tensors(tag)]
    else:
        points = [(e.step, e.value) for e in events.Scalars(tag)]
    return [value for _, value in sorted(points)]


def tensor_value(event: Any) -> np.ndarray:
    """A tensor event's value as an array."""
    from tensorboard.util import tensor_util

    value: np.ndarray = tensor_util.make_ndarray(event.tensor_proto)
    return value


def plot(runs: dict[str, Path], output: Path) -> None:
    """Write the PNG of every run's validation and training accuracy per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5))
    colours = plt.get_cmap("tab10")
    for index, (name, logdir) in enumerate(runs.items()):
        colour = colours(index % 10)
        validation = scalars(logdir / "validation")
        training = scalars(logdir / "train")
        epochs = np.arange(1, len(validation) + 1)
        axes.plot(epochs, validation, color=colour, label=f"{name}: validation")
        axes.plot(epochs, training[: len(epochs)], color=colour, linestyle=":", alpha=0.7)
    axes.set_xlabel("epoch")
    axes.set_ylabel("accuracy (dotted: training, on augmented images)")
    axes.set_ylim(0.88, 0.97)
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(output, dpi=100)
    plt.close(figure)


def main(argv: list[str]) -> int:
    """Parse `OUTPUT NAME=LOGDIR...` and plot."""
    if len(argv) < 2 or not all("=" in run for run in argv[1:]):
        print(__doc__, file=sys.stderr)
        return 2
    runs = {name: Path(folder) for name, folder in (run.split("=", 1) for run in argv[1:])}
    plot(runs, Path(argv[0]))
    print(f"wrote {argv[0]}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
