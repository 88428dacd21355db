"""Hostile and awkward image files, built as real bytes (by hand where Pillow cannot write them)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image, TiffTags

from harness.images import catalogue_photo, encode, garment

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_chunk(kind: bytes, data: bytes, crc: int | None = None) -> bytes:
    """One PNG chunk: length, type, data, CRC (the right one unless `crc` is given)."""
    checksum = zlib.crc32(kind + data) if crc is None else crc
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", checksum)


def png_header(width: int, height: int, bit_depth: int = 8, color_type: int = 0) -> bytes:
    """A PNG signature and IHDR chunk declaring any size, valid or not."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    return PNG_SIGNATURE + png_chunk(b"IHDR", ihdr)


def png_declaring(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims `width` x `height` grey pixels (a decompression bomb)."""
    rows = zlib.compress(b"\x00" * (width + 1) * min(height, 4))
    return png_header(width, height) + png_chunk(b"IDAT", rows) + png_chunk(b"IEND", b"")


def png_with_bad_crc() -> bytes:
    """A valid PNG whose IHDR checksum is wrong."""
    data = bytearray(encode(garment()))
    data[29] ^= 0xFF  # the last byte of IHDR's CRC: signature 8 + length 4 + type 4 + data 13
    return bytes(data)


def png_with_corrupt_zlib() -> bytes:
    """A PNG whose IDAT holds bytes that are not a zlib stream (checksums correct)."""
    return png_header(30, 30) + png_chunk(b"IDAT", b"\xde\xad" * 40) + png_chunk(b"IEND", b"")


def gif(
    screen: tuple[int, int], frames: list[tuple[int, int, int, int]], pixels: bytes = b"\x00"
) -> bytes:
    """A GIF89a with a logical screen and frames (left, top, width, height) claiming any size."""
    palette = bytes([0, 0, 0, 255, 255, 255])
    data = b"\x02" + bytes([len(pixels)]) + pixels + b"\x00"  # LZW min code size, sub-blocks
    images = (b"\x2c" + struct.pack("<HHHHB", *frame, 0) + data for frame in frames)
    return (
        b"GIF89a"
        + struct.pack("<HHBBB", *screen, 0x80, 0, 0)
        + palette
        + b"".join(images)
        + b"\x3b"
    )


def bmp_declaring(width: int, height: int) -> bytes:
    """A BMP header claiming `width` x `height` 8-bit pixels with almost no pixel data."""
    palette = b"".join(bytes([i, i, i, 0]) for i in range(256))
    offset = 14 + 40 + len(palette)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 8, 0, 0, 2835, 2835, 256, 0)
    return b"BM" + struct.pack("<IHHI", offset + 16, 0, 0, offset) + info + palette + bytes(16)


def psd(width: int = 32, height: int = 32) -> bytes:
    """A minimal Photoshop document: one grey channel, raw pixels."""
    header = b"8BPS" + struct.pack(">H6xHIIHH", 1, 1, height, width, 8, 1)
    sections = struct.pack(">III", 0, 0, 0)  # colour mode, resources, layers: all empty
    return header + sections + struct.pack(">H", 0) + bytes(width * height)


def fits(width: int = 32, height: int = 32) -> bytes:
    """A minimal FITS image: 80-character header cards padded to 2880 bytes, then pixels."""
    cards = [
        "SIMPLE  =                    T",
        "BITPIX  =                    8",
        "NAXIS   =                    2",
        f"NAXIS1  = {width:20d}",
        f"NAXIS2  = {height:20d}",
        "END",
    ]
    header = "".join(card.ljust(80) for card in cards).ljust(2880).encode("ascii")
    return header + bytes(width * height).ljust(2880, b"\x00")


PDF = (
    b"%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n"
    b"2 0 obj<</Type/Pages/Kids[]/Count 0>>endobj\ntrailer<</Root 1 0 R>>\n%%EOF\n"
)
SVG = (
    b'<?xml version="1.0"?><svg xmlns="http://www.w3.org/2000/svg" width="28" height="28">'
    b'<rect width="28" height="28" fill="white"/></svg>'
)
XML_BOMB = (
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol">'
    b'<!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">]><lolz>&lol2;</lolz>'
)


def pillow_file(fmt: str, mode: str = "RGB", size: tuple[int, int] = (40, 40)) -> bytes:
    """An image in any format Pillow writes (EPS, ICO, PPM, TGA, ...)."""
    buffer = io.BytesIO()
    Image.new(mode, size, 128).save(buffer, fmt)
    return buffer.getvalue()


def animated(fmt: str, **options) -> bytes:
    """A two-frame animation in `fmt` (GIF, PNG as APNG, WEBP)."""
    frames = [Image.fromarray(garment(label)) for label in (1, 7)]
    buffer = io.BytesIO()
    frames[0].save(buffer, fmt, save_all=True, append_images=frames[1:], **options)
    return buffer.getvalue()


def multipage_tiff() -> bytes:
    """A TIFF with two pages."""
    return animated("TIFF")


def photo(label: int = 2) -> Image.Image:
    """A catalogue-style photo of a synthetic garment (dark on white, padded)."""
    return catalogue_photo(garment(label), scale=4, pad=(24, 8), mode="L")


def careful_images(label: int = 2) -> dict[str, tuple[bytes, str]]:
    """Valid images that need care, each with its Content-Type, all showing the same photo.

    The transparent ones are black where the photo is white, with alpha 255 - photo:
    flattened onto white they are the photo again; read without alpha, a black blank.
    """
    base = photo(label)
    rgb = base.convert("RGB")
    gray16 = Image.fromarray(np.asarray(base, np.uint16) * 257)
    palette = rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    alpha = Image.eval(base, lambda value: 255 - value)
    black = Image.new("L", base.size, 0)
    la = Image.merge("LA", (black, alpha))
    rgba = Image.merge("RGBA", (black, black, black, alpha))
    exif = Image.Exif()
    exif[0x0112] = 6  # viewer must turn it 90 degrees clockwise to show it upright
    return {
        "cmyk_jpeg": (encode(base.convert("CMYK"), "JPEG", quality=95), "image/jpeg"),
        "png_16_bit": (encode(gray16, "PNG"), "image/png"),
        "palette_transparency": (
            encode(palette, "PNG", transparency=int(np.asarray(palette)[0, 0])),
            "image/png",
        ),
        "la_png": (encode(la, "PNG"), "image/png"),
        "rgba_png": (encode(rgba, "PNG"), "image/png"),
        "rgba_webp": (encode(rgba, "WEBP", lossless=True), "image/webp"),
        "exif_rotated_jpeg": (
            encode(rgb.transpose(Image.Transpose.ROTATE_90), "JPEG", quality=95, exif=exif),
            "image/jpeg",
        ),
        "progressive_jpeg": (encode(rgb, "JPEG", quality=95, progressive=True), "image/jpeg"),
    }


# Files that are costly to decode within the size limits: each family takes a size or a count,
# so that benchmarks/decode_worst_case.py can search it and the tests can build a small one.

PNG_CHANNELS = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}  # colour type: samples per pixel
ADAM7 = (
    (0, 0, 8, 8),
    (4, 0, 8, 8),
    (0, 4, 4, 8),
    (2, 0, 4, 4),
    (0, 2, 2, 4),
    (1, 0, 2, 2),
    (0, 1, 1, 2),
)


def png_image(
    width: int,
    height: int,
    bit_depth: int = 8,
    colour_type: int = 0,
    interlaced: bool = False,
    before: bytes = b"",
    after: bytes = b"",
    idat_size: int = 0,
) -> bytes:
    """A PNG of any size, depth and colour type, every row Paeth-filtered (the dearest filter).

    Its rows hold a steady step that the filter turns into a pattern, so that it is neither
    blank nor large. `before` and `after` are chunks put before and after the image data;
    `idat_size` cuts the data into chunks of that many bytes.
    """
    bits = bit_depth * PNG_CHANNELS[colour_type]
    deflate = zlib.compressobj(9)
    stream = b""
    for x0, y0, dx, dy in ADAM7 if interlaced else ((0, 0, 1, 1),):
        columns, rows = (width - x0 + dx - 1) // dx, (height - y0 + dy - 1) // dy
        if columns > 0 and rows > 0:
            stream += deflate.compress((b"\x04" + b"\x03" * ((columns * bits + 7) // 8)) * rows)
    stream += deflate.flush()
    size = idat_size or len(stream)
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, int(interlaced))
    palette = b""
    if colour_type == 3:
        palette = png_chunk(b"PLTE", bytes(range(256)) * 3) + png_chunk(b"tRNS", b"\x80")
    chunks = b"".join(png_chunk(b"IDAT", stream[i : i + size]) for i in range(0, len(stream), size))
    return (
        PNG_SIGNATURE + png_chunk(b"IHDR", ihdr) + palette + before + chunks + after
        + png_chunk(b"IEND", b"")
    )  # fmt: skip


def exif_entries(count: int, orientation: int = 6) -> bytes:
    """A little-endian EXIF block of `count` entries, the first an orientation."""
    entries = struct.pack("<HHII", 0x0112, 3, 1, orientation)
    entries += b"".join(
        struct.pack("<HHII", 0x9000 + i % 0x6000, 3, 1, 1) for i in range(count - 1)
    )
    return b"II*\x00" + struct.pack("<IH", 8, count) + entries + bytes(4)


def noisy_photo(width: int, height: int, mode: str = "RGB", noise: int = 24) -> Image.Image:
    """A photo-like image: a dark shape on a light ground, with noise that defeats compression."""
    pixels = np.full((height, width), 230, np.uint8)
    pixels[height // 5 : -height // 5 or None, width // 4 : -width // 4 or None] = 60
    if noise:
        pixels += np.random.default_rng(0).integers(0, noise, (height, width), dtype=np.uint8)
    channels = {"L": 1, "LA": 2, "RGB": 3, "RGBA": 4, "CMYK": 4}[mode]
    stacked = np.dstack([np.roll(pixels, 3 * band, axis=1) for band in range(channels)])
    return Image.fromarray(stacked.squeeze(), mode)


def jpeg_repeated_scan(width: int, height: int, repeats: int) -> bytes:
    """A progressive JPEG whose last scan comes `repeats` more times: libjpeg decodes each."""
    data = encode(noisy_photo(width, height, noise=0), "JPEG", progressive=True)
    last, end = data.rindex(b"\xff\xda"), data.rindex(b"\xff\xd9")
    return data[:end] + data[last:end] * repeats + data[end:]


def jpeg_padded(markers: int = 0, junk: int = 0, fill: int = 0) -> bytes:
    """A small JPEG with empty comment markers, junk bytes or 0xFF fill bytes in its header.

    Pillow's header parser takes a Python step for each marker and each such byte.
    """
    data = encode(garment(), "JPEG", quality=90)
    header = 4 + int.from_bytes(data[4:6], "big")  # after SOI and the APP0 segment
    padding = b"\xff\xfe\x00\x02" * markers + b"\x00" * junk + b"\xff" * fill
    return data[:header] + padding + data[header:]


def gif_image(width: int, height: int, interlace: bool = False) -> bytes:
    """A GIF of a noisy photo in a 256-colour palette."""
    return encode(noisy_photo(width, height, "L"), "GIF", interlace=interlace)


def gif_image_start(data: bytes) -> int:
    """Where a GIF's first image descriptor starts: after its palette and extensions."""
    flags = data[10]
    pos = 13 + (3 << ((flags & 7) + 1) if flags & 0x80 else 0)
    while data[pos] == 0x21:
        pos += 2
        while data[pos]:
            pos += 1 + data[pos]
        pos += 1
    return pos


def gif_comment(blocks: int, block_size: int = 1) -> bytes:
    """A small GIF with a comment of `blocks` sub-blocks of `block_size` bytes before its image."""
    data = encode(garment(), "GIF")
    image = gif_image_start(data)
    comment = b"\x21\xfe" + (bytes([block_size]) + b"c" * block_size) * blocks + b"\x00"
    return data[:image] + comment + data[image:]


def gif_stray_bytes(count: int) -> bytes:
    """A small GIF with `count` bytes that belong to no block before its image."""
    data = encode(garment(), "GIF")
    image = gif_image_start(data)
    return data[:image] + b"\x00" * count + data[image:]


def gif_split_blocks(width: int, height: int, block_size: int = 1) -> bytes:
    """A GIF whose image data comes in sub-blocks of `block_size` bytes instead of 255."""
    data = gif_image(width, height)
    start = gif_image_start(data) + 10  # the image descriptor, without a local palette
    pos, pieces = start + 1, []  # after the LZW code size
    while data[pos]:
        pieces.append(data[pos + 1 : pos + 1 + data[pos]])
        pos += 1 + data[pos]
    lzw = b"".join(pieces)
    blocks = b"".join(
        bytes([len(piece)]) + piece
        for piece in (lzw[i : i + block_size] for i in range(0, len(lzw), block_size))
    )
    return data[: start + 1] + blocks + data[pos:]


def bmp_rle(width: int, height: int, body: bytes, rle4: bool = False) -> bytes:
    """A bottom-up BMP whose pixels are the RLE8 (or RLE4) stream `body`."""
    bits, colours = (4, 16) if rle4 else (8, 256)
    palette = b"".join(bytes([i * 255 // (colours - 1)] * 3 + [0]) for i in range(colours))
    offset = 14 + 40 + len(palette)
    info = struct.pack(
        "<IiiHHIIiiII", 40, width, height, 1, bits, 2 if rle4 else 1, len(body), 2835, 2835,
        colours, 0,
    )  # fmt: skip
    return b"BM" + struct.pack("<IHHI", offset + len(body), 0, 0, offset) + info + palette + body


def bmp_rle_runs(width: int, height: int, rle4: bool = False) -> bytes:
    """An RLE BMP of full-length runs: a few bytes a row, one Python step a pixel in RLE4.

    The middle third of the rows is light, the rest dark.
    """
    rows = []
    for colour in (0x11, 0xEE, 0x11):
        run = bytes([255, colour]) * (width // 255) + bytes(
            [width % 255, colour] * (width % 255 > 0)
        )
        rows.append((run + b"\x00\x00") * (height // 3))
    return bmp_rle(width, 3 * (height // 3), b"".join(rows) + b"\x00\x01", rle4)


def bmp_rle_line_ends(width: int, height: int) -> bytes:
    """An RLE8 BMP of one pixel and an end of line a row: Pillow pads each row pixel by pixel."""
    return bmp_rle(width, height, b"\x01\x80\x00\x00" * height + b"\x00\x01")


def tiff_strips(width: int, height: int, strips: int) -> bytes:
    """An uncompressed 8-bit grey TIFF listing `strips` strips, all pointing at one row."""
    pixels = bytes(range(256)) * (width // 256) + bytes(range(width % 256))
    offsets = 8 + len(pixels)
    counts = offsets + 4 * strips
    tags = [
        (256, 4, 1, width), (257, 4, 1, height), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
        (273, 4, strips, offsets), (277, 3, 1, 1), (278, 4, 1, 1), (279, 4, strips, counts),
    ]  # fmt: skip
    return (
        b"II*\x00" + struct.pack("<I", counts + 4 * strips) + pixels
        + struct.pack("<I", 8) * strips + struct.pack("<I", len(pixels)) * strips
        + tiff_ifd(tags)
    )  # fmt: skip


def tiff_ifd(tags: list[tuple[int, int, int, int]]) -> bytes:
    """A little-endian IFD of (tag, type, count, value or offset) entries, and no next IFD."""
    return (
        struct.pack("<H", len(tags)) + b"".join(struct.pack("<HHII", *t) for t in tags) + bytes(4)
    )


def tiff_many_entries(count: int) -> bytes:
    """A 28x28 grey TIFF whose IFD holds `count` entries (up to some 47,000), one an orientation."""
    pixels = garment().tobytes()
    tags = [
        (256, 3, 1, 28), (257, 3, 1, 28), (258, 3, 1, 8), (259, 3, 1, 1), (262, 3, 1, 1),
        (273, 4, 1, 8), (274, 3, 1, 6), (277, 3, 1, 1), (278, 3, 1, 28), (279, 4, 1, 784),
    ]  # fmt: skip
    known = TiffTags.TAGS_V2.keys() | TiffTags.TAGS.keys()
    unknown = [tag for tag in range(1, 0xBC00) if tag not in known]  # 0xBC01: JPEG XR
    tags += [(tag, 3, 1, 1) for tag in unknown[: count - len(tags)]]
    return b"II*\x00" + struct.pack("<I", 8 + len(pixels)) + pixels + tiff_ifd(sorted(tags))


def webp_with_chunks(count: int) -> bytes:
    """A small extended WebP with `count` empty unknown chunks after its image."""
    data = encode(garment(), "WEBP", lossless=True, exif=exif_entries(2))
    padded = data + b"JUNK\x00\x00\x00\x00" * count
    return b"RIFF" + struct.pack("<I", len(padded) - 8) + padded[8:]
