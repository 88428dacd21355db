"""A bounded soak: mixed good and hostile traffic against a server started by bin/serve.

It passes when no request got a 5xx or lost its connection, every answer had the expected
status, the workers were never replaced, their resident memory grew less than 10% after
warm-up, and the Prometheus multiprocess directory stayed bounded. Results go to
docs/soak.md and docs/soak.json.

    python -m benchmarks.soak --seconds 300 --model-dir models/fashion_mnist   # from the root
"""

from __future__ import annotations

import argparse
import base64
import json
import random
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import requests

from harness import ROOT, hostile
from harness.images import catalogue_photo, encode, garment
from harness.procfs import rss_bytes
from harness.server import LiveServer

MAX_RSS_GROWTH = 0.10
MAX_METRICS_DIR_GROWTH = 0.10
WARMUP_FRACTION = 0.2
PHASES = 4


@dataclass(frozen=True)
class Shot:
    """One kind of request, its weight in the mix, and the status it must get."""

    name: str
    kwargs: dict
    status: int
    weight: int = 1


def traffic() -> list[Shot]:
    """The mix: mostly good requests, and a hostile or malformed one in every four or so."""
    photo = catalogue_photo(garment(5), scale=6, pad=(40, 12))
    png, jpeg = encode(garment()), encode(photo, "JPEG", quality=90)
    pixels = garment(1).tolist()
    return [
        Shot("png", {"data": png, "headers": {"Content-Type": "image/png"}}, 200, 6),
        Shot("jpeg_photo", {"data": jpeg, "headers": {"Content-Type": "image/jpeg"}}, 200, 4),
        Shot("multipart_batch_8", {"files": [("image", ("a.png", png))] * 8}, 200, 2),
        Shot("json_pixels", {"json": {"instances": [pixels]}}, 200, 2),
        Shot("json_b64", {"json": {"instances": [{"b64": base64.b64encode(png).decode()}]}}, 200),
        Shot("not_an_image", {"data": b"hello", "headers": {"Content-Type": "image/png"}}, 415),
        Shot("truncated_png", {"data": png[:60], "headers": {"Content-Type": "image/png"}}, 400),
        Shot(
            "png_bomb",
            {
                "data": hostile.png_declaring(100_000, 100_000),
                "headers": {"Content-Type": "image/png"},
            },
            413,
        ),
        Shot(
            "animated_gif",
            {"data": hostile.animated("GIF"), "headers": {"Content-Type": "image/gif"}},
            422,
        ),
        Shot("psd", {"data": hostile.psd(), "headers": {"Content-Type": "image/png"}}, 415),
        Shot(
            "malformed_json",
            {"data": b'{"instances": [', "headers": {"Content-Type": "application/json"}},
            400,
        ),
        Shot(
            "deep_json",
            {
                "data": b"[" * 50_000 + b"]" * 50_000,
                "headers": {"Content-Type": "application/json"},
            },
            400,
        ),
        Shot(
            "nan_pixels",
            {"data": b'{"instances": [[[NaN]]]}', "headers": {"Content-Type": "application/json"}},
            400,
        ),
        Shot("batch_over_limit", {"json": {"instances": [pixels] * 65}}, 413),
        Shot("many_parts", {"files": [("note", (None, "x"))] * 2000}, 413),
        Shot("wrong_type", {"data": png, "headers": {"Content-Type": "text/plain"}}, 415),
        Shot(
            "bad_top_k",
            {"data": png, "params": {"top_k": "99"}, "headers": {"Content-Type": "image/png"}},
            400,
        ),
        Shot("healthz", {"method": "GET", "path": "/healthz"}, 200),
    ]


@dataclass
class Tally:
    """What the load threads saw, shared and locked."""

    statuses: Counter = field(default_factory=Counter)
    unexpected: Counter = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, shot: Shot, outcome: str, seconds: float) -> None:
        """Count one answer (a status, or the name of a connection error)."""
        with self.lock:
            self.statuses[outcome] += 1
            self.latencies.append(seconds)
            if outcome != str(shot.status):
                self.unexpected[f"{shot.name}:{outcome}"] += 1


def dir_bytes(folder: Path) -> int:
    """Total size of the files in a folder."""
    return sum(path.stat().st_size for path in folder.iterdir() if path.is_file())


