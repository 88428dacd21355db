"""The decoding budget: what decoding and preprocessing an upload would cost, known before it
is spent.

FMNIST_MAX_PIXELS and FMNIST_MAX_BODY_BYTES bound an image's size, not the work it takes: a
progressive JPEG may repeat a scan thousands of times, a TIFF may list a million strips, a GIF
may cut itself into millions of one-byte blocks, and Pillow walks several of these structures
in Python. `inspect` reads the structures Pillow's parsers loop over, with byte scans and a
few header reads, before `Image.open`; `check` adds what the pixels will cost once the header
has given the size and mode, before any pixel is decoded. An image whose estimate is over
DECODE_BUDGET is refused with 413 image_too_large, except that a large JPEG is first decoded
at a half or a quarter of its size (libjpeg's DCT scaling) when that fits.

A cost unit is about a nanosecond of one core of the machine that calibrated the weights
below; docs/security.md, "The decoding budget", has the model, how it was calibrated and the
worst cases it bounds (benchmarks/decode_worst_case.py measures them).
"""

from __future__ import annotations

import re
import struct
import zlib
from dataclasses import dataclass, field

import numpy as np
from PIL import Image, PngImagePlugin, TiffImagePlugin

from service.errors import ImageTooLarge

# Cost units per image: what fits the target time to decode and preprocess one image
# (docs/security.md, "The decoding budget", states the target and measures the worst cases).
DECODE_BUDGET = 700_000_000

# Preprocessing (service/io/preprocessing.py), per pixel, by the mode Pillow decodes to: modes
# with alpha are composited onto white as RGBA, 32-bit ones scaled in float32.
MODE_COST = {"1": 12, "L": 10, "P": 14, "RGB": 12, "YCbCr": 10, "LAB": 10, "CMYK": 16}
ALPHA_COST = 28  # RGBA, LA, PA and any mode with a transparency key: composited as RGBA
WIDE_COST = 28  # I and F: float32 scaling of 4-byte samples
HIGH_DEPTH_COST = 14  # I;16: one table lookup per pixel
OTHER_MODE_COST = 28  # any mode not named above: as costly as the dearest

# Decoding, by format.
COMPRESSED_BYTE = 4  # per byte of the file: inflating, LZW or sequential entropy decoding
PNG_RAW_BYTE = 3  # per byte of unfiltered scanlines
ADAM7_FACTOR = 1.5  # an interlaced PNG's seven passes, each spread over the image
PNG_CHUNK = 3_000  # per chunk: Pillow reads, checks and dispatches each one in Python
PNG_TEXT_INFLATE = 1_200_000  # per compressed text chunk: inflated up to Pillow's 1 MiB cap
EXIF_BYTE = 500  # per byte of EXIF: parsed entry by entry in Python to find the orientation
JPEG_BAND_PIXEL = 2  # per output pixel and band: inverse DCT, upsampling, colour conversion
JPEG_SCAN_PIXEL = 0.6  # per pixel and component of each scan: libjpeg visits every block
JPEG_PROGRESSIVE_BYTE = 30  # per byte of a progressive (or arithmetic) JPEG: entropy decoding
JPEG_SCAN = 3_000  # per scan: libjpeg's set-up of each
JPEG_MARKER = 2_500  # per marker: Pillow steps through the header's in Python
JPEG_JUNK_BYTE = 400  # per byte between header markers: Pillow skips them one by one
GIF_PIXEL = 6  # per pixel: LZW decoding into the palette image
GIF_BLOCK = 800  # per sub-block: Pillow steps through each in Python, twice before the image
GIF_STRAY_BYTE = 100  # per byte between blocks: Pillow skips them one by one
BMP_RLE_PIXEL = 120  # per pixel of an RLE bitmap: Pillow's RLE decoder is Python
BMP_RLE_BYTE = 250  # per byte of RLE data: one Python step for each pair
TIFF_SAMPLE_BYTE = 1  # per byte of decoded samples: libtiff's decompression and unpacking
TIFF_STRIP = 6_000  # per strip or tile: Pillow sets each up in Python
TIFF_ENTRY = 2_500  # per IFD entry: Pillow parses each IFD in Python, IFD0 three times
TIFF_VALUE = 60  # per number in an entry: unpacked into a Python tuple when read
WEBP_LOSSY_PIXEL = 28  # per pixel of a lossy WebP: libwebp's prediction and filtering
WEBP_LOSSLESS_PIXEL = 10  # per pixel of a lossless WebP
WEBP_ALPHA_PIXEL = 20  # per pixel of a lossy WebP's alpha plane, compressed losslessly

