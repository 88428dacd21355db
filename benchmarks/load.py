"""Load benchmark for POST /predict: the service with and without batching, beside the
HTTP floor (an app that only reads the upload) and the model alone in-process.

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
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

CONCURRENCY = (1, 8, 32)
MODEL_BATCHES = (1, 8, 32, 64)
BOUNDARY = "benchmarkboundary7MA4YWxkTrZu0gW"


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

    def __init__(self, env: dict[str, str], app: str | None = None) -> None:
        self.port = free_port()
        self.metrics_dir = tempfile.mkdtemp(prefix="bench-metrics-")
        self.env = {
            **os.environ,
            "PORT": str(self.port),
            "HOST": "127.0.0.1",
            "FMNIST_METRICS_PORT": str(free_port()),
            "FMNIST_METRICS_HOST": "127.0.0.1",
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
            "PYTHON": sys.executable,
            "TF_CPP_MIN_LOG_LEVEL": "2",
            **env,
        }
        if app is None:
            command = [str(ROOT / "bin" / "serve")]
        else:
            command = [sys.executable, "-m", "gunicorn", "-c", "service/gunicorn.conf.py", app]
        self.started = time.perf_counter()
        self.process = subprocess.Popen(
            command,
            cwd=ROOT,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        self.cold_start = self._wait_ready()

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

    def worker_rss_mib(self) -> list[float]:
        """Resident memory of each worker process, in MiB."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        sizes = []
        for pid in children.read_text().split():
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    sizes.append(round(int(line.split()[1]) / 1024, 1))
        return sizes

    def stop(self) -> None:
        """Stop gunicorn and remove its metrics directory."""
        os.killpg(self.process.pid, signal.SIGTERM)
        self.process.wait(60)
        shutil.rmtree(self.metrics_dir, ignore_errors=True)


