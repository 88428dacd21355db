"""Load benchmark for POST /predict: the service (its defaults, then without batching, then
with LiteRT's float weights, then with the SavedModel runtime) beside a tutorial-style app
and the HTTP floor (an app that only reads the upload), and the service without each of its
parts (benchmarks/ablation.py) or without its per-worker sockets, two rounds of the whole
comparison; then the model alone in-process, and (--sweep) worker and thread counts.

The servers of a phase are started one after another, each alone (its cold start), then
loaded in turn: short slices of load move round-robin among them, so that every server of a
comparison meets the same minutes of this machine, whose speed drifts by a third within
minutes. A server's slices are added up: its requests over its seconds, its latency
percentiles from the merged latencies of its slices.

Run with `make bench`; it writes docs/benchmarks.json and docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.ablation import PARTS, environment  # noqa: E402
from tests.procfs import client_sockets  # noqa: E402

CONCURRENCY = (1, 8, 32)
SLICES = 5  # slices of load per server and level, round-robin among a phase's servers
IDLE_TICKS = 3  # clock ticks (1/100 s) the workers may use in half a second and count as idle
MODEL_BATCHES = (1, 8, 32, 64)
ROUNDS = 2  # the whole comparison twice: separately started servers differ by up to 30% here
BOUNDARY = "benchmarkboundary7MA4YWxkTrZu0gW"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def progress(message: str) -> None:
    """Print one progress line."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def free_port() -> int:
    """A free TCP port on localhost."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def sample_png() -> bytes:
    """One Fashion-MNIST-sized PNG upload (a synthetic garment)."""
    import io

    from PIL import Image

    pixels = np.zeros((28, 28), np.uint8)
    pixels[4:24, 8:20] = 180
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, "PNG")
    return buffer.getvalue()


def multipart_body(png: bytes) -> bytes:
    """A multipart/form-data body with one file in the field `image`."""
    head = (
        f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; filename="a.png"\r\n'
        "Content-Type: image/png\r\n\r\n"
    ).encode()
    return head + png + f"\r\n--{BOUNDARY}--\r\n".encode()


class Server:
    """A gunicorn process started the way `make serve` starts it (or with another app)."""

    def __init__(self, env: dict[str, str], app: str | None = None, root: Path = ROOT) -> None:
        self.port = free_port()
        self.metrics_dir = tempfile.mkdtemp(prefix="bench-metrics-")
        # A temporary directory of its own: no LiteRT conversion from an earlier start is
        # found there, so the cold start includes converting the model.
        self.tmp_dir = tempfile.mkdtemp(prefix="bench-tmp-")
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "FMNIST_METRICS_PORT": str(free_port()),
            "FMNIST_METRICS_HOST": "127.0.0.1",
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
            "PYTHON": sys.executable,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            "TMPDIR": self.tmp_dir,
            **env,
        }
        if app is None:
            command = [str(root / "bin" / "serve")]
        else:
            command = [sys.executable, "-m", "gunicorn", "-c", "service/gunicorn.conf.py", app]
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            command,
            cwd=root,  # another checkout (benchmarks/json_paths.py's baseline) or this one
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.cold_start = self._wait_ready()
        self._wait_idle()

    @property
    def url(self) -> str:
        """The /predict URL."""
        return f"http://127.0.0.1:{self.port}/predict"

    def _wait_ready(self, timeout: float = 120) -> float:
        """Poll /readyz until 200; return seconds since the process started."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2):
                    return time.perf_counter() - self.started
            except OSError:
                time.sleep(0.05)
        raise RuntimeError("server did not become ready")

    def _wait_idle(self, timeout: float = 120) -> None:
        """Wait until every worker has finished starting (the processes stop using CPU).

        /readyz answers as soon as one worker is ready; a worker still loading TensorFlow
        accepts no connections, so a load level started then would find one worker only.
        """
        deadline = time.monotonic() + timeout
        ticks = self._children_cpu_ticks()
        while time.monotonic() < deadline:
            time.sleep(0.5)
            now = self._children_cpu_ticks()
            if now - ticks <= IDLE_TICKS:
                return
            ticks = now

    def worker_pids(self) -> list[str]:
        """The process ids of gunicorn's workers (the master's children)."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        return children.read_text().split()

    def _children_cpu_ticks(self) -> int:
        """User and system clock ticks used so far by the worker processes."""
        total = 0
        for pid in self.worker_pids():
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:  # exited meanwhile
                continue
            total += int(fields[11]) + int(fields[12])
        return total

    def connections_per_worker(self) -> list[int]:
        """How many connected TCP sockets each worker holds now, fewest first."""
        return sorted(client_sockets(int(pid)) for pid in self.worker_pids())

    def worker_rss_mib(self) -> list[float]:
        """Resident memory of each worker process, in MiB."""
        sizes = []
        for pid in self.worker_pids():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(round(int(line.split()[1]) / 1024, 1))
        return sizes

    def stop(self) -> None:
        """Stop gunicorn and remove its metrics and temporary directories."""
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(60)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)
        shutil.rmtree(self.tmp_dir, ignore_errors=True)


def wrk(
    url: str,
    body_file: Path | list[Path],
    concurrency: int,
    seconds: float,
    content_type: str = MULTIPART,
    histogram: bool = False,
    headers: tuple[str, ...] = (),
) -> dict:
    """Drive `url` with wrk at a fixed number of connections, posting the body file (or each
    of a list in turn), with any extra `headers` ("Connection: close"); return its JSON
    summary (with `histogram`, every latency recorded and its count too)."""
    files = body_file if isinstance(body_file, list) else [body_file]
    env = {
        **os.environ,
        "BODY_FILE": ":".join(str(path) for path in files),
        "BODY_TYPE": content_type,
    }
    threads = min(concurrency, 2)
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{seconds:g}s",
        "--timeout",
        "10s",
        *(option for header in headers for option in ("-H", header)),
        "-s",
        str(ROOT / "benchmarks" / "wrk_report.lua"),
        url,
    ]
    busy_before = busy_cpu_seconds()
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    busy = busy_cpu_seconds() - busy_before
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    result = json.loads(line.removeprefix("RESULT "))
    if not histogram:
        del result["latency_us"]
    # CPU time of the whole machine (server and wrk) per answered request.
    result["busy_cpu_s"] = round(busy, 3)
    result["cpu_ms_per_request"] = round(busy / max(result["requests"], 1) * 1000, 3)
    return result


def busy_cpu_seconds() -> float:
    """Seconds all cores together have spent busy since boot (/proc/stat: all but idle)."""
    fields = [int(value) for value in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    idle, iowait = fields[3], fields[4]
    return (sum(fields[:8]) - idle - iowait) / os.sysconf("SC_CLK_TCK")


def start(
    servers: dict[str, tuple[dict[str, str], str | None]], body_file: Path | list[Path]
) -> dict[str, Server]:
    """Start each server alone, one after another (its cold start unshared), and warm it up
    with the body file (or files)."""
    started: dict[str, Server] = {}
    try:
        for name, (env, app) in servers.items():
            progress(f"starting {name}")
            started[name] = Server(env, app)
        for server in started.values():
            wrk(server.url, body_file, 8, 2)
    except BaseException:
        stop(started)
        raise
    return started


def stop(servers: dict[str, Server]) -> None:
    """Stop every server of a phase."""
    for server in servers.values():
        server.stop()


def interleaved(
    servers: dict[str, Server],
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
            result = wrk(server.url, body_file, concurrency, seconds / SLICES, histogram=True)
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


def connection_count(server: Server, delay: float, into: list[list[int]]) -> threading.Timer:
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


def model_info(model_dir: Path) -> dict:
    """The served version's number, test accuracy and whether it runs each image twice."""
    from service.inference.model import list_versions

    version = list_versions(model_dir)[-1]
    metadata = json.loads((model_dir / str(version) / "metadata.json").read_text())
    return {
        "version": version,
        "test_accuracy": metadata["metrics"]["accuracy"],
        "mirror_average": metadata["hyperparameters"].get("mirror_average", False),
    }


