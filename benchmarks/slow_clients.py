"""Slow and silent clients against the real server, directly and through the front door.

Three attacks, each against a fresh server (bin/serve, the shipped model, make serve's
defaults): 200 connections that send nothing, 64 that send a request header one byte every
6 s, and 80 that send a /predict header announcing more body than they send, then nothing
(with FMNIST_REQUEST_TIMEOUT=5). Each lasts HOLD seconds; meanwhile PROBES normal /predict
requests, each on a new connection, are timed, and the server's cut of every slow connection
(its close, reset or answer) is recorded. Three set-ups: gunicorn directly with gthread's own
worker class (the service before service/worker.py), gunicorn directly with the service's
worker, and the shipped nginx front door (harness/nginx.py, Debian's nginx) in front of it.
Then the normal path: wrk against both worker classes side by side, kept-alive connections and
a new connection per request, in alternating slices.

Run with `make bench-slow` (needs nginx and wrk); about 7 minutes. It writes
docs/slow-clients.json and the table of docs/security.md, "Slow clients and the front door".
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.wrk import wrk
from harness import ROOT, SHIPPED_MODEL_DIR
from harness.nginx import FrontDoor
from harness.server import LiveServer, free_port
from harness.slow_clients import PROBE_PNG, SlowClients, probe_meanwhile, summary

HOLD = 30.0  # seconds each attack lasts
PROBES = 5
PROBE_START = 1.0  # seconds into the attack of the first probe
PROBE_SPACING = 2.0
PROBE_TIMEOUT = HOLD + 15  # a probe stuck behind the attack is answered once it ends
GTHREAD = {"GUNICORN_CMD_ARGS": "--worker-class gthread"}  # gunicorn's own class, as before
THROUGHPUT_SLICES = 5
THROUGHPUT_SLICE_SECONDS = 3.0
THROUGHPUT_CONNECTIONS = 32
DOC = ROOT / "docs" / "security.md"
JSON_OUT = ROOT / "docs" / "slow-clients.json"
BEGIN = "<!-- benchmarks/slow_clients.py writes from here -->"
END = "<!-- to here -->"


@dataclass(frozen=True)
class Attack:
    """One kind of slow connection, how many, and the server settings it runs against."""

    kind: str
    count: int
    label: str
    env: dict[str, str] = field(default_factory=dict)
    interval: float = 6.0


ATTACKS = (
    Attack("silent", 200, "200 silent connections"),
    Attack("trickle", 64, "64 header tricklers, a byte every 6 s"),
    Attack(
        "stall", 80, "80 stalled bodies, FMNIST_REQUEST_TIMEOUT=5", {"FMNIST_REQUEST_TIMEOUT": "5"}
    ),
)
SETUPS = (  # name, gunicorn's extra environment, whether nginx is in front
    ("direct, gthread's worker (before)", GTHREAD, False),
    ("direct, the service's worker", {}, False),
    ("through nginx", {}, True),
)


def progress(message: str) -> None:
    """One line of progress on stderr."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run_attack(attack: Attack, env: dict[str, str], nginx: str | None, folder: Path) -> dict:
    """Start a server (and nginx), hold the attack for HOLD seconds while probing; stop them."""
    server = LiveServer(SHIPPED_MODEL_DIR, folder / "gunicorn.log", **env, **attack.env).start()
    door = None
    try:
        if nginx is not None:
            door = FrontDoor(nginx, server.port, folder / "nginx", free_port()).start()
        target = door or server
        load = os.getloadavg()[0]
        probes: list = []
        with SlowClients(target.port, attack.kind, attack.count, attack.interval) as slow:
            time.sleep(PROBE_START)
            prober = threading.Thread(
                target=lambda: probes.extend(
                    probe_meanwhile(target.url, PROBES, PROBE_SPACING, PROBE_TIMEOUT)
                )
            )
            prober.start()
            time.sleep(max(0.0, slow.started + HOLD - time.monotonic()))
            cuts = dict(slow.cuts)  # as the attack ends; its own close follows
        prober.join()
    finally:
        if door is not None:
            door.stop()
        server.stop()
    seconds = sorted(cut.seconds for cut in cuts.values())
    return {
        "probes": [
            {
                "started": round(p.started - slow.started, 2),
                "seconds": p.seconds,
                "status": p.status,
            }
            for p in probes
        ],
        **summary(probes, PROBE_TIMEOUT),
        "cut": len(cuts),
        "count": attack.count,
        "cut_first_s": seconds[0] if seconds else None,
        "cut_last_s": seconds[-1] if seconds else None,
        "cut_by": dict(Counter(str(cut.status or "close") for cut in cuts.values())),
        "load_before": round(load, 2),
        "load_after": round(os.getloadavg()[0], 2),
    }


