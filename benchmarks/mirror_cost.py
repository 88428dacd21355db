"""What mirror averaging costs and buys: the shipped network averaged with its mirror image
for every image (as shipped), only where it is unsure (training.models.MIRROR_RAMP), and not
at all.

The three are exported from the newest shipped version's network (its weights read back by
training.export.load_network; the export that averages every image must reproduce the
shipped answers). Each is measured on the real test set: test accuracy, the share of images
that take the second forward pass, the model alone (the default runtime, one thread, test
images at batch 1, 8 and 64), and the service end to end at concurrency 1 and 32, the three
servers started together and loaded in turn (benchmarks/load.py), each request uploading the
next of 256 test images as a 28x28 PNG, two rounds.

Run with `make bench-mirror DATA_DIR=../shared/data/fashion-mnist`; it writes
docs/mirror-averaging.json and docs/mirror-averaging.md.
"""

from __future__ import annotations

import argparse
import io
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.phases import interleaved, start, stop
from benchmarks.wrk import multipart_body, progress
from harness import ROOT

ROUNDS = 2
CHECK_TOLERANCE = 1e-5
MIN_ACCURACY = 0.935  # the shipped model's floor (tests/test_shipped_model.py)
BATCHES = (1, 8, 64)
UPLOADS = 256  # test images the load cycles through
NAMES = ("every_image", "where_unsure", "bare")


def export_variant(network, ramp, shipped: Path, output: Path) -> Path:
    """Write `network` with one way of averaging as version 1 of a model folder of its own
    (scratch: its metadata is the shipped one's, less the test accuracy)."""
    from training.export import save_signature
    from training.models import MirrorAveraged

    folder = output / "1"
    model = network if ramp == "bare" else MirrorAveraged(network, ramp)
    save_signature(model, folder)
    metadata = json.loads((shipped / "metadata.json").read_text())
    metadata["hyperparameters"]["mirror_average"] = ramp != "bare"
    metadata["hyperparameters"]["mirror_ramp"] = None if ramp == "bare" else ramp
    metadata["metrics"] = {"accuracy": None}
    (folder / "metadata.json").write_text(json.dumps(metadata, indent=2))
    return output


def load(model_dir: Path):
    """A model folder's version 1 in the default runtime."""
    from service.inference.model import load_version

    return load_version(model_dir, 1)


def test_accuracy(model_dir: Path, images: np.ndarray, labels: np.ndarray) -> float:
    """Accuracy over the test set, through the default runtime."""
    model = load(model_dir)
    predicted = np.concatenate(
        [model.predict(images[i : i + 500]).argmax(axis=1) for i in range(0, len(labels), 500)]
    )
    return float((predicted == labels).mean())


def model_cost(model_dir: Path, images: np.ndarray, seconds: float = 2.0) -> dict[str, float]:
    """CPU ms per image of the model alone, one thread, on test images at each batch size
    (each call a new random draw of them, as traffic would mix them)."""
    model = load(model_dir)
    rng = np.random.default_rng(0)
    cost = {}
    for batch in BATCHES:
        draws = [images[rng.choice(len(images), batch, replace=False)] for _ in range(64)]
        for draw in draws[:5]:
            model.predict(draw)
        calls, started, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - started < seconds:
            model.predict(draws[calls % len(draws)])
            calls += 1
        cost[str(batch)] = round((time.process_time() - cpu) / calls / batch * 1000, 3)
        progress(f"model alone, {model_dir.name}: batch {batch}: {cost[str(batch)]} ms per image")
    return cost


def upload_files(images: np.ndarray, folder: Path) -> list[Path]:
    """A multipart body per test image, as a 28x28 PNG, in files for wrk."""
    from PIL import Image

    paths = []
    for index, pixels in enumerate(images):
        buffer = io.BytesIO()
        Image.fromarray(pixels).save(buffer, "PNG")
        path = folder / f"upload-{index}.bin"
        path.write_bytes(multipart_body(buffer.getvalue()))
        paths.append(path)
    return paths