def model_alone(model_dir: Path, seconds: float = 3.0, runtimes: tuple[str, ...] = ()) -> dict:
    """Images per second of each runtime (all, by default) in-process, one thread, at each
    batch size."""
    from service.inference.model import list_versions, load_version
    from service.inference.runtime import RUNTIMES

    results: dict = {}
    for runtime in runtimes or RUNTIMES:
        model = load_version(model_dir, list_versions(model_dir)[-1], runtime)
        results[runtime] = {}
        for batch in MODEL_BATCHES:
            images = np.random.default_rng(0).integers(0, 256, (batch, 28, 28), dtype=np.uint8)
            for _ in range(5):
                model.predict(images)
            calls, started, cpu_started = 0, time.perf_counter(), time.process_time()
            while time.perf_counter() - started < seconds:
                model.predict(images)
                calls += 1
            elapsed = time.perf_counter() - started
            cpu = time.process_time() - cpu_started  # every thread: TensorFlow's pools included
            results[runtime][str(batch)] = row = {
                "images_per_s": round(calls * batch / elapsed, 1),
                "ms_per_call": round(elapsed / calls * 1000, 3),
                "cpu_ms_per_image": round(cpu / calls / batch * 1000, 3),
            }
            progress(f"model alone, {runtime}: batch {batch}: {row['images_per_s']:.0f} images/s")
    return results


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
WITHOUT = (("model",), ("decoding",), ("metrics",), ("access_log",), tuple(PARTS))
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
SWEEP_ROUNDS = 2  # each choice is started twice: runs of one setting differ by up to 30% here


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
    servers.update({"+".join(parts): ({**env, **environment(parts)}, None) for parts in WITHOUT})
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