def normal_path(folder: Path) -> dict:
    """Requests/s of /predict on both worker classes, side by side, in alternating slices:
    kept-alive connections, then a new connection per request."""
    body = folder / "probe.png"
    body.write_bytes(PROBE_PNG)
    servers = {
        "gthread's worker": LiveServer(SHIPPED_MODEL_DIR, folder / "gthread.log", **GTHREAD),
        "the service's worker": LiveServer(SHIPPED_MODEL_DIR, folder / "service.log"),
    }
    results: dict[str, dict[str, list[float]]] = {}
    try:
        for server in servers.values():
            server.start()
        for mode, headers in (("kept alive", ()), ("new connection each", ("Connection: close",))):
            for index in range(THROUGHPUT_SLICES):
                for name, server in servers.items():
                    result = wrk(
                        server.url + "/predict",
                        body,
                        THROUGHPUT_CONNECTIONS,
                        THROUGHPUT_SLICE_SECONDS,
                        content_type="image/png",
                        headers=headers,
                    )
                    assert result["non_2xx"] == 0 and result["socket_errors"] == 0, result
                    results.setdefault(mode, {}).setdefault(name, []).append(result["rps"])
                progress(f"normal path, {mode}, slice {index + 1} of {THROUGHPUT_SLICES}")
    finally:
        for server in servers.values():
            server.stop()
    return results


def table(results: dict) -> list[str]:
    """The attacks' table, in Markdown."""
    lines = [
        "| attack | set-up | probe median | probe max | slow connections cut during the "
        f"{HOLD:g} s | cut between |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for attack in ATTACKS:
        for setup, _, _ in SETUPS:
            row = results["attacks"][attack.label][setup]
            unanswered = f" ({row['unanswered']} unanswered)" if row["unanswered"] else ""
            how = ", ".join(f"{count} by {way}" for way, count in sorted(row["cut_by"].items()))
            cut = f"{row['cut']} of {row['count']}" + (f" ({how})" if how else "")
            between = (
                f"{row['cut_first_s']:.1f} and {row['cut_last_s']:.1f} s" if row["cut"] else "-"
            )
            lines.append(
                f"| {attack.label} | {setup} | {row['median']:.3f} s | {row['max']:.3f} s"
                f"{unanswered} | {cut} | {between} |"
            )
    return lines


def throughput_lines(results: dict) -> list[str]:
    """The normal path's requests/s, in Markdown."""
    lines = [
        "",
        f"The normal path, {THROUGHPUT_CONNECTIONS} connections (wrk), /predict with a small PNG, "
        f"{THROUGHPUT_SLICES} slices of {THROUGHPUT_SLICE_SECONDS:g} s per worker class "
        "alternating (requests/s, mean of the slices, and the slices' range):",
        "",
        "| connections | gthread's worker | the service's worker |",
        "| --- | --- | --- |",
    ]
    for mode, by_class in results["normal_path"].items():
        cells = [
            f"{statistics.mean(v):,.0f} ({min(v):,.0f} to {max(v):,.0f})" for v in by_class.values()
        ]
        lines.append(f"| {mode} | " + " | ".join(cells) + " |")
    return lines


def write(results: dict) -> None:
    """Write the JSON, and the table between the markers of docs/security.md."""
    JSON_OUT.write_text(json.dumps(results, indent=2) + "\n")
    loads = [
        row[key]
        for by_setup in results["attacks"].values()
        for row in by_setup.values()
        for key in ("load_before", "load_after")
    ]
    body = [
        BEGIN,
        "",
        f"Measured by `make bench-slow` on {results['date']}, {os.cpu_count()} cores; each attack "
        f"lasts {HOLD:g} s against a fresh server (the shipped model, 2 workers x 16 threads); "
        f"{PROBES} probes (`POST /predict`, each on a new connection) start {PROBE_SPACING:g} s "
        f"apart from {PROBE_START:g} s in; an unanswered probe counts as {PROBE_TIMEOUT:g} s. "
        f"The machine's load average ranged from {min(loads):.2f} to {max(loads):.2f} "
        "over the attacks (docs/slow-clients.json has every probe).",
        "",
        *table(results),
        *throughput_lines(results),
        "",
        END,
    ]
    text = DOC.read_text()
    start, end = text.index(BEGIN), text.index(END) + len(END)
    DOC.write_text(text[:start] + "\n".join(body) + text[end:])


def main() -> None:
    nginx = shutil.which("nginx")
    if nginx is None or shutil.which("wrk") is None:
        sys.exit("make bench-slow needs nginx and wrk: apt-get install nginx wrk")
    results: dict = {"date": time.strftime("%Y-%m-%d"), "hold_s": HOLD, "attacks": {}}
    with tempfile.TemporaryDirectory(prefix="bench-slow-") as scratch:
        for attack in ATTACKS:
            for setup, env, front in SETUPS:
                progress(f"{attack.label}, {setup}")
                folder = Path(tempfile.mkdtemp(dir=scratch))
                row = run_attack(attack, env, nginx if front else None, folder)
                results["attacks"].setdefault(attack.label, {})[setup] = row
                progress(
                    f"  probes median {row['median']:.3f} s, max {row['max']:.3f} s; "
                    f"{row['cut']} of {row['count']} cut"
                )
        progress("normal path")
        results["normal_path"] = normal_path(Path(scratch))
    write(results)
    progress(f"wrote {JSON_OUT} and {DOC}")


if __name__ == "__main__":
    main()
