"""Where a loaded worker's time goes: py-spy samples one worker (only while a thread of it
holds the GIL) as `wrk` drives POST /predict at concurrency 32.

Run with `make profile`; it writes docs/profile.json and the "Profile" section at the end of
docs/benchmarks.md (`make bench` keeps that section when it rewrites the file).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.wrk import multipart_body, progress, sample_png, wrk
from harness import ROOT
from harness.server import scratch_server

CONCURRENCY = 32
SAMPLE_RATE = 250  # samples per second; py-spy pauses the worker briefly for each one
TOP_FUNCTIONS = 15
SECTION = "## Profile"
STDLIB = Path(sysconfig.get_paths()["stdlib"]).resolve()


def record(
    seconds: int, env: dict[str, str], keep: Path | None = None
) -> tuple[list[tuple[list[str], int]], dict]:
    """Start the service, load it, sample one worker with py-spy; return stacks and wrk's result
    (and copy py-spy's raw stacks to `keep`)."""
    folder = Path(tempfile.mkdtemp(prefix="profile-"))
    body_file = folder / "body.bin"
    body_file.write_bytes(multipart_body(sample_png()))
    raw = folder / "stacks.txt"
    server = scratch_server(env).start()
    try:
        url = server.url + "/predict"
        wrk(url, body_file, 8, 2)
        pid = str(server.worker_pids()[0])
        progress(f"sampling worker {pid} for {seconds}s at concurrency {CONCURRENCY}")
        spy = subprocess.Popen(
            [
                str(Path(sys.executable).parent / "py-spy"),
                "record",
                "--gil",
                "--full-filenames",
                "--format",
                "raw",
                "--rate",
                str(SAMPLE_RATE),
                "--duration",
                str(seconds),
                "--pid",
                pid,
                "--output",
                str(raw),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        load = wrk(url, body_file, CONCURRENCY, seconds + 2)
        spy.wait(60)
    finally:
        server.stop()
    stacks = []
    for line in raw.read_text().splitlines():
        frames, _, count = line.rpartition(" ")
        stacks.append((frames.split(";"), int(count)))
    if keep is not None:
        shutil.copy(raw, keep)
    shutil.rmtree(folder, ignore_errors=True)
    return stacks, load


def frame_file(frame: str) -> str:
    """The file of a py-spy frame, `function (path:line)`."""
    return frame.rpartition(" (")[2].rpartition(":")[0]


def owner(frame: str) -> str:
    """Who a frame's code belongs to: our module, a site-packages package, or the stdlib."""
    path = Path(frame_file(frame))
    if "site-packages" in path.parts:
        return path.parts[path.parts.index("site-packages") + 1].removesuffix(".py")
    if path.is_relative_to(ROOT):
        return "our code: " + str(path.relative_to(ROOT).parent)
    if path.is_relative_to(STDLIB):
        return "stdlib " + path.relative_to(STDLIB).parts[0].removesuffix(".py")
    return "other"


def our_function(frame: str) -> str | None:
    """`module.function` for a frame of the project's own code, else None."""
    path = Path(frame_file(frame))
    if not path.is_relative_to(ROOT / "service"):
        return None
    module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return f"{module}.{frame.partition(' (')[0]}"


def breakdown(stacks: list[tuple[list[str], int]]) -> dict:
    """Shares of GIL-holding samples: by the library running (leaf frame), by our functions
    (any frame: time in the function and what it calls)."""
    total = sum(count for _, count in stacks)
    by_library: Counter[str] = Counter()
    by_function: Counter[str] = Counter()
    for frames, count in stacks:
        by_library[owner(frames[-1])] += count
        for name in {our_function(frame) for frame in frames} - {None}:
            by_function[name] += count
    return {
        "samples": total,
        "by_library": {k: round(v / total, 4) for k, v in by_library.most_common()},
        "by_our_function": {
            k: round(v / total, 4) for k, v in by_function.most_common(TOP_FUNCTIONS)
        },
    }


def markdown(profile: dict) -> str:
    """The Profile section of docs/benchmarks.md."""
    load = profile["load"]
    lines = [
        SECTION,
        "",
        f"`make profile` (`benchmarks/gil_profile.py`): `py-spy record --gil` at {SAMPLE_RATE} "
        f"samples/s on one of the service's workers (its defaults, settings "
        f"`{json.dumps(profile['settings'])}`) for {profile['seconds']} s while `wrk` drove "
        f"concurrency {CONCURRENCY} ({load['rps']:.0f} requests/s under the sampler, which "
        f"slows the worker). {profile['samples']} samples, each taken while a thread of the "
        "worker held the GIL: the worker's Python work, not its waiting. System calls made "
        "while holding it count too, and more than their CPU time: the batcher's leader "
        "waking each request it served (one futex wake each) is most of "
        "`BatchingPredictor._lead`'s share beyond the model call, yet docs/request-path.md "
        "measures a wake at a few microseconds, a small part of a request's CPU time.",
        "",
        "| code running (leaf frame) | share of GIL-holding samples |",
        "| --- | ---: |",
    ]
    lines += [f"| {k} | {v:.1%} |" for k, v in profile["by_library"].items() if v >= 0.005]
    lines += [
        "",
        "| our function (with what it calls) | share of GIL-holding samples |",
        "| --- | ---: |",
    ]
    lines += [f"| `{k}` | {v:.1%} |" for k, v in profile["by_our_function"].items()]
    return "\n".join(lines) + "\n"


def write_section(benchmarks_md: Path, section: str) -> None:
    """Replace (or append) the Profile section, which is always the file's last."""
    text = benchmarks_md.read_text() if benchmarks_md.exists() else "# Benchmarks\n"
    head = text.split(f"\n{SECTION}\n", 1)[0].rstrip("\n")
    benchmarks_md.write_text(head + "\n\n" + section)


def main() -> None:
    """Record, summarise, write docs/profile.json and the section of docs/benchmarks.md."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=20, help="seconds of sampling")
    parser.add_argument("--model-dir", type=Path, default=ROOT / "models" / "fashion_mnist")
    parser.add_argument("--output", type=Path, default=ROOT / "docs")
    parser.add_argument("--raw", type=Path, help="also keep py-spy's collapsed stacks here")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    settings = {k: v for k, v in os.environ.items() if k.startswith("FMNIST_")}
    env = {"FMNIST_MODEL_DIR": str(args.model_dir), **settings}
    stacks, load = record(args.seconds, env, args.raw)
    profile = {"seconds": args.seconds, "settings": settings, "load": load, **breakdown(stacks)}
    args.output.mkdir(exist_ok=True)
    (args.output / "profile.json").write_text(json.dumps(profile, indent=2) + "\n")
    write_section(args.output / "benchmarks.md", markdown(profile))
    progress(f"wrote {args.output / 'profile.json'} and the Profile section of benchmarks.md")


if __name__ == "__main__":
    main()
