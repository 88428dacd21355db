"""The Markdown of docs/benchmarks.md, from the results benchmarks/load.py measured (a
recorded docs/benchmarks.json re-renders with `write(json.loads(...), Path("docs"))`)."""

from __future__ import annotations

import json
from pathlib import Path

from benchmarks import gil_profile
from benchmarks.phases import SERVERS, SHARED_SOCKET, SWEEP, WITHOUT
from benchmarks.wrk import progress
from harness import ROOT


def write(results: dict, output: Path) -> None:
    """Write the JSON and Markdown reports (`python -c` can re-render a recorded JSON)."""
    output.mkdir(exist_ok=True)
    (output / "benchmarks.json").write_text(json.dumps(results, indent=2) + "\n")
    (output / "benchmarks.md").write_text(markdown(results))
    progress(f"wrote {output / 'benchmarks.md'}")


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
    return "\n".join(
        lines + against_targets(results) + image_section() + grpc_section() + profile_section()
    )


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
    recorded = ROOT / "docs" / "profile.json"
    if not recorded.exists():
        return []
    return ["", gil_profile.markdown(json.loads(recorded.read_text()))]


def image_section() -> list[str]:
    """The section "The image" that benchmarks/image.py last wrote (docs/image.json), if any."""
    recorded = ROOT / "docs" / "image.json"
    if not recorded.exists():
        return []
    from benchmarks import image  # podman's helpers, only when there is a recorded image

    return ["", image.markdown(json.loads(recorded.read_text())).rstrip("\n")]


def grpc_section() -> list[str]:
    """The section "gRPC and REST" that benchmarks/grpc_load.py last wrote (docs/grpc.json),
    if any."""
    recorded = ROOT / "docs" / "grpc.json"
    if not recorded.exists():
        return []
    from benchmarks import grpc_load  # the gRPC clients' modules, only when there is a record

    return ["", grpc_load.markdown(json.loads(recorded.read_text())).rstrip("\n")]