def wrk(url: str, body_file: Path, concurrency: int, seconds: int) -> dict:
    """Drive `url` with wrk at a fixed number of connections; return its JSON summary."""
    env = {
        **os.environ,
        "BODY_FILE": str(body_file),
        "BODY_TYPE": f"multipart/form-data; boundary={BOUNDARY}",
    }
    threads = min(concurrency, 2)
    command = [
        "wrk",
        f"-t{threads}",
        f"-c{concurrency}",
        f"-d{seconds}s",
        "--timeout",
        "10s",
        "-s",
        str(ROOT / "benchmarks" / "wrk_report.lua"),
        url,
    ]
    output = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    line = next(line for line in output.splitlines() if line.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


def load_levels(server: Server, body_file: Path, seconds: int, name: str) -> dict:
    """Warm up, then measure each concurrency level."""
    wrk(server.url, body_file, 8, 2)
    results = {}
    for concurrency in CONCURRENCY:
        progress(f"{name}: concurrency {concurrency} for {seconds}s")
        results[str(concurrency)] = wrk(server.url, body_file, concurrency, seconds)
        progress(
            f"{name}: c={concurrency} {results[str(concurrency)]['rps']:.0f} req/s, "
            f"p99 {results[str(concurrency)]['p99_ms']:.1f} ms"
        )
    return results


def model_alone(model_dir: Path, seconds: float = 3.0) -> dict:
    """Images per second of the SavedModel signature in-process, at each batch size."""
    from service.model import list_versions, load_version

    model = load_version(model_dir, list_versions(model_dir)[-1])
    results = {}
    for batch in MODEL_BATCHES:
        images = np.random.default_rng(0).integers(0, 256, (batch, 28, 28), dtype=np.uint8)
        for _ in range(5):
            model.predict(images)
        calls, started = 0, time.perf_counter()
        while time.perf_counter() - started < seconds:
            model.predict(images)
            calls += 1
        elapsed = time.perf_counter() - started
        results[str(batch)] = {
            "images_per_s": round(calls * batch / elapsed, 1),
            "ms_per_call": round(elapsed / calls * 1000, 3),
        }
        progress(f"model alone: batch {batch}: {results[str(batch)]['images_per_s']:.0f} images/s")
    return results


SWEEP = [  # (workers, threads per worker, TensorFlow threads per worker), batching on
    {"FMNIST_WORKERS": w, "FMNIST_THREADS": t, "FMNIST_TF_THREADS": tf}
    for w, t, tf in (
        ("1", "8", "2"),
        ("2", "4", "1"),
        ("2", "8", "1"),
        ("3", "4", "1"),
        ("2", "4", "2"),
    )
]


def sweep(seconds: int, model_dir: Path, body_file: Path) -> list[dict]:
    """Measure worker, thread and TensorFlow-thread choices at concurrency 32."""
    rows = []
    for choice in SWEEP:
        progress(f"sweep: {choice}")
        server = Server({"FMNIST_MODEL_DIR": str(model_dir), "FMNIST_BATCHING": "true", **choice})
        try:
            wrk(server.url, body_file, 8, 2)
            rows.append({**choice, **wrk(server.url, body_file, 32, seconds)})
        finally:
            server.stop()
        progress(f"sweep: {rows[-1]['rps']:.0f} req/s, p99 {rows[-1]['p99_ms']:.1f} ms")
    return rows


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
    }
    for name, extra, app in (
        ("floor", {}, "benchmarks.floor_app:create_app()"),
        ("batching_off", {"FMNIST_BATCHING": "false"}, None),
        ("batching_on", {"FMNIST_BATCHING": "true"}, None),
    ):
        progress(f"{name}: starting gunicorn")
        server = Server({**env, **extra}, app)
        try:
            results[name] = {
                "cold_start_s": round(server.cold_start, 2),
                "worker_rss_mib": server.worker_rss_mib(),
                "levels": load_levels(server, body_file, seconds, name),
            }
            results[name]["worker_rss_after_mib"] = server.worker_rss_mib()
        finally:
            server.stop()
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
        f"{results['seconds_per_level']} s per level with `wrk`, single-image multipart uploads "
        "of a 28x28 PNG to `POST /predict`, load generator on the same machine.",
        "",
        f"Settings: `{json.dumps(results['settings'])}`.",
        "",
        "| server | concurrency | requests/s | p50 ms | p95 ms | p99 ms | non-2xx "
        "| socket errors |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name in ("floor", "batching_off", "batching_on"):
        for level, r in results[name]["levels"].items():
            lines.append(
                f"| {name} | {level} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
                f"{r['p95_ms']:.2f} | {r['p99_ms']:.2f} | {r['non_2xx']} | "
                f"{r['socket_errors']} |"
            )
    lines += ["", "| model alone, batch | images/s | ms per call |", "| ---: | ---: | ---: |"]
    for batch, r in results["model_alone"].items():
        lines.append(f"| {batch} | {r['images_per_s']:.0f} | {r['ms_per_call']:.3f} |")
    lines += [
        "",
        "| server | cold start s (process start to /readyz 200) | worker RSS MiB "
        "(ready) | worker RSS MiB (after load) |",
        "| --- | ---: | --- | --- |",
    ]
    for name in ("floor", "batching_off", "batching_on"):
        r = results[name]
        lines.append(
            f"| {name} | {r['cold_start_s']} | {r['worker_rss_mib']} | "
            f"{r['worker_rss_after_mib']} |"
        )
    if "sweep" in results:
        lines += [
            "",
            "## Workers and threads (batching on, concurrency 32)",
            "",
            "| workers | threads per worker | TensorFlow threads | requests/s | p50 ms | "
            "p99 ms | non-2xx |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for r in results["sweep"]:
            lines.append(
                f"| {r['FMNIST_WORKERS']} | {r['FMNIST_THREADS']} | "
                f"{r['FMNIST_TF_THREADS']} | {r['rps']:.0f} | {r['p50_ms']:.2f} | "
                f"{r['p99_ms']:.2f} | {r['non_2xx']} |"
            )
    on, off = results["batching_on"]["levels"], results["batching_off"]["levels"]
    lines += [
        "",
        "## Batching against no batching",
        "",
        f"- concurrency 32: {on['32']['rps'] / off['32']['rps']:.2f}x the throughput "
        f"({on['32']['rps']:.0f} against {off['32']['rps']:.0f} requests/s); "
        f"p99 {on['32']['p99_ms']:.1f} ms against {off['32']['p99_ms']:.1f} ms.",
        f"- concurrency 1: p50 {on['1']['p50_ms']:.2f} ms with batching, "
        f"{off['1']['p50_ms']:.2f} ms without "
        f"({on['1']['p50_ms'] - off['1']['p50_ms']:+.2f} ms).",
        "",
    ]
    return "\n".join(lines + against_targets(results))


def against_targets(results: dict) -> list[str]:
    """Set the measurements beside issue 6's targets, with the reasons they are (not) met."""
    on, off = results["batching_on"]["levels"], results["batching_off"]["levels"]
    floor = results["floor"]["levels"]
    model_ms = results["model_alone"]["1"]["ms_per_call"]
    request_ms = 1000 / off["1"]["rps"]
    needed = 32 / 0.030  # Little's law: 32 requests in flight, each answered within 30 ms
    return [
        "## Against the targets",
        "",
        f"- Throughput at concurrency 32, batching on: {on['32']['rps']:.0f} requests/s "
        f"(target: 2.5x batching off, {2.5 * off['32']['rps']:.0f}; and 2,500 where the HTTP "
        f"floor allows). The floor itself, an app that only parses the upload, answers "
        f"{floor['32']['rps']:.0f} requests/s here, so 2,500 is out of reach on this machine.",
        f"- Why batching gains little here: one request costs {request_ms:.1f} ms "
        f"without batching, of which the model call at batch 1 is {model_ms:.2f} ms "
        f"({model_ms / request_ms:.0%}); batching can only share that part. HTTP, multipart "
        "parsing, decoding, preprocessing and metrics dominate on these cores.",
        f"- p99 at concurrency 32: {on['32']['p99_ms']:.0f} ms (target 30 ms). With 32 requests "
        f"in flight, a p99 of 30 ms needs at least {needed:.0f} requests/s (Little's law), more "
        f"than the floor's {floor['32']['rps']:.0f}.",
        f"- Concurrency 1: batching changes p50 by {on['1']['p50_ms'] - off['1']['p50_ms']:+.2f} "
        "ms (target: at most +1 ms): a lone request never waits for batch-mates.",
        "",
    ]


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
    args.output.mkdir(exist_ok=True)
    (args.output / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.output / "benchmarks.md").write_text(markdown(results))
    progress(f"wrote {args.output / 'benchmarks.md'}")


if __name__ == "__main__":
    main()