def end_to_end(model_dirs: dict[str, Path], uploads: list[Path], seconds: int) -> list[dict]:
    """The service on each model folder, concurrency 1 and 32, the three loaded in turn."""
    rows = []
    for round_ in range(1, ROUNDS + 1):
        servers = start(
            {name: ({"FMNIST_MODEL_DIR": str(d)}, None) for name, d in model_dirs.items()},
            uploads,
        )
        try:
            for concurrency in (1, 32):
                measured = interleaved(servers, uploads, concurrency, seconds, f"round {round_}")
                rows += [
                    {"round": round_, "model": name, "concurrency": concurrency, **result}
                    for name, result in measured.items()
                ]
        finally:
            stop(servers)
    return rows


def markdown(results: dict) -> str:
    """docs/mirror-averaging.md."""
    low, high = results["ramp"]
    lines = [
        "# Mirror averaging: what it costs and buys",
        "",
        "Measured by `make bench-mirror` (`benchmarks/mirror_cost.py`): the shipped network "
        "averaged with its mirror image for every image (`every_image`, as shipped), only where "
        f"it is unsure (`where_unsure`, `training.models.MIRROR_RAMP`: the mirror image weighs "
        f"a half below a top probability of {low:g}, nothing from {high:g} up, in proportion "
        "between), and not at all (`bare`), all three exported from the same weights (the "
        "`every_image` export reproduces the shipped answers within "
        f"{results['check_max_difference']:.1e}). Over the 10,000 test images, "
        f"{results['second_pass_share']:.1%} take `where_unsure`'s second pass. The model "
        "alone: the default runtime, one thread, random draws of test images. End to end: "
        f"{UPLOADS} test images uploaded in turn as 28x28 PNGs, the three servers started "
        f"together and loaded in turn, {results['seconds']} s per server and level.",
        "",
        "| model | test accuracy | "
        + " | ".join(f"model CPU ms per image, batch {b}" for b in BATCHES)
        + " |",
        "| --- | ---: | " + " | ".join("---:" for _ in BATCHES) + " |",
    ]
    for name in NAMES:
        cost = results["model_cpu_ms_per_image"][name]
        lines.append(
            f"| {name} | {results['accuracy'][name]:.4f} | "
            + " | ".join(f"{cost[str(b)]:.3f}" for b in BATCHES)
            + " |"
        )
    lines += [
        "",
        "| round | model | concurrency | requests/s | p50 ms | p99 ms | non-2xx |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in results["end_to_end"]:
        lines.append(
            f"| {r['round']} | {r['model']} | {r['concurrency']} | {r['rps']:.0f} | "
            f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['non_2xx'] + r['socket_errors']} |"
        )
    return "\n".join(lines + ["", decision(results)]) + "\n"


