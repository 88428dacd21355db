"""The slowest and the most memory-hungry image of each accepted format, with and without the
decoding budget (service/io/decode_budget.py).

Each family of costly files in tests/hostile.py takes one number: a side in pixels, or a count
of scans, markers, chunks, sub-blocks, strips, entries or stray bytes. For each family the
search measures, with the budget switched off, its largest member within the body and pixel
limits; with the budget on, the largest member the budget accepts and the smallest it refuses,
found by bisection on the estimate alone (which decodes nothing). Every measurement is the
best of three fresh processes, each timing `decode_image` and `to_model_input` with the
settings' limits; memory is the growth of the process's peak resident set (VmHWM) over what
it was before decoding, with the file already read. The whole measurement runs twice, with the
load average beside each run. With --data-dir it also measures what decoding a large JPEG at a
half, a quarter or an eighth of its size does to the model input and the shipped model's
answers. Run with `make bench-decode`; it writes docs/decode-worst-case.json and the tables
of docs/security.md, "The decompression-bomb guard" and "The decoding budget".
"""

from __future__ import annotations

import argparse
import io
import json
import math
import os
import subprocess
import sys
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from harness import ROOT, hostile
from harness.images import encode, garment
from service.errors import ImageTooLarge, ServiceError
from service.io import decode_budget
from service.io.images import ALLOWED_FORMATS, decode_image
from service.io.preprocessing import to_model_input
from service.settings import Settings

LIMITS = Settings()
CASE_TIMEOUT = 120.0  # seconds a measurement may run before it is stopped and reported so
SLOW = 3.0  # seconds beyond which a case is measured once: repeats would tell nothing new
SIDES = (250, 500, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 4500, 5000)
JSON_PATH = ROOT / "docs" / "decode-worst-case.json"
SECURITY_PATH = ROOT / "docs" / "security.md"
TABLE_BEGIN = "<!-- decode-worst-case: begin (written by benchmarks/decode_worst_case.py) -->"
TABLE_END = "<!-- decode-worst-case: end -->"
DRAFT_BEGIN = "<!-- decode-draft: begin (written by benchmarks/decode_worst_case.py --data-dir) -->"
DRAFT_END = "<!-- decode-draft: end -->"
DRAFT_SCALES = (2, 4, 8)
# Scale and padding of the draft measurement's photos: 4,000 to 5,000 pixels a side, within
# 25 megapixels, the garment filling most of the photo or a small part of its width.
DRAFT_LAYOUTS = (
    (160, (40, 40)),
    (150, (240, 40)),
    (150, (40, 200)),
    (140, (600, 80)),
)


@dataclass(frozen=True)
class Family:
    """Costly files of one kind, from the cheapest to the dearest."""

    format: str
    name: str
    build: Callable[[int], bytes]
    values: Sequence[int]
    unit: str = "px side"

    def member(self, value: int) -> str:
        """Name one member of the family."""
        return f"{self.name}, {value:,} {self.unit}"


def png(depth: int, colour: int, interlaced: bool = False) -> Callable[[int], bytes]:
    """Square PNGs of one depth and colour type."""
    return lambda side: hostile.png_image(side, side, depth, colour, interlaced)


def photo(fmt: str, mode: str = "RGB", noise: int = 24, **options) -> Callable[[int], bytes]:
    """Square photo-like images, encoded by Pillow."""
    return lambda side: encode(hostile.noisy_photo(side, side, mode, noise), fmt, **options)


WIDE = {"I": np.int32, "F": np.float32, "I;16": np.uint16}  # modes made from arrays


def tiff(mode: str, compression: str = "tiff_deflate") -> Callable[[int], bytes]:
    """Square smooth TIFFs of one mode."""

    def build(side: int) -> bytes:
        image = hostile.noisy_photo(side, side, "L", noise=0)
        if mode in WIDE:
            image = Image.fromarray(np.asarray(image).astype(WIDE[mode]) * 200)
        return encode(image.convert(mode), "TIFF", compression=compression)

    return build


def ztxt_bombs(count: int) -> bytes:
    """A small PNG with `count` compressed text chunks that inflate to Pillow's 1 MiB cap."""
    bomb = zlib.compress(b"a" * ((1 << 20) - 2), 9)  # just within the cap
    chunks = hostile.png_chunk(b"zTXt", b"k\x00\x00" + bomb) * count
    return hostile.png_image(28, 28, before=chunks)


