"""Two model versions side by side: CPU per image in each runtime, measured interleaved.

A new shipped version may cost no more CPU per image than the one it replaces (issue 29). For
each round, runtime and batch size, both versions are called in-process on one thread, one
after the other in alternating order, each for `--seconds`; the report gives each version's
median over the rounds and the new one's ratio to the old.

    python -m benchmarks.model_versions models/fashion_mnist/2 models/fashion_mnist/3

A version that left `models/` is taken from git: `git worktree add /tmp/old <commit>`, then its
folder. Writes docs/model-versions.json and docs/model-versions.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from benchmarks.model_alone import MODEL_BATCHES, measure
from benchmarks.wrk import progress
from harness import ROOT


def compare(old: Path, new: Path, rounds: int, seconds: float) -> dict:
    """Each version's CPU ms per image and images/s per runtime and batch, every round."""
    from service.inference.model import load_folder
    from service.inference.runtime import RUNTIMES

    folders = {"old": old, "new": new}
    metadata = {side: json.loads((f / "metadata.json").read_text()) for side, f in folders.items()}
    results: dict = {
        "versions": {
            side: {
                "folder": str(folder),
                "multiply_adds": metadata[side].get("multiply_adds"),
                "test_accuracy": metadata[side]["metrics"]["accuracy"],
            }
            for side, folder in folders.items()
        },
        "rounds": [],
    }
    for runtime in RUNTIMES:
        models = {
            side: load_folder(folder, int(folder.name), runtime) for side, folder in folders.items()
        }
        for round_number in range(rounds):
            order = ("old", "new") if round_number % 2 == 0 else ("new", "old")
            for batch in MODEL_BATCHES:
                for side in order:
                    row = measure(models[side], batch, seconds)
                    results["rounds"].append(
                        {
                            "round": round_number + 1,
                            "runtime": runtime,
                            "batch": batch,
                            "version": side,
                            **row,
                        }
                    )
                    progress(
                        f"round {round_number + 1}, {runtime}, batch {batch}, {side}: "
                        f"{row['cpu_ms_per_image']:.3f} CPU ms per image"
                    )
    return results


def medians(results: dict) -> list[dict]:
    """Per runtime and batch: each version's median CPU ms per image and the new/old ratio."""
    table = []
    keys = sorted({(r["runtime"], r["batch"]) for r in results["rounds"]})
    for runtime, batch in keys:
        cpu = {
            side: statistics.median(
                r["cpu_ms_per_image"]
                for r in results["rounds"]
                if (r["runtime"], r["batch"], r["version"]) == (runtime, batch, side)
            )
            for side in ("old", "new")
        }
        table.append(
            {
                "runtime": runtime,
                "batch": batch,
                "old": cpu["old"],
                "new": cpu["new"],
                "ratio": round(cpu["new"] / cpu["old"], 3),
            }
        )
    return table


def markdown(results: dict, table: list[dict], command: str) -> str:
    """docs/model-versions.md."""
    versions = results["versions"]
    lines = [
        "# Two model versions side by side",
        "",
        f"`{command}`: each runtime's CPU milliseconds per image, one thread in-process, "
        "random images; the median of the rounds, each round calling both versions one after "
        "the other in alternating order.",
        "",
        "| version | folder | multiply-adds per image | test accuracy |",
        "| --- | --- | ---: | ---: |",
    ]
    for side in ("old", "new"):
        v = versions[side]
        adds = f"{v['multiply_adds']:,}" if v["multiply_adds"] else "not recorded"
        lines.append(f"| {side} | `{v['folder']}` | {adds} | {v['test_accuracy']:.4f} |")
    lines += [
        "",
        "| runtime | batch | old CPU ms per image | new CPU ms per image | new / old |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    lines += [
        f"| {r['runtime']} | {r['batch']} | {r['old']:.3f} | {r['new']:.3f} | {r['ratio']:.2f} |"
        for r in table
    ]
    return "\n".join(lines) + "\n"


def main() -> None:
    """Measure, then write docs/model-versions.json and .md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old", type=Path, help="the version folder replaced")
    parser.add_argument("new", type=Path, help="the version folder replacing it")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=1.5)
    args = parser.parse_args()
    results = compare(args.old, args.new, args.rounds, args.seconds)
    table = medians(results)
    command = f"python -m benchmarks.model_versions {args.old} {args.new} --rounds {args.rounds}"
    (ROOT / "docs" / "model-versions.json").write_text(
        json.dumps({**results, "medians": table}, indent=1) + "\n"
    )
    (ROOT / "docs" / "model-versions.md").write_text(markdown(results, table, command))
    progress("wrote docs/model-versions.md")


if __name__ == "__main__":
    main()
