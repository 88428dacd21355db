"""What mirror averaging costs and buys: the shipped model against its own bare network.

The shipped SavedModel averages the network's probabilities for each image and its mirror
image. This rebuilds the bare network from the shipped weights (checking that averaging it
over both views reproduces the shipped answers), exports it as a version of its own, and
measures both side by side: test accuracy on the full test set, the model alone (the default
runtime, one thread), and the service end to end at concurrency 1 and 32, two rounds.

Run with `make bench-mirror DATA_DIR=../shared/data/fashion-mnist`; it writes
docs/mirror-averaging.json and docs/mirror-averaging.md.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.load import (  # noqa: E402
    Server,
    multipart_body,
    progress,
    sample_png,
    wrk,
)

ROUNDS = 2
CHECK_TOLERANCE = 1e-5
MIN_ACCURACY = 0.935  # the shipped model's floor (tests/test_shipped_model.py)


def bare_network(version_dir: Path):  # noqa: ANN201 - a keras.Model
    """The shipped network without its mirror averaging, its weights taken by name."""
    import tensorflow as tf

    from training.models import BUILDERS

    metadata = json.loads((version_dir / "metadata.json").read_text())
    hyperparameters = metadata["hyperparameters"]
    network = BUILDERS[hyperparameters["model"]](hyperparameters["dropout"], hyperparameters["l2"])
    saved = {
        v.name.removesuffix(":0"): v.numpy()
        for v in tf.saved_model.load(str(version_dir)).variables
    }
    network.set_weights([saved[weight.path] for weight in network.weights])
    return network


def check_averaging(network, version_dir: Path) -> float:  # noqa: ANN001 - a keras.Model
    """Largest difference between the shipped answers and the bare network averaged by hand."""
    import tensorflow as tf

    images = np.random.default_rng(0).integers(0, 256, (64, 28, 28), dtype=np.uint8)
    shipped = tf.saved_model.load(str(version_dir)).signatures["serving_default"]
    expected = shipped(images=tf.constant(images))["probabilities"].numpy()
    pixels = images[..., np.newaxis].astype(np.float32)
    by_hand = (network(pixels).numpy() + network(pixels[:, :, ::-1]).numpy()) / 2
    return float(np.abs(expected - by_hand).max())


def export_bare(network, version_dir: Path, output: Path) -> Path:  # noqa: ANN001 - keras.Model
    """Write the bare network as version 1 of a model folder of its own (scratch: its
    metadata is the shipped one's, less the averaging and the accuracy)."""
    from training.export import save_signature

    folder = output / "1"
    save_signature(network, folder)
    metadata = json.loads((version_dir / "metadata.json").read_text())
    metadata["hyperparameters"]["mirror_average"] = False
    metadata["metrics"] = {"accuracy": None}
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return output


def test_accuracy(model_dir: Path, data_dir: Path) -> float:
    """Accuracy of a model folder's newest version, through the default runtime."""
    from service.model import list_versions, load_version
    from training.data import load_split

    test = load_split(
        data_dir / "t10k-images-idx3-ubyte.gz", data_dir / "t10k-labels-idx1-ubyte.gz"
    )
    model = load_version(model_dir, list_versions(model_dir)[-1])
    predicted = np.concatenate(
        [
            model.predict(test.images[i : i + 500]).argmax(axis=1)
            for i in range(0, len(test.labels), 500)
        ]
    )
    return float((predicted == test.labels).mean())


def model_cost(model_dir: Path) -> dict:
    """CPU ms per image of the model alone at batch 1 and 64 (the default runtime, one thread)."""
    from benchmarks.load import model_alone
    from service.settings import DEFAULT_RUNTIME

    alone = model_alone(model_dir, runtimes=(DEFAULT_RUNTIME,))[DEFAULT_RUNTIME]
    return {batch: alone[batch]["cpu_ms_per_image"] for batch in ("1", "64")}


def end_to_end(model_dirs: dict[str, Path], seconds: int) -> list[dict]:
    """The service on each model folder, concurrency 1 and 32, in alternating rounds."""
    body_file = Path(tempfile.mkdtemp(prefix="mirror-body-")) / "body.bin"
    body_file.write_bytes(multipart_body(sample_png()))
    rows = []
    for round_ in range(1, ROUNDS + 1):
        for name, model_dir in model_dirs.items():
            progress(f"round {round_}, {name}: starting gunicorn")
            server = Server({"FMNIST_MODEL_DIR": str(model_dir)})
            try:
                wrk(server.url, body_file, 8, 2)
                for concurrency in (1, 32):
                    result = wrk(server.url, body_file, concurrency, seconds)
                    rows.append(
                        {"round": round_, "model": name, "concurrency": concurrency, **result}
                    )
                    progress(f"{name}: c={concurrency} {result['rps']:.0f} req/s")
            finally:
                server.stop()
    return rows


def markdown(results: dict) -> str:
    """docs/mirror-averaging.md."""
    lines = [
        "# Mirror averaging: what it costs and buys",
        "",
        "Measured by `make bench-mirror` (`benchmarks/mirror_cost.py`): the shipped model "
        "(`mirror_averaged`) against its own network without the averaging (`bare`, the same "
        "weights; averaging it over both views by hand reproduces the shipped answers within "
        f"{results['check_max_difference']:.1e}). Single-image multipart uploads of a 28x28 "
        f"PNG, {results['seconds']} s per level, the service's defaults.",
        "",
        "| model | test accuracy | model CPU ms per image, batch 1 | batch 64 |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name in ("mirror_averaged", "bare"):
        cost = results["model_cpu_ms_per_image"][name]
        lines.append(
            f"| {name} | {results['accuracy'][name]:.4f} | {cost['1']:.3f} | {cost['64']:.3f} |"
        )
    lines += [
        "",
        "| round | model | concurrency | requests/s | p50 ms | p99 ms | non-2xx |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["end_to_end"]:
        lines.append(
            f"| {r['round']} | {r['model']} | {r['concurrency']} | {r['rps']:.0f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['non_2xx']} |"
        )
    return "\n".join(lines + ["", decision(results)]) + "\n"


def decision(results: dict) -> str:
    """Whether the averaging stays, from the accuracy floor and the measured throughputs."""
    accuracy, cost = results["accuracy"], results["model_cpu_ms_per_image"]
    rates = {
        name: [
            r["rps"] for r in results["end_to_end"] if (r["model"], r["concurrency"]) == (name, 32)
        ]
        for name in ("mirror_averaged", "bare")
    }
    gains = ", ".join(
        f"{bare / averaged - 1:+.0%}"
        for bare, averaged in zip(rates["bare"], rates["mirror_averaged"], strict=True)
    )
    extra = cost["mirror_averaged"]["64"] - cost["bare"]["64"]
    bought = accuracy["mirror_averaged"] - accuracy["bare"]
    if accuracy["bare"] >= MIN_ACCURACY:
        return f"Without the averaging the model stays at {MIN_ACCURACY} or more: it may go."
    return (
        f"The averaging stays. It costs the model {extra:.3f} CPU ms per image at batch 64; "
        f"without it the service's requests/s at concurrency 32 change by {gains} (round by "
        f"round), but the test accuracy falls by {bought:.4f} to {accuracy['bare']:.4f}, below "
        f"the project's floor of {MIN_ACCURACY}."
    )


def main() -> None:
    """Build the bare network, measure both models, write the reports."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True, help="the four IDX .gz files")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "fashion_mnist")
    parser.add_argument("--seconds", type=int, default=10, help="seconds per load level")
    parser.add_argument("--output", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    from service.model import list_versions

    version_dir = args.model_dir / str(list_versions(args.model_dir)[-1])
    scratch = Path(tempfile.mkdtemp(prefix="mirror-"))
    try:
        progress("rebuilding the bare network from the shipped weights")
        network = bare_network(version_dir)
        difference = check_averaging(network, version_dir)
        if difference > CHECK_TOLERANCE:
            sys.exit(f"the rebuilt network does not reproduce the shipped one ({difference})")
        bare_dir = export_bare(network, version_dir, scratch / "bare")
        model_dirs = {"mirror_averaged": args.model_dir, "bare": bare_dir}
        progress("test accuracy of both models")
        accuracy = {name: test_accuracy(path, args.data_dir) for name, path in model_dirs.items()}
        results = {
            "seconds": args.seconds,
            "check_max_difference": difference,
            "accuracy": accuracy,
            "model_cpu_ms_per_image": {name: model_cost(path) for name, path in model_dirs.items()},
            "end_to_end": end_to_end(model_dirs, args.seconds),
        }
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    (args.output / "mirror-averaging.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.output / "mirror-averaging.md").write_text(markdown(results))
    progress(f"wrote {args.output / 'mirror-averaging.md'}")


if __name__ == "__main__":
    main()