def bmp_pairs(count: int) -> bytes:
    """An RLE8 BMP of `count` one-pixel runs: one Python step each in Pillow's decoder."""
    side = max(1, math.isqrt(count) + 1)
    return hostile.bmp_rle(side, side, b"\x01\x80" * count + b"\x00\x01")


COUNTS = (10, 100, 1_000, 4_000, 10_000, 30_000, 100_000, 300_000, 1_000_000)


def families() -> list[Family]:
    """Every family the search walks, by format."""
    chunk = hostile.png_chunk
    return [
        Family("PNG", "grey 8-bit", png(8, 0), SIDES),
        Family("PNG", "grey 8-bit interlaced", png(8, 0, True), SIDES),
        Family("PNG", "RGB 8-bit", png(8, 2), SIDES),
        Family("PNG", "RGB 8-bit interlaced", png(8, 2, True), SIDES),
        Family("PNG", "RGBA 8-bit", png(8, 6), SIDES),
        Family("PNG", "RGBA 8-bit interlaced", png(8, 6, True), SIDES),
        Family("PNG", "grey 16-bit", png(16, 0), SIDES),
        Family("PNG", "RGB 16-bit", png(16, 2), SIDES),
        Family("PNG", "RGBA 16-bit", png(16, 6), SIDES),
        Family("PNG", "RGBA 16-bit interlaced", png(16, 6, True), SIDES),
        Family("PNG", "grey and alpha 16-bit", png(16, 4), SIDES),
        Family("PNG", "palette with transparency", png(8, 3), SIDES),
        Family("PNG", "palette with transparency interlaced", png(8, 3, True), SIDES),
        Family("PNG", "1-bit", png(1, 0), SIDES),
        Family(
            "PNG",
            "empty private chunks before the image data",
            lambda n: hostile.png_image(28, 28, before=chunk(b"prIv", b"") * n),
            COUNTS,
            "chunks",
        ),
        Family(
            "PNG",
            "empty private chunks after the image data",
            lambda n: hostile.png_image(28, 28, after=chunk(b"prIv", b"") * n),
            COUNTS,
            "chunks",
        ),
        Family(
            "PNG",
            "image data in 1-byte chunks",
            lambda n: hostile.png_image(28, 28, idat_size=1, after=chunk(b"IDAT", b"") * n),
            COUNTS,
            "extra empty chunks",
        ),
        Family(
            "PNG",
            "text chunks",
            lambda n: hostile.png_image(28, 28, before=chunk(b"tEXt", b"k\x00v") * n),
            COUNTS,
            "chunks",
        ),
        Family("PNG", "compressed text of 1 MiB", ztxt_bombs, (1, 4, 16, 32, 60), "chunks"),
        Family(
            "PNG",
            "EXIF entries, orientation 6",
            lambda n: hostile.png_image(28, 28, before=chunk(b"eXIf", hostile.exif_entries(n))),
            (10, 100, 1_000, 4_000, 16_000, 65_535),
            "entries",
        ),
        Family("JPEG", "baseline 4:2:0 photo", photo("JPEG", quality=90), SIDES),
        Family("JPEG", "baseline 4:4:4 photo", photo("JPEG", quality=90, subsampling=0), SIDES),
        Family("JPEG", "baseline grey photo", photo("JPEG", "L", quality=95), SIDES),
        Family("JPEG", "baseline CMYK photo", photo("JPEG", "CMYK", quality=90), SIDES),
        Family(
            "JPEG",
            "restart marker every block",
            photo("JPEG", quality=90, restart_marker_blocks=1),
            SIDES,
        ),
        Family(
            "JPEG", "progressive 4:2:0 photo", photo("JPEG", quality=90, progressive=True), SIDES
        ),
        Family(
            "JPEG",
            "progressive 4:4:4 photo",
            photo("JPEG", quality=90, progressive=True, subsampling=0),
            SIDES,
        ),
        Family(
            "JPEG",
            "progressive CMYK photo",
            photo("JPEG", "CMYK", quality=90, progressive=True),
            SIDES,
        ),
        Family(
            "JPEG",
            "last scan repeated, 5000x5000",
            lambda n: hostile.jpeg_repeated_scan(5000, 5000, n),
            (0, 5, 10, 20, 50, 100, 300, 1_000, 2_400),
            "repeats",
        ),
        Family(
            "JPEG",
            "last scan repeated, 64x64",
            lambda n: hostile.jpeg_repeated_scan(64, 64, n),
            (10, 100, 1_000, 4_000, 16_000, 64_000, 200_000),
            "repeats",
        ),
        Family(
            "JPEG",
            "empty comment markers",
            lambda n: hostile.jpeg_padded(markers=n),
            COUNTS[:-1] + (2_500_000,),
            "markers",
        ),
        Family(
            "JPEG",
            "junk bytes between markers",
            lambda n: hostile.jpeg_padded(junk=n),
            COUNTS + (10_000_000,),
            "bytes",
        ),
        Family(
            "JPEG",
            "fill bytes before a marker",
            lambda n: hostile.jpeg_padded(fill=n),
            COUNTS + (10_000_000,),
            "bytes",
        ),
        Family("GIF", "photo", lambda side: hostile.gif_image(side, side), SIDES),
        Family("GIF", "photo interlaced", lambda s: hostile.gif_image(s, s, True), SIDES),
        Family(
            "GIF",
            "image data in 1-byte sub-blocks",
            lambda side: hostile.gif_split_blocks(side, side),
            SIDES[:6],
        ),
        Family(
            "GIF",
            "comment in 1-byte sub-blocks",
            hostile.gif_comment,
            COUNTS + (5_000_000,),
            "sub-blocks",
        ),
        Family("GIF", "stray bytes", hostile.gif_stray_bytes, COUNTS + (10_000_000,), "bytes"),
        Family(
            "GIF",
            "frames of 8x8",
            lambda n: hostile.gif((8, 8), [(0, 0, 8, 8)] * n),
            (2, 100, 10_000, 500_000),
            "frames",
        ),
        Family(
            "BMP",
            "1-bit",
            lambda s: encode(hostile.noisy_photo(s, s, "L").convert("1"), "BMP"),
            SIDES,
        ),
        Family("BMP", "8-bit grey", photo("BMP", "L"), SIDES),
        Family("BMP", "24-bit RGB", photo("BMP"), SIDES),
        Family("BMP", "32-bit RGBA", photo("BMP", "RGBA"), SIDES),
        Family("BMP", "RLE8 full runs", lambda s: hostile.bmp_rle_runs(s, s), SIDES),
        Family("BMP", "RLE4 full runs", lambda s: hostile.bmp_rle_runs(s, s, True), SIDES),
        Family("BMP", "RLE8 line ends", lambda s: hostile.bmp_rle_line_ends(s, s), SIDES),
        Family("BMP", "RLE8 one-pixel runs", bmp_pairs, COUNTS + (5_000_000,), "runs"),
        Family("TIFF", "grey", tiff("L"), SIDES),
        Family("TIFF", "RGB", tiff("RGB"), SIDES),
        Family("TIFF", "RGBA", tiff("RGBA"), SIDES),
        Family("TIFF", "CMYK", tiff("CMYK"), SIDES),
        Family("TIFF", "16-bit grey", tiff("I;16"), SIDES),
        Family("TIFF", "32-bit integer", tiff("I"), SIDES),
        Family("TIFF", "32-bit float", tiff("F"), SIDES),
        Family("TIFF", "1-bit", tiff("1", compression="group4"), SIDES),
        Family("TIFF", "RGB JPEG-compressed", tiff("RGB", compression="jpeg"), SIDES),
        Family(
            "TIFF",
            "strips of one row, 28x28",
            lambda n: hostile.tiff_strips(28, 28, n),
            COUNTS + (1_300_000,),
            "strips",
        ),
        Family(
            "TIFF",
            "IFD entries, orientation 6",
            hostile.tiff_many_entries,
            (100, 1_000, 4_000, 16_000, 40_000),
            "entries",
        ),
        Family("WEBP", "lossy photo", photo("WEBP", quality=90, method=0), SIDES),
        Family(
            "WEBP", "lossy photo with alpha", photo("WEBP", "RGBA", quality=90, method=0), SIDES
        ),
        Family("WEBP", "lossless", photo("WEBP", noise=0, lossless=True, method=0), SIDES),
        Family(
            "WEBP",
            "lossless with alpha",
            photo("WEBP", "RGBA", noise=0, lossless=True, method=0),
            SIDES,
        ),
        Family("WEBP", "unknown chunks", hostile.webp_with_chunks, COUNTS + (1_200_000,), "chunks"),
        Family(
            "WEBP",
            "EXIF entries, orientation 6",
            lambda n: encode(garment(), "WEBP", lossless=True, exif=hostile.exif_entries(n)),
            (10, 1_000, 16_000, 65_535),
            "entries",
        ),
    ]