def decision(results: dict) -> str:
    """What the measurements say for each way of averaging, beside the shipped one."""
    accuracy, cost = results["accuracy"], results["model_cpu_ms_per_image"]
    low, high = results["ramp"]

    def level(name: str, concurrency: int, key: str) -> list[float]:
        return [
            r[key]
            for r in results["end_to_end"]
            if (r["model"], r["concurrency"]) == (name, concurrency)
        ]

    def change(name: str) -> str:
        ours, theirs = level(name, 32, "rps"), level("every_image", 32, "rps")
        return ", ".join(f"{a / b - 1:+.0%}" for a, b in zip(ours, theirs, strict=True))

    def saved(batch: int) -> str:
        return f"{1 - cost['where_unsure'][str(batch)] / cost['every_image'][str(batch)]:.0%}"

    def medians(name: str) -> str:
        return ", ".join(f"{p50:.2f}" for p50 in level(name, 1, "p50_ms"))

    lines = [
        f"The shipped model averages every image. Averaging only where the network is unsure "
        f"({low:g} to {high:g}) keeps the test accuracy ({accuracy['where_unsure']:.4f} "
        f"against {accuracy['every_image']:.4f}) and cuts the model's CPU per test image by "
        f"{saved(8)} at batch 8 and {saved(64)} at batch 64, what requests of many images "
        f"spend; but single-image uploads at concurrency 32 change by {change('where_unsure')} "
        "(round by round: the model is a small part of such a request's CPU), and at "
        f"concurrency 1 the median goes from {medians('every_image')} to "
        f"{medians('where_unsure')} ms: a lone image takes the second pass either way, on "
        "itself or on a padding image (LiteRT's XNNPACK kernels fail on a pass over no "
        "images), and the choosing costs more. `python -m training --from-version ... "
        "--mirror-ramp` exports a version with it, for traffic of many images per request.",
    ]
    if accuracy["bare"] >= MIN_ACCURACY:
        lines.append(f"Without averaging the model stays at {MIN_ACCURACY} or more: it may go.")
    else:
        lines.append(
            f"Without averaging, requests/s at concurrency 32 change by {change('bare')}, but "
            f"the test accuracy falls to {accuracy['bare']:.4f}, below the project's floor of "
            f"{MIN_ACCURACY}."
        )
    return "\n\n".join(lines)


def main() -> None:
    """Export the three variants, measure them, write the reports."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data-dir", type=Path, required=True, help="the four IDX .gz files")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "fashion_mnist")
    parser.add_argument("--seconds", type=int, default=10, help="seconds per server and level")
    parser.add_argument("--output", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    import tensorflow as tf

    from service.inference.model import list_versions
    from training.data import load_split
    from training.export import load_network
    from training.models import MIRROR_RAMP

    shipped = args.model_dir / str(list_versions(args.model_dir)[-1])
    test = load_split(
        args.data_dir / "t10k-images-idx3-ubyte.gz", args.data_dir / "t10k-labels-idx1-ubyte.gz"
    )
    scratch = Path(tempfile.mkdtemp(prefix="mirror-"))
    try:
        progress("exporting the shipped network three ways")
        network = load_network(shipped)
        ramps = dict(zip(NAMES, (None, MIRROR_RAMP, "bare"), strict=True))
        model_dirs = {
            name: export_variant(network, r, shipped, scratch / name) for name, r in ramps.items()
        }
        check = test.images[:256]
        expected = tf.saved_model.load(str(shipped)).signatures["serving_default"]
        ours = tf.saved_model.load(str(model_dirs["every_image"] / "1")).signatures[
            "serving_default"
        ]
        difference = float(
            np.abs(
                expected(images=tf.constant(check))["probabilities"].numpy()
                - ours(images=tf.constant(check))["probabilities"].numpy()
            ).max()
        )
        if difference > CHECK_TOLERANCE:
            sys.exit(f"the export does not reproduce the shipped answers ({difference})")
        pixels = test.images[..., np.newaxis].astype(np.float32)
        top = network.predict(pixels, batch_size=1000, verbose=0).max(axis=1)
        progress("test accuracy of the three")
        results = {
            "seconds": args.seconds,
            "ramp": list(MIRROR_RAMP),
            "check_max_difference": difference,
            "second_pass_share": float((top < MIRROR_RAMP[1]).mean()),
            "accuracy": {
                name: test_accuracy(path, test.images, test.labels)
                for name, path in model_dirs.items()
            },
            "model_cpu_ms_per_image": {
                name: model_cost(path, test.images) for name, path in model_dirs.items()
            },
        }
        sample = test.images[np.random.default_rng(1).choice(len(test.labels), UPLOADS, False)]
        uploads = upload_files(sample, scratch)
        results["end_to_end"] = end_to_end(model_dirs, uploads, args.seconds)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    (args.output / "mirror-averaging.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.output / "mirror-averaging.md").write_text(markdown(results))
    progress(f"wrote {args.output / 'mirror-averaging.md'}")


if __name__ == "__main__":
    main()
