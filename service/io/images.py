"""Decode an uploaded image file: allow-listed formats, single frames, size and decoding cost
checked before pixels are read, EXIF orientation applied."""

from __future__ import annotations

import io
import struct
import warnings

from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

from service.errors import (
    CorruptImage,
    ImageTooLarge,
    NotAnImage,
    UnsupportedImageFormat,
    UnusableImage,
)
from service.io import decode_budget

ALLOWED_FORMATS = ("PNG", "JPEG", "WEBP", "GIF", "BMP", "TIFF")

# Where Pillow's getexif() looks for an orientation: EXIF or XMP in `info` (JPEG, PNG, WebP,
# GIF), or a TIFF's own tags. An image with none of them is upright and skips exif_transpose,
# which is costly beside a small PNG's decoding (docs/request-path.md, "decode_image").
ORIENTATION_SOURCES = frozenset({"exif", "Raw profile type exif", "XML:com.adobe.xmp", "xmp"})

# Truncated files must fail loudly rather than decode as half-grey images.
ImageFile.LOAD_TRUNCATED_IMAGES = False


# What Pillow's parsers raise on malformed input besides OSError (struct.error,
# IndexError, KeyError... were found by tests/test_fuzz.py); each means "corrupt image".
DECODE_ERRORS = (
    OSError,
    SyntaxError,
    ValueError,
    EOFError,
    struct.error,
    IndexError,
    KeyError,
    TypeError,
    ZeroDivisionError,
    Image.DecompressionBombError,
)


def decode_image(
    data: bytes,
    max_pixels: int,
    max_aspect_ratio: float,
    budget: float = decode_budget.DECODE_BUDGET,
) -> Image.Image:
    """Decode an allow-listed, single-frame image whose size and decoding cost are checked
    before pixels are read (docs/security.md, "The decoding budget")."""
    if not data:
        raise NotAnImage("The image is empty.")
    structure = decode_budget.inspect(data)  # before Pillow's parsers walk the structures
    if structure.units > budget:
        raise structure.refusal(budget)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=ALLOWED_FORMATS)
    except UnidentifiedImageError:
        raise _unidentified(data) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageTooLarge(f"The image has more than {max_pixels} pixels.") from None
    except DECODE_ERRORS as error:
        raise CorruptImage(f"The image cannot be decoded: {error}") from None
    _check_geometry(image, max_pixels, max_aspect_ratio)
    try:
        # is_animated stops at the second frame; n_frames would walk every frame of the file.
        if getattr(image, "is_animated", False):
            raise UnusableImage("Animated images are not classified; send a single frame.")
        decode_budget.check(image, structure, budget)  # may decode a large JPEG smaller
        image.load()
        if image.format == "TIFF" or not ORIENTATION_SOURCES.isdisjoint(image.info):
            ImageOps.exif_transpose(image, in_place=True)  # not a copy of every upright photo
        return image
    except DECODE_ERRORS as error:
        raise CorruptImage(f"The {image.format} image cannot be decoded: {error}") from None


def _check_geometry(image: Image.Image, max_pixels: int, max_aspect_ratio: float) -> None:
    """Refuse images too large to decode safely, empty, or too thin to classify."""
    width, height = image.size
    if width * height > max_pixels:
        raise ImageTooLarge(f"The image is {width}x{height}; the limit is {max_pixels} pixels.")
    if width < 1 or height < 1:
        raise UnusableImage(f"The image is {width}x{height}.")
    if max(width, height) / min(width, height) > max_aspect_ratio:
        raise UnusableImage(
            f"The image is {width}x{height}; sides may differ by a factor of {max_aspect_ratio:g}."
        )


def _unidentified(data: bytes) -> Exception:
    """Tell a broken allowed image, an image in a refused format and a non-image apart."""
    allowed = ", ".join(ALLOWED_FORMATS)
    signed = _signature(data, ALLOWED_FORMATS)
    if signed is not None:
        return CorruptImage(f"The {signed} image cannot be decoded (bad header or checksum).")
    found = _refused_format(data)
    if found is not None:
        return UnsupportedImageFormat(f"{found} images are not accepted; send one of {allowed}.")
    return NotAnImage(f"The body is not an image; send one of {allowed}.")


def _signature(data: bytes, formats: tuple[str, ...]) -> str | None:
    """Name the first of `formats` whose signature check accepts the first 16 bytes."""
    Image.init()
    for name in formats:
        accept = Image.OPEN[name][1]
        try:
            if accept is not None and accept(data[:16]):
                return name
        except Exception:  # noqa: BLE001 - some checks fail on short prefixes: no match
            continue
    return None


def _refused_format(data: bytes) -> str | None:
    """Name a refused format for the error message without running its decoder.

    Only the few formats with no signature (TGA among them) need a parser to be told
    apart, and only their header parsers run; every other format is named by signature.
    """
    Image.init()
    unsigned = tuple(name for name in Image.ID if Image.OPEN[name][1] is None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return Image.open(io.BytesIO(data), formats=unsigned).format
    except DECODE_ERRORS:  # a header parser's refusal: not one of these
        return _signature(data, tuple(Image.ID))