# The two cases of issue 25, measured by themselves before and after.
NAMED = {
    "progressive JPEG, 5000x5000, last scan repeated 2,400 times": lambda: (
        hostile.jpeg_repeated_scan(5000, 5000, 2_400)
    ),
    "TIFF, 28x28, 1,300,000 strips": lambda: hostile.tiff_strips(28, 28, 1_300_000),
}


@dataclass
class Case:
    """One file the search measures, with the budget on or off."""

    format: str
    family: str
    value: int
    member: str
    path: Path
    budget: bool


def main() -> None:
    """Search every family, measure the cases twice, and write the results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--no-budget", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--rounds", type=int, default=2, help="times to measure every case (0: none)"
    )
    parser.add_argument(
        "--repeat", type=int, default=3, help="fresh processes per case and round (best kept)"
    )
    parser.add_argument("--only", default="", help="only families whose name has this text")
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="Fashion-MNIST files: also measure what decoding a JPEG smaller does to the model",
    )
    parser.add_argument("--draft-images", type=int, default=100, help="photos for --data-dir")
    parser.add_argument("--no-write", action="store_true", help="print, write no docs")
    parser.add_argument(
        "--from-json", action="store_true", help="only write the table again from the JSON"
    )
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure.read_bytes(), not args.no_budget)))
        return
    if args.from_json:
        write_table(json.loads(JSON_PATH.read_text()))
        return
    if args.data_dir:
        drafts = draft_change(args.data_dir, args.draft_images)
        if not args.no_write:
            write_block(DRAFT_BEGIN, DRAFT_END, render_drafts(drafts))
    if args.rounds < 1:
        return
    with tempfile.TemporaryDirectory(prefix="decode-worst-") as folder:
        cases = []
        for family in families():
            if args.only in f"{family.format} {family.name}":
                cases += search(family, Path(folder))
        for name, build in NAMED.items():
            if args.only in f"named {name}":
                path = Path(folder) / f"named-{len(cases)}"
                path.write_bytes(build())
                cases += [Case("named", name, 0, name, path, budget) for budget in (False, True)]
        rounds = [run_round(cases, number + 1, args.repeat) for number in range(args.rounds)]
    results = {"budget": decode_budget.DECODE_BUDGET, "rounds": rounds}
    for number, measured in enumerate(rounds, 1):
        for c in measured["cases"]:
            units = c["estimate"] / 1e6 if isinstance(c["estimate"], int) else math.inf
            print(
                f"{number} {'on ' if c['budget'] else 'off'} {c['seconds'] or 0:8.3f} s "
                f"{c['peak_mib'] or 0:6.0f} MiB {units:9.0f} M  {c['outcome']:17s} "
                f"{c['bytes']:9,d} B {c['format']} {c['member']}"
            )
    if not args.no_write:
        JSON_PATH.write_text(json.dumps(results, indent=1) + "\n")
        write_table(results)


def measure(data: bytes, budget: bool) -> dict:
    """Decode and preprocess `data` as the service does; its time, peak memory and outcome.

    Without the budget, its two steps do nothing: decoding as it was before the budget.
    """
    if not budget:
        decode_budget.inspect = lambda data: decode_budget.Cost()
        decode_budget.check = lambda image, structure, budget=0: None
    peak_before = peak_resident_kib()
    started = time.perf_counter()
    outcome, detail = "accepted", ""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's warnings about odd files
            image = decode_image(
                data,
                LIMITS.max_pixels,
                LIMITS.max_aspect_ratio,
            )
            detail = f"{image.format} {image.mode} {image.width}x{image.height}"
            to_model_input(image)
    except ServiceError as error:
        outcome, detail = error.code, error.detail
    seconds = time.perf_counter() - started
    peak = peak_resident_kib()
    return {
        "outcome": outcome,
        "detail": detail,
        "seconds": round(seconds, 4),
        "peak_mib": round((peak - peak_before) / 1024, 1),
    }


def peak_resident_kib() -> int:
    """This process's peak resident set so far (VmHWM), in KiB.

    Not ru_maxrss: a child started by fork and exec inherits its parent's, which is the search
    process's, with every file it built.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise RuntimeError("no VmHWM in /proc/self/status")