# Counts this module walks in Python itself, capped so that the walk stays cheap: far more
# than any encoder writes.
MAX_JPEG_MARKERS = 4_096
MAX_PNG_CHUNKS = 65_536
MAX_GIF_STEPS = 65_536
MAX_WEBP_CHUNKS = 4_096
MAX_EXIF_BYTES = 2 + 65_535 * 12  # an IFD of the most entries its 16-bit count allows
# Decoding smaller moves the model input a little more at each step (docs/security.md); past a
# quarter, the scans and the entropy decoding, which it does not shrink, are most of the cost.
JPEG_DRAFT_SCALES = (2, 4)
MIN_DRAFT_SIDE = 256  # a drafted JPEG's shorter side stays far above 28

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}
# A marker is 0xFF and a code, after any number of 0xFF fill bytes. In the header, any code;
# after a scan's header, the one that ends its entropy-coded data (not a stuffed 0xFF00, not
# RSTn). The fill bytes are left out of the patterns, so that the search stays a fast scan for
# one byte value; the match starts at the last 0xFF before the code.
JPEG_NEXT_MARKER = re.compile(rb"\xff[^\x00\xff]")
JPEG_SCAN_END = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD9)})  # markers without a length
# Frames whose entropy decoding is dearer per byte: progressive, arithmetic-coded or both.
JPEG_PROGRESSIVE = frozenset({0xC2, 0xC6, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})
GIF_FULL_BLOCKS = re.compile(rb"(?:\xff[\x00-\xff]{255})+")
GIF_NEXT_BLOCK = re.compile(rb"[\x21\x2c\x3b]")
RAW_PROFILE_EXIF = b"Raw profile type exif\x00"
# Pillow's TIFF signatures: classic and BigTIFF, in either byte order, and two invalid ones.
TIFF_PREFIXES = (
    b"MM\x00\x2a",
    b"II\x2a\x00",
    b"MM\x2a\x00",
    b"II\x00\x2a",
    b"MM\x00\x2b",
    b"II\x2b\x00",
)
TIFF_BYTE_TYPES = frozenset({1, 2, 6, 7})  # BYTE, ASCII, SBYTE, UNDEFINED: kept as bytes
TIFF_STRIP_TAGS = (273, 324)  # StripOffsets, TileOffsets
TIFF_SUB_IFDS = (34665, 34853)  # EXIF and GPS, which Pillow parses as it loads a TIFF


@dataclass
class Cost:
    """An estimate in cost units, and what each part of it pays for."""

    parts: list[tuple[int, str]] = field(default_factory=list)
    facts: dict[str, int] = field(default_factory=dict)

    @property
    def units(self) -> int:
        """The whole estimate."""
        return sum(units for units, _ in self.parts)

    def add(self, units: float, what: str) -> None:
        """Count `units` for `what`."""
        if units > 0:
            self.parts.append((round(units), what))

    def plus(self, other: Cost) -> Cost:
        """This estimate and another together."""
        return Cost(self.parts + other.parts, {**self.facts, **other.facts})

    def refusal(self, budget: float) -> ImageTooLarge:
        """The 413 answer for an estimate over `budget`, naming its dearest part."""
        _, what = max(self.parts)
        return ImageTooLarge(
            f"Decoding the image would cost {self.units / budget:.1f} times the decoding "
            f"budget, most of it for {what}."
        )


def over_cap(count: int, what: str) -> ImageTooLarge:
    """The 413 answer for a structure with more parts than this module walks."""
    return ImageTooLarge(f"The image has more than {count:,} {what}; no encoder writes as many.")


def inspect(data: bytes) -> Cost:
    """What Pillow's header parsing of `data` will cost, before Image.open runs it."""
    cost = Cost()
    if data.startswith(b"\xff\xd8\xff"):
        _jpeg_structure(data, cost)
    elif data.startswith(PNG_SIGNATURE):
        _png_structure(data, cost)
    elif data.startswith((b"GIF87a", b"GIF89a")):
        _gif_structure(data, cost)
    elif data[:4] in TIFF_PREFIXES:
        _tiff_structure(data, cost, big=data[2] == 0x2B)  # as Pillow tells BigTIFF apart
    elif data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        _webp_structure(data, cost)
    cost.facts["size"] = len(data)
    cost.add(len(data) * COMPRESSED_BYTE, f"{len(data):,} bytes of compressed data")
    return cost


