"""Hostile and awkward image files, built as real bytes (by hand where Pillow cannot write them)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
from PIL import Image

from tests.images import catalogue_photo, encode, garment

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
    out = b"GIF89a" + struct.pack("<HHBBB", *screen, 0x80, 0, 0) + palette
    for left, top, width, height in frames:
        out += b"\x2c" + struct.pack("<HHHHB", left, top, width, height, 0)
        out += b"\x02" + bytes([len(pixels)]) + pixels + b"\x00"  # LZW min code size, data
    return out + b"\x3b"


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