def estimate(data: bytes) -> tuple[int, bool] | None:
    """The budget's estimate for `data` and whether it accepts it, decoding nothing.

    None when the file is outside the body or pixel limits, so not a member of the search.
    """
    if len(data) > LIMITS.max_body_bytes:
        return None
    try:
        structure = decode_budget.inspect(data)
    except ImageTooLarge:
        return math.inf, False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except Exception:  # noqa: BLE001 - refused for another reason, as cheaply
        return structure.units, structure.units <= decode_budget.DECODE_BUDGET
    if image.width * image.height > LIMITS.max_pixels:
        return None
    units = structure.plus(decode_budget.pixel_cost(image, structure.facts)).units
    try:
        decode_budget.check(image, structure)
    except ImageTooLarge:
        return units, False
    return units, True


def search(family: Family, folder: Path) -> list[Case]:
    """The family's largest member within the limits (budget off), and the largest member the
    budget accepts and the smallest it refuses (budget on)."""
    built: dict[int, tuple[Path, tuple[int, bool] | None]] = {}

    def build(index: int) -> tuple[Path, tuple[int, bool] | None]:
        if index not in built:
            data = family.build(family.values[index])
            path = folder / f"{family.format}-{len(list(folder.iterdir()))}"
            path.write_bytes(data)
            built[index] = path, estimate(data)
        return built[index]

    progress(f"searching {family.format} {family.name}")
    within = last_true(len(family.values), lambda i: build(i)[1] is not None)
    if within < 0:
        return []
    accepted = last_true(within + 1, lambda i: build(i)[1][1])
    chosen = [(within, False)] + [(accepted, True)] * (accepted >= 0)
    chosen += [(accepted + 1, True)] * (accepted < within)
    return [
        Case(
            family.format,
            family.name,
            family.values[i],
            family.member(family.values[i]),
            build(i)[0],
            budget,
        )
        for i, budget in chosen
    ]


