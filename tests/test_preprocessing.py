"""Decoding and preprocessing as pure functions, without a server."""

from __future__ import annotations

import io

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image, ImageFile, PngImagePlugin

from harness import hostile
from harness.images import catalogue_photo, encode, garment
from service import errors
from service.io.images import decode_image
from service.io.preprocessing import (
    _black_background,
    has_light_background,
    pixels_from_array,
    to_grayscale,
    to_model_input,
)

LIMITS = {"max_pixels": 25_000_000, "max_aspect_ratio": 20.0}


def decode(data: bytes) -> Image.Image:
    """Decode with the default limits."""
    return decode_image(data, **LIMITS)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "GIF", "WEBP"])
def test_a_fashion_mnist_style_image_reaches_the_model_bit_for_bit(fmt):
    pixels = garment()
    options = {"lossless": True} if fmt == "WEBP" else {}
    assert np.array_equal(to_model_input(decode(encode(pixels, fmt, **options))), pixels)


def test_forced_polarity_overrides_detection():
    pixels = garment()
    image = Image.fromarray(pixels)
    assert np.array_equal(to_model_input(image, "true"), 255 - pixels)
    assert np.array_equal(to_model_input(Image.fromarray(255 - pixels), "auto"), pixels)
    assert np.array_equal(to_model_input(Image.fromarray(255 - pixels), "false"), 255 - pixels)


def test_a_catalogue_photo_becomes_a_centred_light_on_black_28x28():
    pixels = np.zeros((28, 28), np.uint8)
    pixels[4:24, 9:19] = 200  # a tall garment, off-square
    photo = catalogue_photo(pixels, scale=10, pad=(120, 30))
    result = to_model_input(decode(encode(photo, "JPEG", quality=90)))
    assert result.shape == (28, 28) and result.dtype == np.uint8
    assert result[:, :4].max() < 40 and result[:, -4:].max() < 40  # black side margins
    rows = np.flatnonzero(result.max(axis=1) > 100)
    assert rows[0] <= 1 and rows[-1] >= 26  # the longest edge fills the canvas
    columns = np.flatnonzero(result.max(axis=0) > 100)
    assert abs((columns[0] + columns[-1]) / 2 - 13.5) <= 1.5  # centred


@pytest.mark.parametrize("tall", [True, False])
def test_an_odd_margins_extra_pixel_goes_left_or_top_as_in_fashion_mnist(tall):
    long, short = 280, 210  # resized to 28 by 21: a margin of 7 beside the garment
    size = (short, long) if tall else (long, short)
    photo = Image.new("L", (size[0] + 100, size[1] + 60), 255)
    photo.paste(0, (50, 30, 50 + size[0], 30 + size[1]))  # a flat dark garment on white
    result = to_model_input(decode(encode(photo)))
    across = result.max(axis=0 if tall else 1)  # columns of a tall garment, rows of a wide one
    garment = np.flatnonzero(across > 128)
    assert (garment[0], 27 - garment[-1]) == (4, 3)  # 4 before, 3 after


def exif_orientation(value: int) -> bytes:
    """An EXIF block holding one orientation tag."""
    exif = Image.Exif()
    exif[0x0112] = value
    return exif.tobytes()


ROTATED = 6  # stored rotated: display needs a 90-degree clockwise turn
ROTATED_XMP = (
    '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF '
    'xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#"><rdf:Description '
    f'xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="{ROTATED}"/></rdf:RDF>'
    "</x:xmpmeta>"
)


def png_text(key: str, text: str) -> PngImagePlugin.PngInfo:
    """A PNG text chunk."""
    info = PngImagePlugin.PngInfo()
    info.add_itxt(key, text)
    return info


RAW_EXIF = exif_orientation(ROTATED)
# Every place Pillow reads an orientation from, in each format that carries it there.
ORIENTED = {
    "jpeg_exif": ("JPEG", {"exif": RAW_EXIF}),
    "jpeg_xmp": ("JPEG", {"xmp": ROTATED_XMP.encode()}),
    "png_exif_chunk": ("PNG", {"exif": RAW_EXIF}),
    "png_xmp": ("PNG", {"pnginfo": png_text("XML:com.adobe.xmp", ROTATED_XMP)}),
    "png_raw_profile": (
        "PNG",
        {
            "pnginfo": png_text(
                "Raw profile type exif", f"\nexif\n{len(RAW_EXIF):8}\n{RAW_EXIF.hex()}\n"
            )
        },
    ),
    "webp_exif": ("WEBP", {"exif": RAW_EXIF, "lossless": True}),
    "webp_xmp": ("WEBP", {"xmp": ROTATED_XMP.encode(), "lossless": True}),
    "tiff_tag": ("TIFF", {"tiffinfo": {0x0112: ROTATED}}),
}

