"""The phases of `make bench` (benchmarks/load.py): which servers each compares, and how they
are loaded.

The servers of a phase are started one after another, each alone (its cold start), then
loaded in turn: short slices of load move round-robin among them, so that every server of a
comparison meets the same minutes of this machine, whose speed drifts within minutes
(docs/benchmarks.md). A server's slices are added up: its requests over its seconds, its
latency percentiles from the merged latencies of its slices.
"""

from __future__ import annotations

import os
import platform
import tempfile
import threading
from collections import Counter
from pathlib import Path

from benchmarks import ablation
from benchmarks.model_alone import model_alone, model_info
from benchmarks.wrk import multipart_body, progress, sample_png, wrk
from harness.server import LiveServer, scratch_server

CONCURRENCY = (1, 8, 32)
SLICES = 5  # slices of load per server and level, round-robin among a phase's servers
ROUNDS = 2  # the whole comparison twice: separately started servers differ (docs/benchmarks.md)


SERVERS = (  # name, extra environment, app (None: the service, as `make serve` runs it)
    ("floor", {}, "benchmarks.floor_app:create_app()"),
    # A tutorial's layout: a few threads per worker (4, as issue 15 measured it).
    ("tutorial", {"FMNIST_THREADS": "4"}, "benchmarks.tutorial_app:create_app()"),
    ("service", {}, None),
    ("service_batching_off", {"FMNIST_BATCHING": "false"}, None),
    ("service_litert_float", {"FMNIST_RUNTIME": "litert"}, None),
    ("service_savedmodel", {"FMNIST_RUNTIME": "savedmodel"}, None),
)

# The service without one part, then without all four (benchmarks/ablation.py), at c=32.
WITHOUT = (("model",), ("decoding",), ("metrics",), ("access_log",), tuple(ablation.PARTS))
# ... and on one listening socket that every worker accepts from, as gunicorn's default is.
SHARED_SOCKET = "service_shared_socket"

SWEEP = [  # (workers, threads per worker, model threads per worker), the defaults otherwise
    {"FMNIST_WORKERS": w, "FMNIST_THREADS": t, "FMNIST_TF_THREADS": tf}
    for w, t, tf in (
        ("1", "16", "2"),
        ("2", "4", "1"),
        ("2", "8", "1"),
        ("2", "16", "1"),
        ("2", "32", "1"),
        ("2", "16", "2"),
        ("3", "16", "1"),
    )
]
SWEEP_ROUNDS = 2  # each choice is started twice: runs of one setting differ, as rounds do


def sweep_name(choice: dict[str, str]) -> str:
    """A sweep choice's name: workers x threads, model threads."""
    return (
        f"{choice['FMNIST_WORKERS']}x{choice['FMNIST_THREADS']}, "
        f"{choice['FMNIST_TF_THREADS']} model threads"
    )


def sweep(seconds: int, model_dir: Path, body_file: Path) -> list[dict]:
    """Measure worker, thread and model-thread choices at concurrency 32, interleaved."""
    rows = []
    for round_ in range(1, SWEEP_ROUNDS + 1):
        env = {"FMNIST_MODEL_DIR": str(model_dir), "FMNIST_BATCHING": "true"}
        servers = start({sweep_name(c): ({**env, **c}, None) for c in SWEEP}, body_file)
        try:
            measured = interleaved(servers, body_file, 32, seconds, f"sweep round {round_}")
        finally:
            stop(servers)
        rows += [{**c, "round": round_, **measured[sweep_name(c)]} for c in SWEEP]
    return rows


def without_parts(env: dict[str, str], body_file: Path, seconds: int, round_: int) -> dict:
    """The service at concurrency 32 beside the floor and itself without each part in turn,
    without all of them, and on one shared listening socket."""
    servers = {"floor": (env, "benchmarks.floor_app:create_app()"), "service": (env, None)}
    for parts in WITHOUT:
        servers["+".join(parts)] = ({**env, **ablation.environment(parts)}, ablation.APP)
    servers[SHARED_SOCKET] = ({**env, "FMNIST_REUSE_PORT": "false"}, None)
    started = start(servers, body_file)
    try:
        return interleaved(started, body_file, 32, seconds, f"round {round_}, without parts")
    finally:
        stop(started)