def check(image: Image.Image, structure: Cost, budget: float = DECODE_BUDGET) -> None:
    """Refuse an opened image whose decoding would cost more than `budget`.

    A JPEG over it is decoded smaller instead (Image.draft), when a half or a quarter of its
    size fits and stays far above 28x28.
    """
    whole = structure.plus(pixel_cost(image, structure.facts))
    if whole.units <= budget:
        return
    if image.format in ("JPEG", "MPO"):
        for scale in JPEG_DRAFT_SCALES:
            if min(image.size) // scale < MIN_DRAFT_SIDE:
                break
            fits = structure.plus(pixel_cost(image, structure.facts, scale)).units <= budget
            if fits and image.draft(image.mode, (image.width // scale, image.height // scale)):
                return
    raise whole.refusal(budget)


def pixel_cost(image: Image.Image, facts: dict[str, int], scale: int = 1) -> Cost:
    """What decoding and preprocessing the pixels of an opened image will cost.

    `scale` is a JPEG's DCT scaling: its pixels shrink by scale squared, its scans do not.
    """
    cost = Cost()
    width, height = image.size
    pixels = width * height
    shown = f"{width}x{height} pixels"
    if scale > 1:
        pixels = -(-width // scale) * -(-height // scale)
        shown = f"{width}x{height} pixels decoded at 1/{scale}"
    cost.add(pixels * _mode_cost(image), f"preprocessing {shown} of mode {image.mode}")
    if image.format in ("JPEG", "MPO"):
        _jpeg_pixels(image, facts, pixels, cost)
    elif image.format == "PNG":
        raw_bytes = pixels * facts.get("png_bits_per_pixel", 64) / 8
        factor = ADAM7_FACTOR if facts.get("png_interlaced") else 1
        kind = "interlaced " if factor > 1 else ""
        cost.add(raw_bytes * PNG_RAW_BYTE * factor, f"{kind}PNG scanlines of {shown}")
    elif image.format == "GIF":
        cost.add(pixels * GIF_PIXEL, f"LZW decoding of {shown}")
    elif image.format == "BMP" and image.info.get("compression") in (1, 2):
        cost.add(pixels * BMP_RLE_PIXEL, f"Pillow's Python RLE decoding of {shown}")
        cost.add(facts.get("size", 0) * BMP_RLE_BYTE, "RLE data decoded in Python")
    elif image.format == "TIFF" and isinstance(image, TiffImagePlugin.TiffImageFile):
        _tiff_pixels(image, pixels, shown, cost)
    elif image.format == "WEBP":
        lossless = facts.get("webp_lossless", 0)
        weight = WEBP_LOSSLESS_PIXEL if lossless else WEBP_LOSSY_PIXEL
        weight += WEBP_ALPHA_PIXEL * facts.get("webp_alpha", 0)
        cost.add(pixels * weight, f"{'lossless' if lossless else 'lossy'} WebP of {shown}")
    return cost


def _mode_cost(image: Image.Image) -> int:
    """Preprocessing's cost per pixel for the image's mode."""
    mode = image.mode
    if mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        return ALPHA_COST
    if mode in ("I", "F"):
        return WIDE_COST
    if mode.startswith("I;16"):
        return HIGH_DEPTH_COST
    return MODE_COST.get(mode, OTHER_MODE_COST)


def _jpeg_structure(data: bytes, cost: Cost) -> None:
    """Count a JPEG's markers, the junk between its header's markers and its scans.

    Entropy-coded data is skipped with a regular expression; only markers take a Python step,
    and the walk stops at the first EOI (what follows, such as an MPF preview, is not decoded).
    """
    markers = junk = scans = components = progressive = 0
    pos, pattern, end = 2, JPEG_NEXT_MARKER, len(data)
    while found := pattern.search(data, pos):
        code = data[found.start() + 1]
        if pattern is JPEG_NEXT_MARKER:
            junk += found.start() - pos
        pos = found.end()
        markers += 1
        if markers > MAX_JPEG_MARKERS:
            raise over_cap(MAX_JPEG_MARKERS, "JPEG markers")
        if code == 0xD9:
            break
        if code in JPEG_STANDALONE or pos + 2 > end:
            continue
        if code in JPEG_PROGRESSIVE:
            progressive = 1
        if code == 0xDA:
            scans += 1
            components += min(data[pos + 2], 4) if pos + 2 < end else 1
            pattern = JPEG_SCAN_END
        pos += data[pos] << 8 | data[pos + 1]
    cost.facts.update(jpeg_scans=scans, jpeg_scan_components=components)
    if progressive:
        cost.add(end * JPEG_PROGRESSIVE_BYTE, f"{end:,} bytes of progressive JPEG")
    cost.add(markers * JPEG_MARKER, f"{markers:,} JPEG markers")
    cost.add(junk * JPEG_JUNK_BYTE, f"{junk:,} bytes of junk between JPEG markers")
    cost.add(scans * JPEG_SCAN, f"{scans:,} JPEG scans")


def _jpeg_pixels(image: Image.Image, facts: dict[str, int], pixels: int, cost: Cost) -> None:
    """A JPEG's inverse DCT and colour conversion per output pixel, and its scans' blocks."""
    bands = len(image.getbands())
    cost.add(pixels * bands * JPEG_BAND_PIXEL, f"{bands}-band JPEG output")
    scans, components = facts.get("jpeg_scans", 1), facts.get("jpeg_scan_components", bands)
    whole = image.width * image.height  # entropy decoding covers every block at any scale
    cost.add(
        whole * components * JPEG_SCAN_PIXEL,
        f"{scans:,} JPEG scans over {image.width}x{image.height} pixels",
    )


def _png_structure(data: bytes, cost: Cost) -> None:
    """Count a PNG's chunks, its compressed text and its EXIF; read its IHDR.

    A hex EXIF profile in a compressed text chunk is inflated to be measured, as far as Pillow
    would inflate it: no further than its limit on a PNG's text, over which it refuses the file.
    """
    pos, chunks, texts, exif, end = 8, 0, 0, 0, len(data)
    while pos + 8 <= end:
        length = int.from_bytes(data[pos : pos + 4], "big")
        kind = data[pos + 4 : pos + 8]
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise over_cap(MAX_PNG_CHUNKS, "PNG chunks")
        if kind == b"IHDR" and pos + 21 <= end:
            depth, colour = data[pos + 16], data[pos + 17]
            cost.facts["png_bits_per_pixel"] = depth * PNG_CHANNELS.get(colour, 4)
            cost.facts["png_interlaced"] = int(data[pos + 20] != 0)
        elif kind in (b"zTXt", b"iTXt"):
            texts += 1
            if texts * PngImagePlugin.MAX_TEXT_CHUNK <= PngImagePlugin.MAX_TEXT_MEMORY:
                exif += _raw_profile_exif(data[pos + 8 : pos + 8 + length], kind)
        elif kind == b"tEXt" and data.startswith(RAW_PROFILE_EXIF, pos + 8):
            exif += length // 2
        elif kind == b"eXIf":
            exif += length
        elif kind == b"IEND":
            break
        pos += 12 + length
    cost.add(chunks * PNG_CHUNK, f"{chunks:,} PNG chunks")
    cost.add(texts * PNG_TEXT_INFLATE, f"{texts:,} compressed PNG text chunks")
    cost.add(exif * EXIF_BYTE, f"{exif:,} bytes of EXIF")


def _raw_profile_exif(chunk: bytes, kind: bytes) -> int:
    """The bytes of EXIF a compressed text chunk holds as ImageMagick's hex profile, if any."""
    if not chunk.startswith(RAW_PROFILE_EXIF):
        return 0
    text = chunk[len(RAW_PROFILE_EXIF) :]
    if kind == b"iTXt":  # compression flag and method, language tag, translated keyword
        if not text or text[0] == 0:
            return len(text) // 2
        text = text[2:].split(b"\x00", 2)[-1]
    else:
        text = text[1:]  # compression method
    try:  # as far as Pillow inflates it
        return len(zlib.decompressobj().decompress(text, PngImagePlugin.MAX_TEXT_CHUNK)) // 2
    except zlib.error:
        return 0


def _gif_structure(data: bytes, cost: Cost) -> None:
    """Count the sub-blocks and stray bytes Pillow steps through up to the second frame.

    Runs of full 255-byte sub-blocks, what encoders write, are skipped with a regular
    expression; each shorter sub-block takes a Python step here, as in Pillow.
    """
    end = len(data)
    flags = data[10] if end > 10 else 0
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    blocks = stray = steps = frames = 0
    while pos < end:
        byte = data[pos]
        if byte == 0x3B:
            break
        if byte == 0x21:  # extension: label, then sub-blocks
            pos += 2
        elif byte == 0x2C:  # image descriptor, local palette, LZW code size, then sub-blocks
            frames += 1
            if frames > 1:
                break  # Pillow reads no further to learn that the GIF is animated
            local = data[pos + 9] if pos + 9 < end else 0
            pos += 11 + (3 << ((local & 7) + 1) if local & 0x80 else 0)
        else:
            found = GIF_NEXT_BLOCK.search(data, pos)
            stray += (found.start() if found else end) - pos
            pos = found.start() if found else end
            continue
        while pos < end and data[pos]:
            run = GIF_FULL_BLOCKS.match(data, pos) if data[pos] == 255 else None
            if run:
                blocks += (run.end() - pos) // 256
                pos = run.end()
                continue
            blocks += 1
            steps += 1
            if steps > MAX_GIF_STEPS:
                raise over_cap(MAX_GIF_STEPS, "GIF blocks shorter than 255 bytes")
            pos += 1 + data[pos]
        pos += 1
    cost.add(blocks * GIF_BLOCK, f"{blocks:,} GIF sub-blocks")
    cost.add(stray * GIF_STRAY_BYTE, f"{stray:,} stray bytes between GIF blocks")


def _tiff_structure(data: bytes, cost: Cost, big: bool) -> None:
    """Count the IFD entries Pillow parses, the numbers in them and the strips or tiles.

    The entries are read as one numpy array, not one by one.
    """
    order = "<" if data[:2] == b"II" else ">"
    offset = _unpack(data, order + ("Q" if big else "I"), 8 if big else 4)
    ifd0 = _tiff_entries(data, offset, order, big)
    entries = 3 * len(ifd0)  # read twice as the file opens, once more for its EXIF
    values = int(ifd0["count"][~np.isin(ifd0["type"], list(TIFF_BYTE_TYPES))].sum())
    strips = max(int(ifd0["count"][ifd0["tag"] == tag].sum()) for tag in TIFF_STRIP_TAGS)
    for tag in TIFF_SUB_IFDS:
        for pointer in ifd0["value"][ifd0["tag"] == tag][:1]:
            sub = _tiff_entries(data, int(pointer), order, big)
            entries += len(sub)
            values += int(sub["count"][~np.isin(sub["type"], list(TIFF_BYTE_TYPES))].sum())
    cost.add(entries * TIFF_ENTRY, f"{entries:,} TIFF IFD entries parsed")
    cost.add(values * TIFF_VALUE, f"{values:,} numbers in TIFF tags")
    cost.add(strips * TIFF_STRIP, f"{strips:,} TIFF strips or tiles")


def _tiff_entries(data: bytes, offset: int, order: str, big: bool) -> np.ndarray:
    """The entries of the IFD at `offset`, as far as the file holds them."""
    size = 20 if big else 12
    layout = np.dtype(
        [
            ("tag", order + "u2"),
            ("type", order + "u2"),
            ("count", order + ("u8" if big else "u4")),
            ("value", order + ("u8" if big else "u4")),
        ]
    )
    count = _unpack(data, order + ("Q" if big else "H"), offset)
    start = offset + (8 if big else 2)
    available = max(0, (len(data) - start) // size)
    if offset <= 0 or count <= 0 or available <= 0:
        return np.zeros(0, layout)
    count = min(count, available)
    return np.frombuffer(data, layout, count, start).astype(
        [("tag", "u2"), ("type", "u2"), ("count", "u8"), ("value", "u8")]
    )


def _unpack(data: bytes, form: str, offset: int) -> int:
    """One unsigned number at `offset`, or 0 past the end of the data."""
    try:
        return int(struct.unpack_from(form, data, offset)[0])
    except struct.error:
        return 0


def _webp_structure(data: bytes, cost: Cost) -> None:
    """Count a WebP's chunks up to its second frame, and its EXIF."""
    pos, chunks, frames, exif, end = 12, 0, 0, 0, len(data)
    while pos + 8 <= end:
        kind = data[pos : pos + 4]
        length = int.from_bytes(data[pos + 4 : pos + 8], "little")
        chunks += 1
        if chunks > MAX_WEBP_CHUNKS:  # libwebp walks the rest cheaply; an EXIF may be among them
            exif = max(exif, MAX_EXIF_BYTES)
            break
        if kind == b"ANMF":
            frames += 1
            if frames > 1:
                break  # an animation: refused as such once opened
        elif kind == b"EXIF":
            exif += length
        elif kind in (b"VP8L", b"ALPH"):
            cost.facts["webp_" + ("lossless" if kind == b"VP8L" else "alpha")] = 1
        pos += 8 + length + (length & 1)
    cost.add(exif * EXIF_BYTE, f"{exif:,} bytes of EXIF")


def _tiff_pixels(image: TiffImagePlugin.TiffImageFile, pixels: int, shown: str, cost: Cost) -> None:
    """A TIFF's decoded samples: every sample of every pixel, at its own depth."""
    tags = image.tag_v2
    depth = tags.get(258, (1,))
    samples = tags.get(277, 1)
    depth = max(depth) if isinstance(depth, tuple) and depth else depth
    try:
        sample_bytes = max(1, int(depth) // 8) * max(1, int(samples))
    except (TypeError, ValueError):
        sample_bytes = 16
    cost.add(pixels * sample_bytes * TIFF_SAMPLE_BYTE, f"TIFF samples of {shown}")
