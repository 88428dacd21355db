"""gRPC beside REST: the Open Inference Protocol's ModelInfer over gRPC, /v2 infer with binary
tensors over REST, and multipart /predict uploads, batch 1 and 64, concurrency 1, 8 and 32, the
same pixels in every kind.

One load generator drives every kind: h2load (nghttp2's, written in C as wrk is), over
cleartext HTTP/2 to the gRPC port with a framed protobuf message as the body, over HTTP/1.1
(`--h1`) to the REST port; one call in flight per connection, as wrk's connections. The gRPC
kinds run a second way too, at concurrency 8 and 32: every call on one connection, as one
client channel sends them (`grpc_v2_one_channel`). NVIDIA's perf_analyzer, which drives both
transports of the protocol, cannot run here: its PyPI wheels (perf-analyzer 2.58 and later)
are built for glibc 2.38 (manylinux_2_38) and this machine's Debian 12 has 2.36, so pip falls
back to a 0.1.0 placeholder without the program. A Python load generator would spend several
times h2load's CPU per call on the same two cores the server runs on.

One server (bin/serve, the service's defaults); each kind warmed up, its answer checked, then
loaded in short slices that go round-robin among the kinds of a batch size and concurrency
(benchmarks/phases.py's interleaving: this machine's speed drifts within minutes). h2load's
HTTP status does not say whether a gRPC call succeeded (grpc-status comes in the trailers): the
service's error counter, read before and after, does.

Run with `make bench-grpc` (`make bench` runs it last); it writes docs/grpc.json and the section
"gRPC and REST" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import requests
from PIL import Image
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.grpc import service_pb2

from benchmarks import gil_profile
from benchmarks.phases import combine, connection_count
from benchmarks.wrk import BOUNDARY, MULTIPART, busy_cpu_seconds, progress
from harness import ROOT
from harness.server import LiveServer, scratch_server
from service.observability.buffers import FLUSH_INTERVAL

SECTION = "## gRPC and REST"
CONCURRENCY = (1, 8, 32)
ONE_CHANNEL = (8, 32)  # concurrency levels also run as streams of one connection
BATCHES = (1, 64)  # 64: FMNIST_MAX_BATCH and FMNIST_BATCH_MAX_SIZE by default
SLICES = 3
WARMUP_SECONDS = 1
MODEL = "fashion_mnist"
MODEL_INFER = "/inference.GRPCInferenceService/ModelInfer"
GRPC_HEADERS = ("content-type: application/grpc", "te: trailers")


def pixels(count: int) -> np.ndarray:
    """A fixed uint8 batch [count, 28, 28] (benchmarks/json_paths.py's)."""
    return np.random.default_rng(0).integers(0, 256, (count, 28, 28), dtype=np.uint8)


def infer_request(images: np.ndarray) -> bytes:
    """ModelInfer's request message: one UINT8 tensor in raw_input_contents."""
    tensor = service_pb2.ModelInferRequest.InferInputTensor(
        name="images", datatype="UINT8", shape=list(images.shape)
    )
    message = service_pb2.ModelInferRequest(
        model_name=MODEL, inputs=[tensor], raw_input_contents=[images.tobytes()]
    )
    return message.SerializeToString()


def grpc_frame(message: bytes) -> bytes:
    """The HTTP/2 body of a unary gRPC call: uncompressed flag, length, message."""
    return b"\0" + len(message).to_bytes(4, "big") + message


def v2_binary_body(images: np.ndarray) -> tuple[bytes, str]:
    """/v2 infer's binary form: the JSON header, the raw tensor after it; binary outputs asked.
    Also the Inference-Header-Content-Length header."""
    header = {
        "inputs": [
            {
                "name": "images",
                "shape": list(images.shape),
                "datatype": "UINT8",
                "parameters": {"binary_data_size": images.nbytes},
            }
        ],
        "parameters": {"binary_data_output": True},
    }
    text = json.dumps(header).encode()
    return text + images.tobytes(), f"Inference-Header-Content-Length: {len(text)}"


def multipart_batch(images: np.ndarray) -> bytes:
    """/predict's multipart form: each image a PNG file in the field `image`."""
    parts = []
    for number, image in enumerate(images):
        png = io.BytesIO()
        Image.fromarray(image).save(png, "PNG")
        parts.append(
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="image"; '
            f'filename="{number}.png"\r\nContent-Type: image/png\r\n\r\n'.encode()
            + png.getvalue()
            + b"\r\n"
        )
    return b"".join(parts) + f"--{BOUNDARY}--\r\n".encode()


@dataclass
class Kind:
    """One kind of request: its body (written to `body_file` for h2load), where it goes, how
    h2load sends it."""

    name: str
    batch: int
    body: bytes
    body_file: Path
    path: str
    headers: tuple[str, ...]
    grpc: bool = False
    one_channel: bool = False

    def __post_init__(self) -> None:
        self.body_file.write_bytes(self.body)

    def url(self, server: LiveServer) -> str:
        """The URL h2load requests."""
        port = server.grpc_port if self.grpc else server.port
        return f"http://127.0.0.1:{port}{self.path}"

    def levels(self) -> tuple[int, ...]:
        """The concurrency levels this kind runs at."""
        return ONE_CHANNEL if self.one_channel else CONCURRENCY


def kinds(folder: Path) -> list[Kind]:
    """Every kind at every batch size, the same pixels in each."""
    made = []
    for batch in BATCHES:
        images = pixels(batch)
        framed = grpc_frame(infer_request(images))
        v2_body, v2_length = v2_binary_body(images)
        rest_v2 = ("content-type: application/octet-stream", v2_length)
        for name, body, path, headers in (
            ("grpc_v2", framed, MODEL_INFER, GRPC_HEADERS),
            ("grpc_v2_one_channel", framed, MODEL_INFER, GRPC_HEADERS),
            ("rest_v2_binary", v2_body, f"/v2/models/{MODEL}/infer", rest_v2),
            (
                "predict_multipart",
                multipart_batch(images),
                "/predict",
                (f"content-type: {MULTIPART}",),
            ),
        ):
            made.append(
                Kind(
                    name,
                    batch,
                    body,
                    folder / f"{name}_{batch}.bin",
                    path,
                    headers,
                    grpc=name.startswith("grpc"),
                    one_channel=name.endswith("one_channel"),
                )
            )
    return made


def check_answer(kind: Kind, server: LiveServer) -> None:
    """Fail before measuring unless the kind's body is answered with `batch` predictions."""
    if kind.grpc:
        with grpc.insecure_channel(server.grpc_target) as channel:
            call = channel.unary_unary(kind.path)  # bytes in, bytes out
            answer = service_pb2.ModelInferResponse.FromString(call(kind.body[5:], timeout=30))
        shape = list(answer.outputs[0].shape)
    else:
        headers = dict(header.split(": ", 1) for header in kind.headers)
        response = requests.post(server.url + kind.path, kind.body, headers=headers, timeout=30)
        response.raise_for_status()
        if kind.name == "predict_multipart":
            shape = [len(response.json()["predictions"]), 10]
        else:
            length = int(response.headers["Inference-Header-Content-Length"])
            shape = json.loads(response.content[:length])["outputs"][0]["shape"]
    if shape != [kind.batch, 10]:
        raise RuntimeError(f"{kind.name} batch {kind.batch}: answered shape {shape}")


def h2load(kind: Kind, url: str, concurrency: int, seconds: float, log: Path) -> dict:
    """Drive `url` with h2load for `seconds`; return the slice as benchmarks/wrk.py's summary
    (requests, seconds, rps, latency_us counted by value, non_2xx, socket_errors, busy_cpu_s)."""
    clients, streams = (1, concurrency) if kind.one_channel else (concurrency, 1)
    command = [
        "h2load",
        *(["--h1"] if not kind.grpc else []),
        f"--clients={clients}",
        f"--max-concurrent-streams={streams}",
        f"--duration={seconds:g}",
        f"--data={kind.body_file}",
        f"--log-file={log}",
        *(option for header in kind.headers for option in ("-H", header)),
        url,
    ]
    busy_before = busy_cpu_seconds()
    output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
    busy = busy_cpu_seconds() - busy_before
    latencies: Counter[int] = Counter()
    statuses: Counter[int] = Counter()
    for line in log.read_text().splitlines():
        _, status, microseconds = line.split("\t")
        statuses[int(status)] += 1
        latencies[int(microseconds)] += 1
    log.unlink()
    answered = sum(count for status, count in statuses.items() if 200 <= status < 300)
    failed = next(line for line in output.splitlines() if line.startswith("requests:"))
    errored = int(failed.split(" failed, ")[1].split(" errored")[0])
    return {
        "requests": answered,
        "seconds": seconds,
        "rps": round(answered / seconds, 1),
        "latency_us": sorted(latencies.items()),
        "non_2xx": sum(statuses.values()) - answered,
        "socket_errors": errored,
        "busy_cpu_s": round(busy, 3),
        "connections_per_worker": None,
    }


def watched_slice(
    kind: Kind, server: LiveServer, concurrency: int, seconds: float, folder: Path
) -> dict:
    """One slice of load; at the highest concurrency, also the connections each worker holds
    halfway through it (one channel: all on one worker)."""
    held: list[list[int]] = []
    watch = None
    if concurrency == max(CONCURRENCY):
        watch = connection_count(server, seconds / 2, held)
        watch.start()
    result = h2load(kind, kind.url(server), concurrency, seconds, folder / "log")
    if watch is not None:
        watch.join()
    result["connections_per_worker"] = held[0] if held else None
    return result


def error_count(server: LiveServer) -> float:
    """The service's error answers so far, every code together (its errors counter)."""
    text = requests.get(server.metrics_url, timeout=10).text
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        if family.name.endswith("_errors")
        for sample in family.samples
        if sample.name.endswith("_errors_total")
    )


