"""What each runtime answers and costs: the shipped model's newest version through every one.

For each runtime of service/inference/runtime.py: test accuracy on the full Fashion-MNIST test
set, how far its probabilities are from the SavedModel signature's (the reference) over those
10,000 images, how often its class differs, the size of what it runs, and the model alone in-
process (one thread) at batch 1, 8, 32 and 64. The default runtime must be the fastest one whose
accuracy stays at the project's floor.

Run with `make bench-runtimes DATA_DIR=../shared/data/fashion-mnist`; it writes
docs/runtimes.json and docs/runtimes.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from benchmarks.model_alone import model_alone
from benchmarks.wrk import progress
from harness import ROOT

MIN_ACCURACY = 0.945  # the shipped model's floor (tests/test_shipped_model.py)
REFERENCE = "savedmodel"
CHUNK = 500  # images per call over the test set
# The bounds the tests hold the exported LiteRT models to; they stand beside the measurements.
ARTIFACT_TOLERANCES = (
    "The LiteRT models a version folder carries (`litert/model.tflite`, "
    "`litert/model-int8.tflite`, written by the export) answer the SavedModel's probabilities "
    "within 1e-5 (float weights) and within 0.05 (8-bit weights), the bounds "
    "`tests/test_runtime.py` holds the runtimes to: `tests/artifacts.py` checks them, with their "
    "checksums, for a fresh export (`tests/test_training.py`) and for the shipped version "
    "(`tests/test_shipped_model.py`)."
)


def answers(model_dir: Path, data_dir: Path) -> tuple[dict[str, np.ndarray], np.ndarray, dict]:
    """Every runtime's probabilities for the whole test set, the labels, and each one's size."""
    from service.inference.model import list_versions, load_version
    from service.inference.runtime import RUNTIMES
    from training.data import load_split

    test = load_split(
        data_dir / "t10k-images-idx3-ubyte.gz", data_dir / "t10k-labels-idx1-ubyte.gz"
    )
    version = list_versions(model_dir)[-1]
    probabilities, sizes = {}, {}
    for runtime in RUNTIMES:
        progress(f"{runtime}: loading and answering the {len(test.labels)} test images")
        model = load_version(model_dir, version, runtime)
        probabilities[runtime] = np.concatenate(
            [model.predict(test.images[i : i + CHUNK]) for i in range(0, len(test.labels), CHUNK)]
        )
        flatbuffer = getattr(model.runtime, "_flatbuffer", None)
        sizes[runtime] = len(flatbuffer) if flatbuffer is not None else folder_bytes(model.path)
    return probabilities, test.labels, sizes


def folder_bytes(path: Path) -> int:
    """Bytes of every file under a SavedModel folder."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def compare(probabilities: dict[str, np.ndarray], labels: np.ndarray, sizes: dict) -> dict:
    """Accuracy, distance from the reference and class agreement of each runtime."""
    reference = probabilities[REFERENCE]
    return {
        runtime: {
            "test_accuracy": float((p.argmax(axis=1) == labels).mean()),
            "max_abs_difference": float(np.abs(p - reference).max()),
            "class_differs": int((p.argmax(axis=1) != reference.argmax(axis=1)).sum()),
            "bytes": sizes[runtime],
        }
        for runtime, p in probabilities.items()
    }


def markdown(results: dict) -> str:
    """docs/runtimes.md."""
    cost, quality = results["model_alone"], results["quality"]
    lines = [
        "# Runtimes: what each answers and costs",
        "",
        "Measured by `make bench-runtimes` (`benchmarks/runtimes.py`): the newest shipped "
        "version through each runtime of `service/inference/runtime.py` (`FMNIST_RUNTIME`), "
        "over the "
        f"{results['test_images']} images of the Fashion-MNIST test set; differences are "
        f"against `{REFERENCE}`, the SavedModel's own signature. The model alone: one thread "
        "calling it in-process on random images, CPU ms per image.",
        "",
        "| runtime | test accuracy | largest probability difference | images of another class "
        "| bytes run | batch 1 | batch 8 | batch 32 | batch 64 |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for runtime, q in quality.items():
        per_image = " | ".join(f"{cost[runtime][b]['cpu_ms_per_image']:.3f}" for b in cost[runtime])
        lines.append(
            f"| {runtime} | {q['test_accuracy']:.4f} | {q['max_abs_difference']:.1e} | "
            f"{q['class_differs']} | {q['bytes']:,} | {per_image} |"
        )
    return "\n".join(lines + ["", decision(results), "", ARTIFACT_TOLERANCES]) + "\n"


def decision(results: dict) -> str:
    """Which runtime the measurements make the default, and what the default is."""
    from service.settings import DEFAULT_RUNTIME

    cost, quality = results["model_alone"], results["quality"]
    allowed = [r for r, q in quality.items() if q["test_accuracy"] >= MIN_ACCURACY]
    fastest = min(allowed, key=lambda r: cost[r]["8"]["cpu_ms_per_image"])
    verdict = "is" if fastest == DEFAULT_RUNTIME else f"is not (the default is `{DEFAULT_RUNTIME}`)"
    return (
        f"At batch 8, the size a loaded worker's batches reach, the fastest runtime whose test "
        f"accuracy stays at {MIN_ACCURACY} or more is `{fastest}`; it {verdict} the default."
    )


def main() -> None:
    """Answer the test set through every runtime, time each one, write the reports."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True, help="the four IDX .gz files")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "fashion_mnist")
    parser.add_argument("--output", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    probabilities, labels, sizes = answers(args.model_dir, args.data_dir)
    results = {
        "test_images": len(labels),
        "quality": compare(probabilities, labels, sizes),
        "model_alone": model_alone(args.model_dir),
    }
    (args.output / "runtimes.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.output / "runtimes.md").write_text(markdown(results))
    progress(f"wrote {args.output / 'runtimes.md'}")


if __name__ == "__main__":
    main()