def last_true(count: int, holds: Callable[[int], bool]) -> int:
    """The last index below `count` for which `holds` is true, when it is true up to a point
    and false after it; -1 when it holds for none."""
    low, high = -1, count  # holds(low) is true (or low is -1), holds(high) false (or count)
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if holds(middle) else (low, middle)
    return low


def run_round(cases: list[Case], number: int, repeat: int) -> dict:
    """Measure every case, each the best of `repeat` fresh processes (one, for a case slower
    than SLOW); the load average before and after."""
    load_before = os.getloadavg()
    measured = []
    for case in cases:
        progress(f"round {number}: {case.member} (budget {'on' if case.budget else 'off'})")
        row = run_child(case)
        for _ in range(repeat - 1):
            if row["seconds"] is None or row["seconds"] > SLOW:
                break
            again = run_child(case)
            row["seconds"] = min(row["seconds"], again["seconds"] or math.inf)
            row["peak_mib"] = max(row["peak_mib"] or 0, again["peak_mib"] or 0)
        data = case.path.read_bytes()
        units = (estimate(data) or (math.inf,))[0]
        row.update(
            format=case.format,
            family=case.family,
            value=case.value,
            member=case.member,
            budget=case.budget,
            bytes=len(data),
            estimate=units if math.isfinite(units) else None,  # None: over a walk's cap
        )
        measured.append(row)
    return {"load_before": load_before, "load_after": os.getloadavg(), "cases": measured}


def run_child(case: Case) -> dict:
    """Measure one case in a fresh interpreter, stopped after CASE_TIMEOUT seconds."""
    command = [sys.executable, "-m", "benchmarks.decode_worst_case", "--measure", str(case.path)]
    command += [] if case.budget else ["--no-budget"]
    try:
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=CASE_TIMEOUT, cwd=ROOT, check=False
        )
    except subprocess.TimeoutExpired:
        return {"outcome": "stopped", "detail": "", "seconds": CASE_TIMEOUT, "peak_mib": None}
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or [""]
        return {"outcome": "crashed", "detail": tail[0], "seconds": None, "peak_mib": None}
    return json.loads(done.stdout.strip().splitlines()[-1])


