"""Measure the durations the service's histograms must cover, from the histograms themselves.

Runs the app in-process (Flask's test client, no HTTP), sends each kind of request a few
times, and reads the mean of every latency histogram from prometheus_client's registry. The
bucket choice in service/observability/metrics.py rests on these numbers. Writes
docs/metric-ranges.md.

    python benchmarks/metric_ranges.py [--model-dir models/fashion_mnist]
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from harness import ROOT

HISTOGRAMS = {
    "request": "fmnist_http_request_duration_seconds",
    "decode, per image": "fmnist_image_decode_duration_seconds",
    "preprocess, per image": "fmnist_preprocess_duration_seconds",
    "inference, per batch": "fmnist_inference_duration_seconds",
}


def photo(width: int, height: int) -> bytes:
    """A JPEG of a dark garment-like shape on a white background, `width` x `height`."""
    image = Image.new("RGB", (width, height), "white")
    box = (width // 4, height // 6, 3 * width // 4, 5 * height // 6)
    ImageDraw.Draw(image).rectangle(box, fill=(60, 40, 30))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def small_png() -> bytes:
    """A 28x28 PNG, light on black, as Fashion-MNIST images are."""
    pixels = np.zeros((28, 28), dtype=np.uint8)
    pixels[4:24, 8:20] = 200
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def scenarios(client) -> dict[str, tuple[Callable[[], object], int]]:
    """Each kind of request, with how many times to repeat it."""
    png, catalogue, large = small_png(), photo(300, 400), photo(3000, 4000)

    def post(body: bytes, content_type: str) -> object:
        return client.post("/predict", data=body, content_type=content_type)

    def post_batch() -> object:
        batch = [(io.BytesIO(png), f"{i}.png") for i in range(64)]  # the client closes files
        return client.post("/predict", data={"image": batch})

    return {
        "GET /healthz": (lambda: client.get("/healthz"), 200),
        "415, unsupported Content-Type": (lambda: post(b"x", "text/plain"), 200),
        "one 28x28 PNG": (lambda: post(png, "image/png"), 100),
        "one 300x400 JPEG photo": (lambda: post(catalogue, "image/jpeg"), 50),
        "one 3000x4000 JPEG photo (12 MP)": (lambda: post(large, "image/jpeg"), 5),
        "a batch of 64 28x28 PNGs": (post_batch, 10),
    }


def means(registry, before: dict[str, tuple[float, float]]) -> dict[str, float | None]:
    """Mean observation of each histogram since `before`, in seconds (None: not observed)."""
    result: dict[str, float | None] = {}
    for label, name in HISTOGRAMS.items():
        total, count = totals(registry, name)
        old_total, old_count = before[label]
        result[label] = (total - old_total) / (count - old_count) if count > old_count else None
    return result


def totals(registry, name: str) -> tuple[float, float]:
    """Sum and count of a histogram over all its label sets."""
    total = count = 0.0
    for family in registry.collect():
        for sample in family.samples:
            if sample.name == name + "_sum":
                total += sample.value
            elif sample.name == name + "_count":
                count += sample.value
    return total, count


def measure(model_dir: Path) -> tuple[list, dict]:
    """Run every scenario; return rows (name, repeats, slowest request, histogram means) and
    the model's metadata."""
    from prometheus_client import REGISTRY

    from service import create_app

    app = create_app({"model_dir": model_dir})
    predictor = app.extensions["versions"]
    if not predictor.wait_ready(120):
        raise SystemExit(f"model did not load: {predictor.error}")
    client = app.test_client()
    buffer = app.extensions["metric_buffer"]  # its queued updates written before each reading
    rows = []
    for name, (send, repeats) in scenarios(client).items():
        send()  # the first call of a kind pays one-off costs
        buffer.flush()
        before = {label: totals(REGISTRY, metric) for label, metric in HISTOGRAMS.items()}
        slowest = 0.0
        for _ in range(repeats):
            started = time.perf_counter()
            send()
            slowest = max(slowest, time.perf_counter() - started)
        buffer.flush()
        rows.append((name, repeats, slowest, means(REGISTRY, before)))
    return rows, predictor.model.metadata


def milliseconds(seconds: float | None) -> str:
    """Format seconds as milliseconds for the table."""
    return "" if seconds is None else f"{seconds * 1000:.2f}"


def report(rows: list, metadata: dict) -> str:
    """The Markdown page: the table, and what it was measured on."""
    header = ["request", "n", *[f"{label} (ms)" for label in HISTOGRAMS], "slowest request (ms)"]
    lines = [
        "# Durations the latency histograms must cover",
        "",
        "Written by `benchmarks/metric_ranges.py`: means of the service's own histograms, the",
        "app run in-process (no HTTP), each kind of request repeated n times after one warm-up.",
        "",
        "| " + " | ".join(header) + " |",
        "|" + " --- |" * len(header),
    ]
    for name, repeats, slowest, values in rows:
        cells = [name, str(repeats), *map(milliseconds, values.values()), milliseconds(slowest)]
        lines.append("| " + " | ".join(cells) + " |")
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    lines += [
        "",
        f"Model: {metadata['hyperparameters']['model']}, {metadata['parameters']} parameters. "
        f"Machine: {platform.machine()}, "
        f"{os.cpu_count()} CPUs, load average {load} when measured, Python "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d')}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    """Parse arguments, measure, write the page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "fashion_mnist")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "metric-ranges.md")
    args = parser.parse_args()
    page = report(*measure(args.model_dir))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(page)
    print(page)


if __name__ == "__main__":
    main()