def load(url: str, shots: list[Shot], tally: Tally, stop: threading.Event, seed: int) -> None:
    """Send weighted-random requests until told to stop."""
    rng = random.Random(seed)
    weights = [shot.weight for shot in shots]
    with requests.Session() as session:
        while not stop.is_set():
            shot = rng.choices(shots, weights)[0]
            kwargs = dict(shot.kwargs)
            method, path = kwargs.pop("method", "POST"), kwargs.pop("path", "/predict")
            started = time.perf_counter()
            try:
                response = session.request(method, url + path, timeout=60, **kwargs)
                outcome = str(response.status_code)
            except requests.RequestException as error:
                outcome = type(error).__name__
            tally.record(shot, outcome, time.perf_counter() - started)


def snapshot(server: LiveServer, tally: Tally, started: float) -> dict:
    """Worker pids and memory, metrics directory size, and request counts now."""
    pids = server.worker_pids()
    with tally.lock:
        statuses = dict(tally.statuses)
    return {
        "seconds": round(time.monotonic() - started, 1),
        "workers": {str(pid): rss_bytes(pid) for pid in pids},
        "metrics_dir_bytes": dir_bytes(server.metrics_dir),
        "requests": sum(statuses.values()),
        "statuses": statuses,
    }


def soak(args: argparse.Namespace) -> dict:
    """Run the soak; return every measurement."""
    shots = traffic()
    tally, stop = Tally(), threading.Event()
    with tempfile.TemporaryDirectory(prefix="fmnist-soak-") as scratch:
        log = Path(scratch) / "gunicorn.log"
        server = LiveServer(args.model_dir, log, FMNIST_WORKERS=str(args.workers))
        server.start(timeout=180)
        url = server.url
        try:
            started = time.monotonic()
            threads = [
                threading.Thread(target=load, args=(url, shots, tally, stop, seed), daemon=True)
                for seed in range(args.concurrency)
            ]
            for thread in threads:
                thread.start()
            phases = phase_snapshots(args.seconds, server, tally, started)
            stop.set()
            for thread in threads:
                thread.join(90)
            tracebacks = len(server.tracebacks())  # the whole log, from start to here
        finally:
            server.stop()
    return summarise(args, tally, phases, tracebacks)


def phase_snapshots(seconds: float, server: LiveServer, tally: Tally, started: float) -> list[dict]:
    """Sleep through warm-up and the measured phases, taking a snapshot after each."""
    warmup = seconds * WARMUP_FRACTION
    ends = [warmup] + [warmup + (seconds - warmup) * (i + 1) / PHASES for i in range(PHASES)]
    phases = []
    for index, end in enumerate(ends):
        time.sleep(max(0.0, started + end - time.monotonic()))
        phases.append(
            {
                "phase": "warm-up" if index == 0 else f"phase {index}",
                **snapshot(server, tally, started),
            }
        )
        print(progress_line(phases), flush=True)
    return phases


def progress_line(phases: list[dict]) -> str:
    """One line per phase: time, requests and rate, statuses, worker memory, metrics size."""
    now = phases[-1]
    before = phases[-2] if len(phases) > 1 else {"seconds": 0, "requests": 0}
    rate = (now["requests"] - before["requests"]) / max(now["seconds"] - before["seconds"], 1e-9)
    rss = ", ".join(f"{pid}: {size / 2**20:.1f} MiB" for pid, size in now["workers"].items())
    return (
        f"[{now['phase']:>8}] t={now['seconds']:6.1f}s  requests={now['requests']:6d} "
        f"({rate:5.1f}/s)  statuses={now['statuses']}  rss={{{rss}}}  "
        f"metrics_dir={now['metrics_dir_bytes']} B"
    )