# EXIF's definition of each orientation: the sides of the displayed image on which the stored
# image's first row and first column are shown.
SIDES = {
    1: ("top", "left"),
    2: ("top", "right"),
    3: ("bottom", "right"),
    4: ("bottom", "left"),
    5: ("left", "top"),
    6: ("right", "top"),
    7: ("right", "bottom"),
    8: ("left", "bottom"),
}


def stored_quadrants() -> np.ndarray:
    """A 20x60 image of four grey levels, one per quadrant: each of the eight ways of showing
    it (turns and mirror images) looks different, and lossy JPEG keeps the levels apart."""
    pixels = np.empty((20, 60), np.uint8)
    pixels[:10, :30], pixels[:10, 30:] = 0, 80
    pixels[10:, :30], pixels[10:, 30:] = 160, 240
    return pixels


def displayed(stored: np.ndarray, orientation: int) -> np.ndarray:
    """The stored pixels as a viewer shows them, built from SIDES alone (not from Pillow)."""
    first_row, first_column = SIDES[orientation]
    # Where the top row and the left column of `shown` must go.
    top, left = first_row, first_column
    shown = stored
    if first_row in ("left", "right"):
        shown = stored.T  # the first row becomes the left column, the first column the top row
        top, left = first_column, first_row
    if top == "bottom":
        shown = np.flipud(shown)
    if left == "right":
        shown = np.fliplr(shown)
    return shown