def markdown(results: dict) -> str:
    """Render the results as the tables of docs/benchmarks.md."""
    lines = [
        "# Benchmarks",
        "",
        f"Measured by `make bench` (`benchmarks/load.py`) on {results['machine']['cores']} cores "
        f"({results['machine']['processor']}), Python {results['machine']['python']}; "
        f"{results['seconds_per_level']} s per server and level with `wrk`, single-image "
        "multipart uploads of a 28x28 PNG to `POST /predict`, load generator on the same "
        "machine.",
        "",
        "How: in each round the servers of a table are started one after another, each alone "
        "(for its cold start), then loaded in turn, in "
        f"{results['slices']} slices of {results['seconds_per_level'] / results['slices']:g} s "
        "per server and level that go round-robin among them: this machine's speed drifts by "
        "a third within minutes, and a comparison of servers measured minutes apart measured "
        "the drift as much as the servers. Each server's slices are added up: its requests over "
        "its seconds, its percentiles from the merged latencies of all its slices; `slices` "
        "gives the spread of the slices' own requests/s.",
        "",
        f"Settings: `{json.dumps(results['settings'])}`.",
        "",
        describe_model(results["model"]),
        "",
        "Servers, started anew in each round: `floor` reads the upload and answers "
        "(benchmarks/floor_app.py) under the service's gunicorn layout; `tutorial` is a "
        "tutorial-style Flask app calling the SavedModel signature once per request with no "
        "validation, metrics or logging (benchmarks/tutorial_app.py), 2 workers of 4 threads; "
        "`service` is `make serve` with its defaults (the `litert-int8` runtime); "
        "`service_batching_off`, `service_litert_float` and `service_savedmodel` change one "
        "setting (`FMNIST_BATCHING=false`, `FMNIST_RUNTIME=litert`, "
        "`FMNIST_RUNTIME=savedmodel`: the last two answer the SavedModel's own probabilities, "
        "the tutorial app's). CPU ms per request: busy time of both cores (server and "
        "`wrk` together) over answered requests.",
        "",
        "| round | server | concurrency | requests/s | slices req/s | p50 ms | p95 ms | p99 ms "
        "| non-2xx | socket errors | CPU ms per request |",
        "| ---: | --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for round_, measured in enumerate(results["rounds"], 1):
        for name, _, _ in SERVERS:
            for level, r in measured[name]["levels"].items():
                lines.append(
                    f"| {round_} | {name} | {level} | {r['rps']:.0f} | {spread(r)} | "
                    f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['p99_ms']:.2f} | "
                    f"{r['non_2xx']} | {r['socket_errors']} | {r['cpu_ms_per_request']:.2f} |"
                )
    lines += [
        "",
        "Model alone: one thread calling the newest version in-process (one LiteRT or "
        "TensorFlow thread), random images.",
        "",
        "| runtime | batch | images/s | ms per call | CPU ms per image |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for runtime, batches in results["model_alone"].items():
        for batch, r in batches.items():
            lines.append(
                f"| {runtime} | {batch} | {r['images_per_s']:.0f} | {r['ms_per_call']:.3f} | "
                f"{r['cpu_ms_per_image']:.3f} |"
            )
    lines += [
        "",
        "Cold start: process start to /readyz 200, the LiteRT conversion included (each server "
        "starts with an empty temporary directory; a restarted worker reuses the conversion).",
        "",
        "| round | server | cold start s | worker RSS MiB (ready) | worker RSS MiB (after load) |",
        "| ---: | --- | ---: | --- | --- |",
    ]
    for round_, measured in enumerate(results["rounds"], 1):
        for name, _, _ in SERVERS:
            r = measured[name]
            lines.append(
                f"| {round_} | {name} | {r['cold_start_s']} | {r['worker_rss_mib']} | "
                f"{r['worker_rss_after_mib']} |"
            )
    if "sweep" in results:
        lines += sweep_markdown(results["sweep"])
    return "\n".join(lines + against_targets(results) + profile_section())


def spread(result: dict) -> str:
    """The lowest and highest of a result's slices, in requests/s."""
    return f"{min(result['slices_rps']):.0f} to {max(result['slices_rps']):.0f}"


def sweep_markdown(rows: list[dict]) -> list[str]:
    """The table of worker, thread and model-thread choices."""
    lines = [
        "",
        "## Workers and threads (the service's defaults otherwise, concurrency 32)",
        "",
        "The choices of a round were started together and loaded in turn, as above; each "
        "round started them anew. Model threads: `FMNIST_TF_THREADS`, the threads of one "
        "LiteRT call.",
        "",
        "| workers | threads per worker | model threads | round | requests/s | p50 ms | "
        "p99 ms | non-2xx | CPU ms per request |",
        "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    order = {tuple(choice.values()): index for index, choice in enumerate(SWEEP)}
    for r in sorted(
        rows,
        key=lambda r: (
            order[(r["FMNIST_WORKERS"], r["FMNIST_THREADS"], r["FMNIST_TF_THREADS"])],
            r["round"],
        ),
    ):
        lines.append(
            f"| {r['FMNIST_WORKERS']} | {r['FMNIST_THREADS']} | "
            f"{r['FMNIST_TF_THREADS']} | {r['round']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
            f"{r['p99_ms']:.2f} | {r['non_2xx']} | {r['cpu_ms_per_request']:.2f} |"
        )
    return lines


def describe_model(model: dict) -> str:
    """One sentence on the model measured."""
    passes = (
        "its SavedModel runs the network on each image and on its mirror image and averages"
        if model["mirror_average"]
        else "its SavedModel runs the network once per image"
    )
    return (
        f"Model: version {model['version']} of `models/fashion_mnist` (test accuracy "
        f"{model['test_accuracy']:.4f}); {passes}."
    )


def against_targets(results: dict) -> list[str]:
    """Each round beside issue 15's targets: every level, not the best one."""
    lines = [
        "",
        "## Against the targets",
        "",
        "Targets (issue 15): at concurrency 32, at least 2x the tutorial-style app's requests/s "
        "(goal 2.5x) and at least 0.5x the floor's (goal 0.6x); at concurrency 1, a p50 no "
        "higher than the tutorial-style app's (goal: within 1.5 ms of the floor's); p99 at "
        "concurrency 32 at most 2x the floor's; no errors.",
        "",
        "| round | c=32 vs tutorial | c=32 vs floor | c=1 p50 ms: service, tutorial, floor "
        "| c=32 p99 ms: service, 2x floor | service errors | all met |",
        "| ---: | ---: | ---: | --- | --- | ---: | --- |",
    ]
    for round_, measured in enumerate(results["rounds"], 1):
        ours, tutorial, floor = (measured[n]["levels"] for n in ("service", "tutorial", "floor"))
        vs_tutorial = ours["32"]["rps"] / tutorial["32"]["rps"]
        vs_floor = ours["32"]["rps"] / floor["32"]["rps"]
        p50 = [level["1"]["p50_ms"] for level in (ours, tutorial, floor)]
        p99, floor_p99 = ours["32"]["p99_ms"], 2 * floor["32"]["p99_ms"]
        errors = sum(r["non_2xx"] + r["socket_errors"] for r in ours.values())
        met = vs_tutorial >= 2 and vs_floor >= 0.5 and p50[0] <= p50[1] and p99 <= floor_p99
        lines.append(
            f"| {round_} | {vs_tutorial:.2f}x | {vs_floor:.2f}x | "
            f"{p50[0]:.2f}, {p50[1]:.2f}, {p50[2]:.2f} | {p99:.1f}, {floor_p99:.1f} | "
            f"{errors} | {'yes' if met and errors == 0 else 'no'} |"
        )
    return [*lines, "", *cost_split(results)]


def cost_split(results: dict) -> list[str]:
    """Where the CPU of a request goes at concurrency 32, part by part, in each round."""
    names = ["+".join(parts) for parts in WITHOUT]
    lines = [
        "Where a request's CPU goes at concurrency 32: with both cores busy, requests/s is "
        "about 2 cores over the CPU time per request (server and `wrk` together), so 0.5x the "
        "floor's throughput needs at most twice the floor's CPU per request. Each part's cost "
        "is the service's CPU per request less that of the service started without the part "
        "(benchmarks/ablation.py: the model call answering constants, every upload's decoding "
        "and preprocessing done once, metric writes as no-ops, the access log off), all of "
        "them, the floor and the service started together and loaded in turn in each round. "
        "`floor + model` is the least the service could cost with everything but the model "
        "free. A part's cost is only as exact as the machine is steady within a round: a "
        "negative one means the run without it was the slower.",
        "",
        "| round | floor | service | budget: 2x floor | "
        + " | ".join(f"the {name.replace('_', ' ')}" for name in names[:-1])
        + " | without all four | floor + model |",
        "| ---: | " + " | ".join(["---:"] * (len(names) + 4)) + " |",
    ]
    for round_, measured in enumerate(results["rounds"], 1):
        floor = measured["without"]["floor"]["cpu_ms_per_request"]
        ours = measured["without"]["service"]["cpu_ms_per_request"]
        without = {name: measured["without"][name]["cpu_ms_per_request"] for name in names}
        parts = [f"{ours - without[name]:.2f}" for name in names[:-1]]
        lines.append(
            f"| {round_} | {floor:.2f} | {ours:.2f} | {2 * floor:.2f} | {' | '.join(parts)} | "
            f"{without[names[-1]]:.2f} | {floor + ours - without['model']:.2f} |"
        )
    lines += [
        "",
        "The floor, the service and the service without each part, concurrency 32:",
        "",
        "| round | server | requests/s | slices req/s | p50 ms | p99 ms | non-2xx | "
        "CPU ms per request |",
        "| ---: | --- | ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for round_, measured in enumerate(results["rounds"], 1):
        for name in ["floor", "service", *(f"without {name}" for name in names)]:
            r = measured["without"][name.removeprefix("without ")]
            lines.append(
                f"| {round_} | {name} | {r['rps']:.0f} | {spread(r)} | {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {r['non_2xx'] + r['socket_errors']} | "
                f"{r['cpu_ms_per_request']:.2f} |"
            )
    return [*lines, "", *connections_section(results)]


def connections_section(results: dict) -> list[str]:
    """How the service's kept-alive connections spread over its workers, with and without a
    listening socket per worker."""
    lines = [
        "## Connections per worker",
        "",
        "Each of the service's workers listens on a socket of its own (`FMNIST_REUSE_PORT`, "
        "SO_REUSEPORT), and the kernel spreads new connections over them. "
        f"`{SHARED_SOCKET}` is the service with `FMNIST_REUSE_PORT=false`: one socket for all "
        "workers, gunicorn's default, where whichever worker wakes first accepts. Each slice "
        "opens wrk's 32 connections anew and keeps them open; halfway through it, the "
        "connections each worker held were counted (fewest first). A worker's Python runs on "
        "one core at a time (its GIL), so a worker left with few connections leaves a core idle.",
        "",
        "| round | server | requests/s | slices req/s | connections per worker, each slice |",
        "| ---: | --- | ---: | --- | --- |",
    ]
    for round_, measured in enumerate(results["rounds"], 1):
        for name in ("service", SHARED_SOCKET):
            r = measured["without"][name]
            held = "; ".join(
                "/".join(str(n) for n in slice_) for slice_ in r.get("connections_per_worker", [])
            )
            lines.append(f"| {round_} | {name} | {r['rps']:.0f} | {spread(r)} | {held} |")
    return [*lines, ""]


def profile_section() -> list[str]:
    """The Profile section that `make profile` last wrote (docs/profile.json), if any."""
    from benchmarks.gil_profile import markdown as profile_markdown

    recorded = ROOT / "docs" / "profile.json"
    if not recorded.exists():
        return []
    return ["", profile_markdown(json.loads(recorded.read_text()))]


def main() -> None:
    """Parse options, run every phase, write the JSON and Markdown reports."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="seconds per load level")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "fashion_mnist")
    parser.add_argument("--output", type=Path, default=ROOT / "docs")
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also compare worker, thread and TensorFlow-thread counts",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    settings = {key: value for key, value in os.environ.items() if key.startswith("FMNIST_")}
    results = run(args.seconds, args.model_dir, settings, args.sweep)
    write(results, args.output)


def write(results: dict, output: Path) -> None:
    """Write the JSON and Markdown reports (`python -c` can re-render a recorded JSON)."""
    output.mkdir(exist_ok=True)
    (output / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    (output / "benchmarks.md").write_text(markdown(results))
    progress(f"wrote {output / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