def summarise(args: argparse.Namespace, tally: Tally, phases: list[dict], tracebacks: int) -> dict:
    """Compare the last phase with warm-up and decide pass or fail."""
    first, last = phases[0], phases[-1]
    same_workers = set(first["workers"]) == set(last["workers"])
    growth = {
        pid: (last["workers"][pid] - rss) / rss
        for pid, rss in first["workers"].items()
        if pid in last["workers"]
    }
    metrics_growth = (last["metrics_dir_bytes"] - first["metrics_dir_bytes"]) / max(
        first["metrics_dir_bytes"], 1
    )
    server_errors = sum(n for s, n in tally.statuses.items() if not s.isdigit() or int(s) >= 500)
    latencies = np.array(tally.latencies)
    checks = {
        "no 5xx or lost connection": server_errors == 0,
        "every status as expected": not tally.unexpected,
        "workers never replaced": same_workers,
        f"worker RSS growth under {MAX_RSS_GROWTH:.0%}": same_workers
        and max(growth.values()) < MAX_RSS_GROWTH,
        f"metrics dir growth under {MAX_METRICS_DIR_GROWTH:.0%}": metrics_growth
        < MAX_METRICS_DIR_GROWTH,
        "no traceback in the server log": tracebacks == 0,
    }
    return {
        "seconds": args.seconds,
        "note": args.note,
        "concurrency": args.concurrency,
        "workers": args.workers,
        "model_dir": str(args.model_dir),
        "requests": int(latencies.size),
        "requests_per_second": round(latencies.size / args.seconds, 1),
        "latency_ms": {
            q: round(float(np.percentile(latencies, p)) * 1000, 1)
            for q, p in (("p50", 50), ("p95", 95), ("p99", 99), ("max", 100))
        },
        "statuses": dict(tally.statuses),
        "unexpected": dict(tally.unexpected),
        "rss_growth": {pid: round(g, 4) for pid, g in growth.items()},
        "metrics_dir_growth": round(metrics_growth, 4),
        "phases": phases,
        "checks": checks,
        "passed": all(checks.values()),
    }


def markdown(result: dict, command: str) -> str:
    """Render the results as docs/soak.md."""
    mib = 2**20
    rows = "\n".join(
        f"| {p['phase']} | {p['seconds']:.0f} | {p['requests']} | "
        + ", ".join(f"{size / mib:.1f}" for size in p["workers"].values())
        + f" | {p['metrics_dir_bytes']} |"
        for p in result["phases"]
    )
    checks = "\n".join(
        f"| {name} | {'yes' if ok else '**no**'} |" for name, ok in result["checks"].items()
    )
    statuses = ", ".join(f"{s}: {n}" for s, n in sorted(result["statuses"].items()))
    latency = ", ".join(f"{q} {v} ms" for q, v in result["latency_ms"].items())
    return f"""# Soak test

Written by `benchmarks/soak.py` (`make soak`); numbers below come from its last run:

```
{command}
```

{result["note"]}

{result["seconds"]:g} s of mixed traffic from {result["concurrency"]} client threads on
127.0.0.1 against `bin/serve` with {result["workers"]} workers, model `{result["model_dir"]}`.
About one request in four is hostile or malformed (bombs, corrupt and refused files, bad JSON,
oversized batches, thousands of multipart parts); each must get its documented status.
Memory and the metrics directory are compared between the end of warm-up
({WARMUP_FRACTION:.0%} of the time) and the end.

Result: **{"passed" if result["passed"] else "FAILED"}**. {result["requests"]} requests
({result["requests_per_second"]} per second); statuses: {statuses}; latency {latency}.
Unexpected answers: {result["unexpected"] or "none"}. Worker RSS growth after warm-up:
{", ".join(f"{g:+.2%}" for g in result["rss_growth"].values())}; metrics directory growth:
{result["metrics_dir_growth"]:+.2%}.

| check | passed |
| --- | --- |
{checks}

| phase | t (s) | requests so far | worker RSS (MiB) | metrics dir (bytes) |
| --- | --- | --- | --- | --- |
{rows}
"""


def main() -> None:
    """Parse arguments, run the soak, write docs/soak.md and docs/soak.json."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=300, help="length (default 300)")
    parser.add_argument("--concurrency", type=int, default=4, help="client threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn workers")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "fashion_mnist")
    parser.add_argument("--output", type=Path, default=ROOT / "docs" / "soak.md")
    parser.add_argument("--note", default="", help="a sentence on the run's conditions")
    args = parser.parse_args()
    args.model_dir = args.model_dir.resolve()
    if not any((path / "saved_model.pb").is_file() for path in args.model_dir.glob("[0-9]*")):
        parser.error(f"no model version under {args.model_dir}; train one or pass --model-dir")
    result = soak(args)
    command = "python -m benchmarks.soak " + " ".join(sys.argv[1:])
    args.output.write_text(markdown(result, command.strip()))
    args.output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["checks"], indent=2))
    sys.exit(0 if result["passed"] else 1)


if __name__ == "__main__":
    main()
