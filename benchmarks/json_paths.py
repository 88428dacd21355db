"""The JSON request paths: /v2 infer with an FP32 tensor and /predict with pixel arrays.

Four fixed bodies, each POSTed by wrk at concurrency 1 and 8: a v2 inference request with one
FP32 tensor [N, 28, 28] (flat `data`, as tritonclient sends it) and a /predict request with N
28x28 pixel arrays in `instances`, N = 1 and 64. With `--baseline REF` the same measurement
runs against REF too: checked out with `git worktree add` into a temporary folder and served
from there with this venv and these settings, the two servers alternating round by round.

Run with `make bench-json` (`BENCH_BASELINE=REF` to compare; `make bench` runs it after
benchmarks/load.py); it writes docs/json-paths.json and docs/json-paths.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from benchmarks.wrk import wrk
from harness import ROOT
from harness.server import LiveServer, scratch_server

CONCURRENCY = (1, 8)
BATCHES = (1, 64)  # 64: FMNIST_MAX_BATCH and FMNIST_BATCH_MAX_SIZE by default
ROUNDS = 2
WARMUP_SECONDS = 1
JSON = "application/json"
MODEL = "fashion_mnist"


def progress(message: str) -> None:
    """Print one progress line on stderr (stdout stays free for a caller's output)."""
    print(f"[json-paths {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def pixels(count: int) -> np.ndarray:
    """A fixed uint8 batch [count, 28, 28]: every value 0 to 255, so numbers of 1 to 3 digits."""
    return np.random.default_rng(0).integers(0, 256, (count, 28, 28), dtype=np.uint8)


def request_bodies() -> dict[str, tuple[str, bytes]]:
    """Each request kind: its path and its JSON body."""
    kinds = {}
    for count in BATCHES:
        images = pixels(count)
        tensor = {
            "name": "images",
            "shape": [count, 28, 28],
            "datatype": "FP32",
            "data": images.astype(np.float32).ravel().tolist(),
        }
        kinds[f"v2_fp32_batch_{count}"] = (
            f"/v2/models/{MODEL}/infer",
            json.dumps({"inputs": [tensor]}).encode(),
        )
        kinds[f"predict_pixels_batch_{count}"] = (
            "/predict",
            json.dumps({"instances": images.tolist()}).encode(),
        )
    return kinds


def check_answers(base_url: str, kinds: dict[str, tuple[str, bytes]]) -> None:
    """Fail before measuring if a body is not answered 200: refusals would be timed instead."""
    for kind, (path, body) in kinds.items():
        request = urllib.request.Request(base_url + path, body, {"Content-Type": JSON})
        with urllib.request.urlopen(request, timeout=30) as response:
            if response.status != 200:
                raise RuntimeError(f"{kind}: {response.status}")


def measure(
    server: LiveServer, files: dict[str, tuple[str, Path]], seconds: int, name: str
) -> dict:
    """Every kind at every concurrency level against one started server."""
    base_url = server.url
    results: dict = {}
    for kind, (path, body_file) in files.items():
        wrk(base_url + path, body_file, 8, WARMUP_SECONDS, JSON)
        results[kind] = {}
        for concurrency in CONCURRENCY:
            result = wrk(base_url + path, body_file, concurrency, seconds, JSON)
            results[kind][str(concurrency)] = result
            progress(
                f"{name}: {kind} c={concurrency} {result['rps']:.0f} req/s, "
                f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms"
            )
    return results


@contextlib.contextmanager
def checkout(ref: str) -> Iterator[Path]:
    """Check `ref` out into a temporary git worktree; remove the worktree afterwards."""
    folder = Path(tempfile.mkdtemp(prefix="json-paths-baseline-")) / "tree"
    git = ["git", "-C", str(ROOT)]
    subprocess.run([*git, "worktree", "add", "--detach", "--quiet", str(folder), ref], check=True)
    try:
        yield folder
    finally:
        subprocess.run([*git, "worktree", "remove", "--force", str(folder)], check=True)
        shutil.rmtree(folder.parent, ignore_errors=True)


def commit_id(ref: str) -> str:
    """The short commit id of `ref` in this repository."""
    command = ["git", "-C", str(ROOT), "rev-parse", "--short", ref]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def current_commit() -> str:
    """This checkout's commit, marked when its tracked files outside docs/ have uncommitted
    changes (`make bench` has just rewritten docs/benchmarks.md)."""
    command = [
        *("git", "-C", str(ROOT), "status", "--porcelain", "--untracked-files=no"),
        *("--", ".", ":(exclude)docs"),
    ]
    dirty = subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()
    return commit_id("HEAD") + (" with uncommitted changes" if dirty else "")


def run(
    seconds: int, model_dir: Path, settings: dict[str, str], baseline: str | None = None
) -> dict:
    """Measure the current checkout (and `baseline`), alternating them round by round."""
    body_dir = Path(tempfile.mkdtemp(prefix="json-paths-bodies-"))
    kinds, files = request_bodies(), {}
    for kind, (path, body) in kinds.items():
        (body_dir / f"{kind}.json").write_bytes(body)
        files[kind] = (path, body_dir / f"{kind}.json")
    env = {"FMNIST_MODEL_DIR": str(model_dir), **settings}
    results: dict = {
        "seconds_per_level": seconds,
        "settings": settings,
        "body_bytes": {kind: path.stat().st_size for kind, (_, path) in files.items()},
        "current": current_commit(),
        "baseline": commit_id(baseline) if baseline else None,
        "rounds": [],
    }
    with contextlib.ExitStack() as stack:
        roots = {"current": ROOT}
        if baseline:
            progress(f"checking out {baseline}")
            roots["baseline"] = stack.enter_context(checkout(baseline))
        for round_ in range(1, ROUNDS + 1):
            # Alternate which starts first, so neither always runs on a cooler machine.
            order = list(roots) if round_ % 2 else list(reversed(roots))
            measured = {}
            for name in order:
                progress(f"round {round_}, {name}: starting gunicorn")
                server = scratch_server(env, root=roots[name]).start()
                try:
                    check_answers(server.url, kinds)
                    measured[name] = measure(server, files, seconds, f"round {round_}, {name}")
                finally:
                    server.stop()
            results["rounds"].append(measured)
    shutil.rmtree(body_dir, ignore_errors=True)
    return results


def markdown(results: dict) -> str:
    """Render docs/json-paths.md: every level of every round, then the rounds' means."""
    servers = ["current"] + (["baseline"] if results["baseline"] else [])
    lines = [
        "# JSON request paths",
        "",
        f"Measured by `make bench-json` (`benchmarks/json_paths.py`): wrk POSTing one fixed "
        f"JSON body per kind, {results['seconds_per_level']} s per level, load generator on the "
        "same machine, the service's defaults otherwise "
        f"(settings: `{json.dumps(results['settings'])}`). `v2_fp32_batch_N`: "
        "`/v2/models/fashion_mnist/infer`, one FP32 tensor [N, 28, 28], flat `data`; "
        "`predict_pixels_batch_N`: `/predict` with N 28x28 arrays of integers 0 to 255 in "
        f"`instances`. Current: {results['current']}"
        + (f"; baseline: {results['baseline']}." if results["baseline"] else "."),
        "",
        "Body sizes: "
        + ", ".join(f"{kind} {size:,} bytes" for kind, size in results["body_bytes"].items())
        + ".",
        "",
        "| round | server | request | concurrency | requests/s | p50 ms | p99 ms | non-2xx "
        "| socket errors |",
        "| ---: | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for round_, measured in enumerate(results["rounds"], 1):
        for name, kinds in measured.items():
            for kind, levels in kinds.items():
                for level, r in levels.items():
                    lines.append(
                        f"| {round_} | {name} | {kind} | {level} | {r['rps']:.0f} | "
                        f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['non_2xx']} | "
                        f"{r['socket_errors']} |"
                    )
    return "\n".join(lines + summary(results, servers)) + "\n"


def summary(results: dict, servers: list[str]) -> list[str]:
    """The mean of the rounds per kind and level, and the current over the baseline."""
    compare = "baseline" in servers
    lines = [
        "",
        "Mean of the rounds" + (", current against baseline:" if compare else ":"),
        "",
        "| request | concurrency | "
        + " | ".join(f"{name} requests/s | {name} p50 ms | {name} p99 ms" for name in servers)
        + (" | requests/s ratio |" if compare else " |"),
        "| --- | ---: |" + " ---: | ---: | ---: |" * len(servers) + (" ---: |" if compare else ""),
    ]
    first = results["rounds"][0]["current"]
    for kind, levels in first.items():
        for level in levels:
            means = {
                name: {
                    key: float(np.mean([m[name][kind][level][key] for m in results["rounds"]]))
                    for key in ("rps", "p50_ms", "p99_ms")
                }
                for name in servers
            }
            cells = " | ".join(
                f"{m['rps']:.0f} | {m['p50_ms']:.2f} | {m['p99_ms']:.2f}" for m in means.values()
            )
            ratio = (
                f" | {means['current']['rps'] / means['baseline']['rps']:.2f}x" if compare else ""
            )
            lines.append(f"| {kind} | {level} | {cells}{ratio} |")
    return lines


def write(results: dict, output: Path) -> Path:
    """Write the JSON and Markdown reports into `output`; return the Markdown's path."""
    output.mkdir(exist_ok=True)
    (output / "json-paths.json").write_text(json.dumps(results, indent=2) + "\n")
    (output / "json-paths.md").write_text(markdown(results))
    return output / "json-paths.md"


def main() -> None:
    """Parse options, measure, write the reports."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=5, help="seconds per load level")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "fashion_mnist")
    parser.add_argument("--output", type=Path, default=ROOT / "docs")
    parser.add_argument("--baseline", metavar="REF", help="also measure this git commit")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    settings = {key: value for key, value in os.environ.items() if key.startswith("FMNIST_")}
    results = run(args.seconds, args.model_dir, settings, args.baseline or None)
    progress(f"wrote {write(results, args.output)}")


if __name__ == "__main__":
    main()
