"""The image on the stand-in base (harness/podman.py): its size beside the base's, its container's
cold start, its processes' memory and CPU per request under load, and that it holds no
TensorFlow. The numbers behind the HEALTHCHECK's start period and the resources that
docker-compose.yml and deploy/k8s/ request (docs/operations.md, "Resources").

It builds the image (podman's storage keeps the layers), then starts STARTS containers one after
another as compose runs the api service, each timed to its first /readyz 200 from the
`podman run` call and from the entry script's start (the container's StartedAt), and drives the
last one with wrk at concurrency 32.

    make bench-image   (.venv/bin/python -m benchmarks.image [--starts 5] [--seconds 10])

Needs podman and runc (and mmdebstrap for a first stand-in base) and wrk; writes
docs/image.json and the section "The image" of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

from benchmarks import gil_profile
from benchmarks.wrk import multipart_body, progress, sample_png, wrk
from harness import ROOT, procfs
from harness.container import compose
from harness.podman import BASE_IMAGE, IMAGE, Container, Podman, cache_dir
from harness.server import free_port

SECTION = "## The image"
CONCURRENCY = 32
MB = 1e6  # image sizes in decimal megabytes, as podman prints them
TICK = os.sysconf("SC_CLK_TCK")
WORKERS = int(compose()["services"]["api"]["environment"]["FMNIST_WORKERS"])


def sizes(podman: Podman) -> dict:
    """The base's and the image's sizes, in MB."""
    base = json.loads(podman("image", "inspect", BASE_IMAGE).stdout)[0]["Size"]
    image = podman.inspect_image()["Size"]
    return {"base_mb": round(base / MB), "image_mb": round(image / MB)}


def rss_mib(pids: list[int]) -> list[float]:
    """Resident memory of each process, in MiB."""
    return [round(procfs.rss_bytes(pid) / 2**20, 1) for pid in pids]


def cold_start(podman: Podman) -> tuple[Container, dict]:
    """Start one container; time its start and read its processes' memory once ready."""
    server = Container(podman, "fmnist-bench-image", free_port(), free_port()).start()
    # /readyz answers once one worker is ready: read the memory once every worker is.
    deadline = time.monotonic() + 30
    while not every_worker_accepts(server) and time.monotonic() < deadline:
        time.sleep(0.05)
    master, *workers = server.pids()
    return server, {
        "from_podman_run_s": round(server.ready_seconds, 2),
        "from_entry_script_s": round(server.ready_at - server.process_started_at(), 2),
        "master_rss_mib": rss_mib([master])[0],
        "worker_rss_mib": rss_mib(workers),
    }


def every_worker_accepts(server: Container) -> bool:
    """Whether each worker of the container polls the API's listening socket."""
    workers = server.pids()[1:]
    return len(workers) == WORKERS and all(
        procfs.polls_listener(pid, server.port) for pid in workers
    )


def under_load(server: Container, seconds: float) -> dict:
    """Drive /predict with wrk; the container's CPU per request and its memory, sampled."""
    body = Path(tempfile.mkdtemp(prefix="bench-image-")) / "body.bin"
    body.write_bytes(multipart_body(sample_png()))
    pids = server.pids()
    ticks = sum(procfs.cpu_ticks(pid) for pid in pids)
    peak, done = [0.0], threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], sum(rss_mib(pids)))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        result = wrk(server.url + "/predict", body, CONCURRENCY, seconds)
    finally:
        done.set()
        sampler.join()
        shutil.rmtree(body.parent)
    cpu_s = (sum(procfs.cpu_ticks(pid) for pid in pids) - ticks) / TICK
    return {
        "requests_per_s": round(result["rps"]),
        "non_2xx": result["non_2xx"],
        "server_cpu_ms_per_request": round(cpu_s / max(result["requests"], 1) * 1000, 3),
        "machine_cpu_ms_per_request": result["cpu_ms_per_request"],
        "peak_rss_sum_mib": round(peak[0], 1),
        "master_rss_after_mib": rss_mib(pids[:1])[0],
        "worker_rss_after_mib": rss_mib(pids[1:]),
    }