def assert_shown_as(image: Image.Image, expected: np.ndarray) -> None:
    """The decoded image has the expected shape and each quadrant its expected grey level."""
    gray = np.asarray(image.convert("L"), np.int16)
    assert gray.shape == expected.shape
    height, width = expected.shape
    for rows in (slice(0, height // 2), slice(height // 2, height)):
        for columns in (slice(0, width // 2), slice(width // 2, width)):
            quadrant = gray[rows, columns]
            assert np.median(quadrant) == pytest.approx(expected[rows, columns][0, 0], abs=8)


@pytest.mark.parametrize("case", ORIENTED)
def test_an_orientation_is_honoured_wherever_the_file_carries_it(case):
    stored = stored_quadrants()
    file_format, options = ORIENTED[case]
    image = decode(encode(Image.fromarray(stored).convert("RGB"), file_format, **options))
    assert_shown_as(image, displayed(stored, ROTATED))


@pytest.mark.parametrize("orientation", SIDES)
@pytest.mark.parametrize("file_format", ["JPEG", "PNG", "TIFF"])
def test_each_orientation_puts_the_pixels_where_exif_says(file_format, orientation):
    stored = stored_quadrants()
    if file_format == "TIFF":
        options: dict = {"tiffinfo": {0x0112: orientation}}
    else:
        options = {"exif": exif_orientation(orientation)}
    image = decode(encode(Image.fromarray(stored), file_format, **options))
    assert_shown_as(image, displayed(stored, orientation))
    if file_format != "JPEG":  # lossless: every pixel in its place
        assert np.array_equal(np.asarray(image), displayed(stored, orientation))


@pytest.mark.parametrize("file_format", ["PNG", "JPEG", "WEBP", "TIFF", "GIF", "BMP"])
def test_an_image_without_orientation_keeps_its_shape(file_format):
    image = decode(encode(Image.fromarray(np.full((20, 60), 200, np.uint8)), file_format))
    assert image.size == (60, 20)


def test_transparency_is_flattened_onto_white():
    rgba = Image.new("RGBA", (60, 60), (0, 0, 0, 0))  # transparent black background
    rgba.paste((30, 30, 30, 255), (20, 10, 40, 50))  # opaque dark garment
    gray = to_grayscale(decode(encode(rgba)))
    assert gray[0, 0] == 255 and gray[30, 30] == 30
    assert has_light_background(gray)


def ring_median(gray: np.ndarray) -> float:
    """The median of the outermost ring of pixels, the slow way."""
    return float(np.median(np.concatenate([gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1]])))


# Values near the threshold (127, 128, 129) and the extremes make the even-count tie common.
PIXELS = st.sampled_from([0, 1, 126, 127, 128, 129, 130, 254, 255]) | st.integers(0, 255)


@given(arrays(np.uint8, st.tuples(st.integers(1, 30), st.integers(1, 30)), elements=PIXELS))
def test_background_polarity_by_counting_agrees_with_the_median(gray):
    assert has_light_background(gray) == (ring_median(gray) >= 128)


@pytest.mark.parametrize(
    ("ring_values", "light"),
    [
        ([127, 129] * 54, True),  # exactly half dark, the two middle values average to 128
        ([127, 128] * 54, False),  # exactly half dark, average 127.5
        ([0] * 53 + [255] * 55, True),
        ([0] * 55 + [255] * 53, False),
    ],
)
def test_polarity_at_the_even_count_tie(ring_values, light):
    gray = np.full((28, 28), 77, np.uint8)
    ring = np.array(ring_values, np.uint8)
    gray[0], gray[-1], gray[1:-1, 0], gray[1:-1, -1] = (
        ring[:28],
        ring[28:56],
        ring[56:82],
        ring[82:],
    )
    assert has_light_background(gray) is light


def test_an_8_bit_grayscale_upload_is_read_without_conversion():
    pixels = np.arange(28 * 28, dtype=np.uint8).reshape(28, 28)
    assert np.array_equal(to_grayscale(decode(encode(Image.fromarray(pixels)))), pixels)


@pytest.mark.parametrize("mode", ["LA", "P", "CMYK", "I;16", "RGB", "L", "1"])
def test_every_common_mode_converts_to_8_bit_grayscale(mode):
    base = Image.new("L", (40, 40), 255)
    base.paste(0, (10, 10, 30, 30))
    if mode == "I;16":
        image = Image.fromarray(np.asarray(base, np.uint16) * 257)
        assert image.mode == "I;16"
    else:
        image = base.convert(mode)
    fmt = "JPEG" if mode == "CMYK" else "TIFF" if mode == "I;16" else "PNG"
    gray = to_grayscale(decode(encode(image, fmt)))
    assert gray.dtype == np.uint8 and gray.shape == (40, 40)
    assert gray[0, 0] > 240 and gray[20, 20] < 15


def test_palette_with_transparency_uses_white_behind_transparent_pixels():
    image = Image.new("P", (30, 30), 0)
    image.putpalette([0, 0, 0, 50, 50, 50] + [0] * 762)
    image.paste(1, (10, 10, 20, 20))
    image.info["transparency"] = 0
    gray = to_grayscale(decode(encode(image, "PNG", transparency=0)))
    assert gray[0, 0] == 255 and gray[15, 15] == 50


@pytest.mark.parametrize(
    ("data", "error"),
    [
        (b"", errors.NotAnImage),
        (b"hello world, not an image", errors.NotAnImage),
        (b"<svg xmlns='http://www.w3.org/2000/svg'></svg>", errors.NotAnImage),
        (encode(garment())[:60], errors.CorruptImage),
        (encode(Image.new("RGB", (1000, 10))), errors.UnusableImage),
        (encode(Image.new("L", (30, 30), 255)), errors.UnusableImage),
    ],
)
def test_bad_bytes_raise_the_documented_errors(data, error):
    with pytest.raises(error):
        to_model_input(decode(data))


def test_pixel_limit_is_enforced_before_decoding():
    big = encode(Image.new("L", (6000, 5000)))
    with pytest.raises(errors.ImageTooLarge):
        decode_image(big, max_pixels=1_000_000, max_aspect_ratio=20)


@pytest.mark.parametrize("fmt", ["PPM", "TGA", "ICO", "PCX", "SGI", "EPS"])
def test_refused_formats_are_named(fmt):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40)).save(buffer, fmt)
    with pytest.raises(errors.UnsupportedImageFormat, match=fmt):
        decode(buffer.getvalue())


def test_animated_images_are_refused():
    frames = [Image.new("L", (30, 30), value) for value in (0, 255)]
    buffer = io.BytesIO()
    frames[0].save(buffer, "GIF", save_all=True, append_images=frames[1:])
    with pytest.raises(errors.UnusableImage, match="Animated"):
        decode(buffer.getvalue())


@pytest.mark.parametrize(
    "instance",
    [
        [[0] * 28] * 27,
        [[0] * 27] * 28,
        [[0] * 28] * 27 + [[0] * 27],
        [[256] * 28] * 28,
        [[-1] * 28] * 28,
        [[True] * 28] * 28,
        [["1"] * 28] * 28,
        [[None] * 28] * 28,
        [[[0, 0]] * 28] * 28,
        "pixels",
    ],
)
def test_bad_pixel_arrays_are_refused(instance):
    with pytest.raises(errors.InvalidPixels):
        pixels_from_array(instance)


def test_pixel_arrays_round_to_uint8_and_accept_a_channel_axis():
    pixels = garment()
    assert np.array_equal(pixels_from_array(pixels.tolist()), pixels)
    assert np.array_equal(pixels_from_array(pixels[..., None].astype(float).tolist()), pixels)


def test_refused_formats_are_named_without_running_their_parsers(monkeypatch):
    from PIL import PsdImagePlugin

    from harness.hostile import psd

    def parser_ran(self):
        raise AssertionError("the PSD parser ran on refused input")

    monkeypatch.setattr(PsdImagePlugin.PsdImageFile, "_open", parser_ran)
    with pytest.raises(errors.UnsupportedImageFormat, match="PSD"):
        decode(psd())


@pytest.mark.parametrize("fmt", ["PPM", "TGA", "ICO", "PCX", "SGI", "EPS"])
def test_a_refused_format_is_named_without_decoding_it(monkeypatch, fmt):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40)).save(buffer, fmt)
    plugin, accept = Image.OPEN[fmt]

    def ran(self):
        raise AssertionError(f"the {fmt} plugin ran on refused input")

    # Only a format without a signature (TGA) is named by its header parser.
    for method in ("load", "_open") if accept is not None else ("load",):
        monkeypatch.setattr(plugin, method, ran)
    monkeypatch.setattr(ImageFile.ImageFile, "load", ran)
    with pytest.raises(errors.UnsupportedImageFormat, match=fmt):
        decode(buffer.getvalue())