def progress(message: str) -> None:
    """One line of progress on stderr."""
    print(message, file=sys.stderr, flush=True)


FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")


def write_table(results: dict) -> None:
    """Put the worst cases, beside the budget, between their markers in docs/security.md."""
    write_block(TABLE_BEGIN, TABLE_END, render(results))


def write_block(begin_marker: str, end_marker: str, block: str) -> None:
    """Replace what lies between two markers in docs/security.md, and nothing else."""
    text = SECURITY_PATH.read_text()
    begin, end = text.index(begin_marker) + len(begin_marker), text.index(end_marker)
    SECURITY_PATH.write_text(text[:begin] + "\n" + block + text[end:])


def draft_change(data_dir: Path, count: int) -> dict:
    """What decoding a large JPEG at a half, a quarter or an eighth of its size does to the
    model input and to the shipped model's answer, against decoding it whole.

    The photos are the first `count` test images drawn as catalogue photos (tests.images) in
    the layouts of DRAFT_LAYOUTS, half of them progressive, all JPEG quality 90.
    """
    # Imported here: the processes that measure one file each need none of them.
    from harness.images import catalogue_photo
    from service.inference.model import load_version
    from training.data import load_split

    test = load_split(
        data_dir / "t10k-images-idx3-ubyte.gz", data_dir / "t10k-labels-idx1-ubyte.gz"
    )
    model = load_version(ROOT / "models" / "fashion_mnist", 1)
    inputs: dict[int, list[np.ndarray]] = {scale: [] for scale in (1, *DRAFT_SCALES)}
    sides = []
    for index in range(count):
        progress(f"draft: photo {index + 1} of {count}")
        scale, pad = DRAFT_LAYOUTS[index % len(DRAFT_LAYOUTS)]
        photo = catalogue_photo(test.images[index], scale=scale, pad=pad)
        sides += photo.size
        data = encode(photo, "JPEG", quality=90, progressive=bool(index % 2))
        for factor in inputs:
            image = Image.open(io.BytesIO(data))
            if factor > 1:
                image.draft(image.mode, (image.width // factor, image.height // factor))
            inputs[factor].append(to_model_input(image))
    whole = np.stack(inputs[1])
    answers = model.predict(whole).argmax(axis=1)
    labels = test.labels[:count]
    rows = {}
    for factor in DRAFT_SCALES:
        drafted = np.stack(inputs[factor])
        moved = np.abs(drafted.astype(int) - whole)
        drafted_answers = model.predict(drafted).argmax(axis=1)
        rows[factor] = {
            "max_level_change": int(moved.max()),
            "mean_level_change": round(float(moved.mean()), 3),
            "changed_answers": int((drafted_answers != answers).sum()),
            "accuracy": round(float((drafted_answers == labels).mean()), 4),
        }
    return {
        "photos": count,
        "side": [min(sides), max(sides)],
        "accuracy_whole": round(float((answers == labels).mean()), 4),
        "scales": rows,
    }


def render_drafts(drafts: dict) -> str:
    """One sentence per scale: how far the model input moved, and the answers that changed."""
    parts = [
        f"1/{factor}: at most {row['max_level_change']} grey levels "
        f"(mean {row['mean_level_change']}), {row['changed_answers']} answers changed, "
        f"accuracy {row['accuracy']}"
        for factor, row in drafts["scales"].items()
    ]
    low, high = drafts["side"]
    return (
        f"On {drafts['photos']} catalogue photos of Fashion-MNIST test images, {low:,} to "
        f"{high:,} pixels a side (accuracy {drafts['accuracy_whole']} decoded whole), the model "
        "input decoded at " + "; ".join(parts) + ".\n"
    )


def render(results: dict) -> str:
    """The Markdown: worst time and memory per format, the issue's two cases, the limits."""
    rounds = results["rounds"]
    lines = [
        f"Budget: {results['budget']:,} cost units. Each cell: the case, then its time in each "
        "run, the best of three fresh processes (or its peak memory, the larger of the runs'); "
        "*accepted* cases were decoded and preprocessed, the others refused, most with 413 "
        "`image_too_large`.",
        "",
        "| format | slowest without the budget | most memory without | slowest with the budget "
        "| most memory with |",
        "| --- | --- | --- | --- | --- |",
    ]
    for fmt in FORMATS:
        cells = []
        for budget in (False, True):
            rows = [[c for c in r["cases"] if c["format"] == fmt and c["budget"] == budget]
                    for r in rounds]  # fmt: skip
            if not rows[0]:
                cells += ["", ""]
                continue
            slowest = max(rows[0], key=lambda c: c["seconds"] or 0)
            hungriest = max(rows[0], key=lambda c: c["peak_mib"] or 0)
            cells.append(f"{slowest['member']} ({outcome(slowest)}): {times(rows, slowest)}")
            cells.append(f"{hungriest['member']}: {memory(rows, hungriest)}")
        lines.append(f"| {fmt} | " + " | ".join(cells) + " |")
    lines += ["", "| issue 25's case | without the budget | with it |", "| --- | --- | --- |"]
    for name in NAMED:
        cells = []
        for budget in (False, True):
            rows = [[c for c in r["cases"] if c["member"] == name and c["budget"] == budget]
                    for r in rounds]  # fmt: skip
            if rows[0]:
                case = rows[0][0]
                cells.append(f"{outcome(case)}: {times(rows, case)}, {memory(rows, case)}")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", limits_sentence(rounds), ""]
    lines += [
        "Load average (1 minute) before and after each run: "
        + "; ".join(f"{r['load_before'][0]:.1f} to {r['load_after'][0]:.1f}" for r in rounds)
        + ".",
        "",
    ]
    return "\n".join(lines)


def limits_sentence(rounds: list[dict]) -> str:
    """Which squares the budget refuses, and which families it leaves to the other limits."""
    by_family: dict[tuple[str, str], dict[str, int]] = {}
    for case in (c for r in rounds for c in r["cases"] if c["budget"]):
        if case["member"].endswith("px side"):
            sides = by_family.setdefault((case["format"], case["family"]), {})
            kind = "refused" if outcome(case) == "refused" else "accepted"
            sides[kind] = max(sides.get(kind, 0), case["value"])
    refused = [
        f"{fmt} {family} {sides['accepted']:,}"
        for (fmt, family), sides in sorted(by_family.items())
        if "refused" in sides and "accepted" in sides
    ]
    whole = [f"{fmt} {family} ({sides['accepted']:,})" for (fmt, family), sides in
             sorted(by_family.items()) if "refused" not in sides]  # fmt: skip
    return (
        "The largest square the budget accepts where it refuses a larger one, among the sides "
        f"tried ({', '.join(f'{side:,}' for side in SIDES)}): {'; '.join(refused)}. "
        "Accepted up to the pixel limit, or to the body limit for files that grow with their "
        f"noise (the largest side within it in brackets): {'; '.join(whole)}."
    )


def outcome(case: dict) -> str:
    """Accepted, refused by the budget or a limit, or another answer, in a word or two."""
    code = case["outcome"]
    if code in ("accepted", "unusable_image", "corrupt_image"):
        return "accepted" if code == "accepted" else code.replace("_", " ")
    return "refused" if code == "image_too_large" else code


def times(rows: list[list[dict]], case: dict) -> str:
    """The case's time in each run."""
    found = [next((c for c in r if c["member"] == case["member"]), None) for r in rows]
    shown = [seconds(c["seconds"], c["outcome"]) for c in found if c]
    return " / ".join(shown)


def seconds(value: float | None, code: str) -> str:
    """A time to two significant places, or why there is none."""
    if code == "stopped":
        return f"over {CASE_TIMEOUT:.0f} s (stopped)"
    if value is None:
        return code
    return f"{value:.2g} s" if value >= 0.01 else f"{value * 1000:.2g} ms"


def memory(rows: list[list[dict]], case: dict) -> str:
    """The case's larger peak memory of the runs."""
    found = [next((c for c in r if c["member"] == case["member"]), None) for r in rows]
    peaks = [c["peak_mib"] for c in found if c and c["peak_mib"] is not None]
    return f"{max(peaks):,.0f} MiB" if peaks else "unknown"


if __name__ == "__main__":
    main()