def import_tensorflow(podman: Podman) -> str:
    """The last line `import tensorflow` prints in the image (it must fail)."""
    result = podman("run", "--rm", "--network=none", IMAGE, "python", "-c", "import tensorflow",
                    check=False)  # fmt: skip
    assert result.returncode != 0, "the image imports tensorflow"
    return result.stderr.strip().splitlines()[-1]


def measure(starts: int, seconds: float) -> dict:
    """Build, then time STARTS cold starts and load the last container."""
    podman = Podman(shutil.which("podman") or sys.exit("podman is not installed"), cache_dir())
    podman.ensure_base(shutil.which("mmdebstrap") or "mmdebstrap")
    progress("building the image")
    results: dict = {"build_s": round(podman.build()), **sizes(podman), "starts": []}
    load_before = os.getloadavg()[0]
    for number in range(1, starts + 1):
        server, start = cold_start(podman)
        results["starts"].append(start)
        progress(f"start {number}: {start['from_entry_script_s']} s from the entry script")
        if number < starts:
            server.stop()
    try:
        progress(f"wrk at concurrency {CONCURRENCY} for {seconds:g} s")
        results["load"] = {"concurrency": CONCURRENCY, "seconds": seconds}
        results["load"].update(under_load(server, seconds))
    finally:
        server.stop()
    results["import_tensorflow"] = import_tensorflow(podman)
    results["load_average"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    return results


def markdown(image: dict) -> str:
    """The section "The image" of docs/benchmarks.md."""
    load, starts = image["load"], image["starts"]
    lines = [
        SECTION,
        "",
        "`python -m benchmarks.image` (`benchmarks/image.py`): the image built from the "
        "Dockerfile with podman on the stand-in base (harness/podman.py: Debian 12's Python 3.11, "
        "as python:3.11-slim cannot be pulled here), its containers run as docker-compose.yml "
        "runs the api service (2 workers, `litert-int8`), started one after another. Cold "
        "start: to the first `/readyz` 200, from the `podman run` call (podman's own work "
        "included) and from the entry script's start (the container's `StartedAt`); the "
        "processes' memory is their RSS, read from the host. One-minute load average before "
        f"and after: {image['load_average'][0]} and {image['load_average'][1]}.",
        "",
        "| base MB | image MB | image over base MB | `import tensorflow` in the image |",
        "| ---: | ---: | ---: | --- |",
        f"| {image['base_mb']} | {image['image_mb']} | {image['image_mb'] - image['base_mb']} "
        f"| {image['import_tensorflow']} |",
        "",
        "| start | from `podman run` s | from the entry script s | master RSS MiB "
        "| worker RSS MiB (ready) |",
        "| ---: | ---: | ---: | ---: | --- |",
    ]
    for number, start in enumerate(starts, 1):
        lines.append(
            f"| {number} | {start['from_podman_run_s']} | {start['from_entry_script_s']} "
            f"| {start['master_rss_mib']} | {start['worker_rss_mib']} |"
        )
    lines += [
        "",
        f"The last container under `wrk` at concurrency {load['concurrency']} for "
        f"{load['seconds']:g} s (single-image multipart uploads to `POST /predict`): "
        f"{load['requests_per_s']} requests/s, {load['non_2xx']} non-2xx; CPU ms per request "
        f"{load['server_cpu_ms_per_request']} for the container's processes (master and "
        f"workers), {load['machine_cpu_ms_per_request']} for the machine (`wrk` included); "
        f"after the load, master {load['master_rss_after_mib']} MiB and workers "
        f"{load['worker_rss_after_mib']} MiB; the largest sum of the processes' RSS sampled "
        f"every 0.2 s during the load: {load['peak_rss_sum_mib']} MiB.",
    ]
    return "\n".join(lines) + "\n"


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
    """Parse options, measure, write docs/image.json and the section of docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--starts", type=int, default=5, help="containers started, one by one")
    parser.add_argument("--seconds", type=float, default=10, help="seconds of load")
    parser.add_argument("--output", type=Path, default=ROOT / "docs")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    image = measure(args.starts, args.seconds)
    (args.output / "image.json").write_text(json.dumps(image, indent=2) + "\n")
    write_section(args.output / "benchmarks.md", markdown(image))
    progress(f"wrote {args.output / 'image.json'} and the section of benchmarks.md")


if __name__ == "__main__":
    main()