@pytest.mark.parametrize(
    ("width", "height"),
    [
        (10_000, 9_000),  # 90 megapixels: over Pillow's limit, where it only warns
        (20_000, 10_000),  # 200 megapixels: over twice the limit, where Pillow raises
    ],
)
def test_pillows_own_bomb_guard_refuses_even_under_a_raised_pixel_limit(width, height):
    assert width * height > Image.MAX_IMAGE_PIXELS
    with pytest.raises(errors.ImageTooLarge):
        decode_image(hostile.png_declaring(width, height), 10**9, 20.0)


def stretch_in_float32(gray: np.ndarray) -> np.ndarray:
    """The black-level stretch computed on the whole image in float32, as it once was."""
    level = int(np.median(gray[[0, 0, -1, -1], [0, -1, 0, -1]]))
    if level == 0 or level >= 255:
        return gray
    stretched = (gray.astype(np.float32) - level) * (255.0 / (255 - level))
    return np.clip(np.rint(stretched), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("level", [0, 1, 17, 128, 200, 254, 255])
def test_the_black_level_stretch_by_table_equals_float32_arithmetic(level):
    gray = np.arange(256, dtype=np.uint8).reshape(16, 16)
    gray[[0, 0, -1, -1], [0, -1, 0, -1]] = level
    assert np.array_equal(_black_background(gray), stretch_in_float32(gray))


def scale_in_float32(pixels: np.ndarray) -> np.ndarray:
    """16-bit intensities scaled to 8 bits in float32 over the whole image, as they once were."""
    scaled = pixels.astype(np.float32)
    scaled *= 255.0 / (65535.0 if scaled.max() > 255 else 255.0)
    return np.clip(np.rint(scaled), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("top", [255, 65535])
def test_16_bit_scaling_by_table_equals_float32_arithmetic(top):
    pixels = np.arange(top + 1, dtype=np.uint16).reshape(-1, 256)
    assert np.array_equal(to_grayscale(Image.fromarray(pixels)), scale_in_float32(pixels))
