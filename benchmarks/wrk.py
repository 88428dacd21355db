"""Driving a server with wrk, and what the load benchmarks post and count around it: the
multipart upload of one small PNG, the machine's busy CPU time, a progress line."""

from __future__ import annotations

import io
import json
import os
import subprocess
import time
from pathlib import Path

import numpy as np
from PIL import Image

from harness import ROOT

BOUNDARY = "benchmarkboundary7MA4YWxkTrZu0gW"
MULTIPART = f"multipart/form-data; boundary={BOUNDARY}"


def progress(message: str) -> None:
    """Print one progress line."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


def sample_png() -> bytes:
    """One Fashion-MNIST-sized PNG upload (a synthetic garment)."""
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