def measure(seconds: int, model_dir: Path, settings: dict[str, str]) -> dict:
    """Every kind at every level against one server, the kinds of a level interleaved."""
    folder = Path(tempfile.mkdtemp(prefix="grpc-bench-"))
    env = {"FMNIST_MODEL_DIR": str(model_dir), **settings}
    all_kinds = kinds(folder)
    results: dict = {
        "seconds_per_level": seconds,
        "slices": SLICES,
        "settings": settings,
        "body_bytes": {f"{k.name}_{k.batch}": len(k.body) for k in all_kinds},
        "load_average_before": os.getloadavg()[0],
        "levels": [],
    }
    progress("grpc: starting the server")
    server = scratch_server(env).start()
    try:
        for kind in all_kinds:
            check_answer(kind, server)
            h2load(kind, kind.url(server), 8, WARMUP_SECONDS, folder / "log")
        errors_before = error_count(server)
        for batch in BATCHES:
            for concurrency in CONCURRENCY:
                level = [k for k in all_kinds if k.batch == batch and concurrency in k.levels()]
                slices: dict[str, list[dict]] = {k.name: [] for k in level}
                for index in range(SLICES):
                    for kind in level:
                        slices[kind.name].append(
                            watched_slice(kind, server, concurrency, seconds / SLICES, folder)
                        )
                    progress(
                        f"grpc: batch {batch}, concurrency {concurrency}, slice {index + 1}: "
                        + ", ".join(f"{n} {s[-1]['rps']:.0f}" for n, s in slices.items())
                        + " req/s"
                    )
                for name, parts in slices.items():
                    row = {"kind": name, "batch": batch, "concurrency": concurrency}
                    results["levels"].append({**row, **combine(parts)})
        time.sleep(10 * FLUSH_INTERVAL)  # the workers' metric buffers written
        results["service_errors"] = error_count(server) - errors_before
    finally:
        server.stop()
        shutil.rmtree(folder, ignore_errors=True)
    results["load_average_after"] = os.getloadavg()[0]
    return results