def run(seconds: int, model_dir: Path, settings: dict[str, str], with_sweep: bool) -> dict:
    """Every phase, side by side in one run."""
    body_file = Path(tempfile.mkdtemp(prefix="bench-body-")) / "body.bin"
    body_file.write_bytes(multipart_body(sample_png()))
    env = {"FMNIST_MODEL_DIR": str(model_dir), **settings}
    results: dict = {
        "machine": {
            "cores": os.cpu_count(),
            "processor": platform.processor() or platform.machine(),
            "python": platform.python_version(),
        },
        "settings": settings,
        "seconds_per_level": seconds,
        "slices": SLICES,
        "model": model_info(model_dir),
        "rounds": [],
    }
    for round_ in range(1, ROUNDS + 1):
        servers = start({name: ({**env, **extra}, app) for name, extra, app in SERVERS}, body_file)
        try:
            measured: dict = {
                name: {
                    "cold_start_s": round(server.cold_start, 2),
                    "worker_rss_mib": server.worker_rss_mib(),
                    "levels": {},
                }
                for name, server in servers.items()
            }
            for concurrency in CONCURRENCY:
                label = f"round {round_}"
                levels = interleaved(servers, body_file, concurrency, seconds, label)
                for name, result in levels.items():
                    measured[name]["levels"][str(concurrency)] = result
            for name, server in servers.items():
                measured[name]["worker_rss_after_mib"] = server.worker_rss_mib()
        finally:
            stop(servers)
        measured["without"] = without_parts(env, body_file, seconds, round_)
        results["rounds"].append(measured)
    progress("model alone: loading")
    results["model_alone"] = model_alone(model_dir)
    if with_sweep:
        results["sweep"] = sweep(seconds, model_dir, body_file)
    return results


def start(
    servers: dict[str, tuple[dict[str, str], str | None]], body_file: Path | list[Path]
) -> dict[str, LiveServer]:
    """Start each server alone, one after another (its cold start unshared), and warm it up
    with the body file (or files)."""
    started: dict[str, LiveServer] = {}
    try:
        for name, (env, app) in servers.items():
            progress(f"starting {name}")
            started[name] = scratch_server(env, app).start()
        for server in started.values():
            wrk(server.url + "/predict", body_file, 8, 2)
    except BaseException:
        stop(started)
        raise
    return started


def stop(servers: dict[str, LiveServer]) -> None:
    """Stop every server of a phase."""
    for server in servers.values():
        server.stop()


def interleaved(
    servers: dict[str, LiveServer],
    body_file: Path | list[Path],
    concurrency: int,
    seconds: int,
    label: str,
) -> dict[str, dict]:
    """Load each server for `seconds` in SLICES slices, the slices round-robin among the
    servers; each server's slices added up. At concurrency 32, each slice also counts the
    connections every worker holds halfway through it."""
    slices: dict[str, list[dict]] = {name: [] for name in servers}
    for index in range(SLICES):
        for name, server in servers.items():
            held: list[list[int]] = []
            watch = None
            if concurrency == max(CONCURRENCY):
                watch = connection_count(server, seconds / SLICES / 2, held)
                watch.start()
            url = server.url + "/predict"
            result = wrk(url, body_file, concurrency, seconds / SLICES, histogram=True)
            if watch is not None:
                watch.join()
            result["connections_per_worker"] = held[0] if held else None
            slices[name].append(result)
        progress(
            f"{label}, concurrency {concurrency}, slice {index + 1} of {SLICES}: "
            + ", ".join(f"{name} {parts[-1]['rps']:.0f}" for name, parts in slices.items())
            + " req/s"
        )
    return {name: combine(parts) for name, parts in slices.items()}


def connection_count(server: LiveServer, delay: float, into: list[list[int]]) -> threading.Timer:
    """A timer that, once started, adds the server's connections per worker to `into` after
    `delay` seconds."""
    return threading.Timer(delay, lambda: into.append(server.connections_per_worker()))


def combine(parts: list[dict]) -> dict:
    """One server's slices as one run: requests over seconds, percentiles of all latencies."""
    requests = sum(part["requests"] for part in parts)
    seconds = sum(part["seconds"] for part in parts)
    latencies: Counter[int] = Counter()
    for part in parts:
        for microseconds, count in part["latency_us"]:
            latencies[microseconds] += count
    busy = sum(part["busy_cpu_s"] for part in parts)
    combined = {
        "requests": requests,
        "seconds": round(seconds, 3),
        "rps": round(requests / seconds, 1),
        **{f"p{p}_ms": percentile(latencies, p) for p in (50, 95, 99)},
        "non_2xx": sum(part["non_2xx"] for part in parts),
        "socket_errors": sum(part["socket_errors"] for part in parts),
        "cpu_ms_per_request": round(busy / max(requests, 1) * 1000, 3),
        "slices_rps": [part["rps"] for part in parts],
    }
    held = [part["connections_per_worker"] for part in parts if part["connections_per_worker"]]
    if held:
        combined["connections_per_worker"] = held
    return combined


def percentile(latencies: Counter[int], p: float) -> float:
    """The p-th percentile, in milliseconds, of latencies counted by microsecond value (as
    wrk's own: the least value with at least p percent of the samples at or below it)."""
    target = sum(latencies.values()) * p / 100
    seen = 0
    for microseconds in sorted(latencies):
        seen += latencies[microseconds]
        if seen >= target:
            return microseconds / 1000
    return 0.0