def markdown(results: dict) -> str:
    """The section "gRPC and REST" of docs/benchmarks.md."""
    lines = [
        SECTION,
        "",
        "`make bench-grpc` (`benchmarks/grpc_load.py`): one server (`make serve`'s defaults, "
        f"settings `{json.dumps(results['settings'])}`), h2load on the same machine driving "
        "every kind, the same uint8 pixels in each: `grpc_v2` is the Open Inference Protocol's "
        "`ModelInfer` over gRPC, a UINT8 tensor [N, 28, 28] in `raw_input_contents`; "
        "`rest_v2_binary` is `POST /v2/models/fashion_mnist/infer` with the same tensor as "
        "binary data after the JSON header, binary outputs asked; `predict_multipart` is "
        "`POST /predict` with N PNG files. One call in flight per connection (HTTP/1.1 for "
        "REST, cleartext HTTP/2 for gRPC), except `grpc_v2_one_channel`: every call on one "
        "HTTP/2 connection, as one client channel sends them. "
        f"{results['seconds_per_level']} s per kind and level, in {results['slices']} slices "
        "round-robin among the kinds of a level. CPU ms per request: busy time of both cores "
        "(server and h2load together) over answered requests. Connections per worker: the "
        "connected sockets each worker held halfway through each slice at concurrency "
        f"{max(CONCURRENCY)}, fewest first. Errors the service counted "
        f"during the run: {results['service_errors']:g}; one-minute load average before and "
        f"after: {results['load_average_before']:.2f} and {results['load_average_after']:.2f}.",
        "",
        "Body bytes: "
        + ", ".join(f"{name} {size:,}" for name, size in results["body_bytes"].items())
        + ".",
        "",
        "| kind | batch | concurrency | requests/s | images/s | slices req/s | p50 ms | p99 ms "
        "| non-2xx | socket errors | CPU ms per request | connections per worker |",
        "| --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ]
    for r in results["levels"]:
        spread = ", ".join(f"{rps:.0f}" for rps in r["slices_rps"])
        lines.append(
            f"| {r['kind']} | {r['batch']} | {r['concurrency']} | {r['rps']:.0f} | "
            f"{r['rps'] * r['batch']:.0f} | {spread} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
            f"{r['non_2xx']} | {r['socket_errors']} | {r['cpu_ms_per_request']:.2f} | "
            f"{held(r)} |"
        )
    return "\n".join(lines + findings(results)) + "\n"


def findings(results: dict) -> list[str]:
    """What the table says, in ratios read from it."""
    rows = {(r["kind"], r["batch"], r["concurrency"]): r for r in results["levels"]}
    top = max(CONCURRENCY)
    lines = [""]
    for batch in BATCHES:
        grpc_, rest = rows[("grpc_v2", batch, top)], rows[("rest_v2_binary", batch, top)]
        one, alone = rows[("grpc_v2_one_channel", batch, top)], rows[("grpc_v2", batch, 1)]
        upload = rows[("predict_multipart", batch, top)]
        lines.append(
            f"- Batch {batch}, concurrency {top}: gRPC answered "
            f"{grpc_['rps'] / rest['rps']:.2f}x the requests/s of REST with the same binary "
            f"tensor and {grpc_['rps'] / upload['rps']:.2f}x those of PNG uploads; one channel "
            f"answered {one['rps'] / grpc_['rps']:.2f}x what {top} connections did, every call "
            "on the one worker that accepted it. A lone call: p50 "
            f"{alone['p50_ms']:.2f} ms over gRPC, "
            f"{rows[('rest_v2_binary', batch, 1)]['p50_ms']:.2f} ms over REST."
        )
    return lines


def held(row: dict) -> str:
    """The connections each worker held halfway through each slice, fewest first."""
    counts = row.get("connections_per_worker")
    return "; ".join(" and ".join(map(str, c)) for c in counts) if counts else ""


def write_section(benchmarks_md: Path, section: str) -> None:
    """Replace this section, or add it before the Profile section, which stays the last."""
    text = benchmarks_md.read_text() if benchmarks_md.exists() else "# Benchmarks\n"
    head, found, rest = text.partition(f"\n{SECTION}\n")
    if found:
        after = rest.find("\n## ")
        tail = rest[after:] if after >= 0 else ""
    else:
        head, found, rest = text.partition(f"\n{gil_profile.SECTION}\n")
        tail = found + rest
    benchmarks_md.write_text(head.rstrip("\n") + "\n\n" + section + tail)


def main() -> None:
    """Parse options, measure, write docs/grpc.json and the section of docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=9, help="seconds per kind and level")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "fashion_mnist")
    parser.add_argument("--output", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    if shutil.which("h2load") is None:
        sys.exit("h2load is not installed: apt-get install nghttp2-client")
    settings = {key: value for key, value in os.environ.items() if key.startswith("FMNIST_")}
    started = time.monotonic()
    results = measure(args.seconds, args.model_dir, settings)
    results["wall_s"] = round(time.monotonic() - started, 1)
    (args.output / "grpc.json").write_text(json.dumps(results, indent=2) + "\n")
    write_section(args.output / "benchmarks.md", markdown(results))
    progress(f"grpc: wrote {args.output / 'grpc.json'} and {SECTION!r} of benchmarks.md")


if __name__ == "__main__":
    main()
