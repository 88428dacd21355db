"""The decoding budget: what inspect counts, how the estimate grows, where it refuses."""

from __future__ import annotations

import io
import zlib

import numpy as np
import pytest
from PIL import Image

from harness import hostile
from harness.images import catalogue_photo, encode, garment
from service import errors
from service.io import decode_budget
from service.io.decode_budget import DECODE_BUDGET, check, inspect, pixel_cost
from service.io.images import decode_image
from service.io.preprocessing import to_model_input

LIMITS = {"max_pixels": 25_000_000, "max_aspect_ratio": 20.0}


def opened(data: bytes) -> Image.Image:
    """The image Pillow opens from `data`, its pixels not yet decoded."""
    return Image.open(io.BytesIO(data))


def estimate(data: bytes, scale: int = 1) -> int:
    """The whole estimate for `data`: its structure and its pixels."""
    structure = inspect(data)
    return structure.plus(pixel_cost(opened(data), structure.facts, scale)).units


def test_a_jpeg_scan_is_counted_with_its_components():
    plain = inspect(encode(garment(), "JPEG")).facts
    repeated = inspect(hostile.jpeg_repeated_scan(64, 64, 30)).facts
    progressive = inspect(encode(Image.new("RGB", (64, 64)), "JPEG", progressive=True)).facts
    assert (plain["jpeg_scans"], plain["jpeg_scan_components"]) == (1, 1)
    assert progressive["jpeg_scans"] == 10 and progressive["jpeg_scan_components"] == 14
    assert repeated["jpeg_scans"] == 10 + 30 and repeated["jpeg_scan_components"] == 14 + 30


def test_what_follows_a_jpegs_end_is_not_counted():
    data = encode(garment(), "JPEG")
    assert inspect(data + data).facts["jpeg_scans"] == 1  # an MPF preview, say


def test_markers_in_a_jpegs_entropy_coded_data_are_not_counted():
    data = encode(garment(), "JPEG", restart_marker_blocks=1)
    assert data.count(b"\xff\xd0") > 1
    assert inspect(data).facts["jpeg_scans"] == 1


@pytest.mark.parametrize(
    ("data", "what"),
    [
        (hostile.jpeg_padded(markers=decode_budget.MAX_JPEG_MARKERS), "JPEG markers"),
        (hostile.jpeg_repeated_scan(16, 16, decode_budget.MAX_JPEG_MARKERS), "JPEG markers"),
        (
            hostile.png_image(8, 8, before=hostile.png_chunk(b"prIv", b"") * 70_000),
            "PNG chunks",
        ),
        (hostile.gif_comment(decode_budget.MAX_GIF_STEPS + 1), "GIF blocks"),
    ],
    ids=["jpeg_markers", "jpeg_scans", "png_chunks", "gif_blocks"],
)
def test_a_structure_longer_than_the_walk_is_refused_by_name(data, what):
    with pytest.raises(errors.ImageTooLarge, match=what):
        inspect(data)


@pytest.mark.parametrize(
    ("small", "large"),
    [
        (hostile.jpeg_padded(junk=10), hostile.jpeg_padded(junk=1_000)),
        (hostile.jpeg_padded(fill=10), hostile.jpeg_padded(fill=1_000)),
        (hostile.gif_comment(10), hostile.gif_comment(1_000)),
        (hostile.gif_stray_bytes(10), hostile.gif_stray_bytes(1_000)),
        (hostile.tiff_strips(28, 28, 10), hostile.tiff_strips(28, 28, 1_000)),
        (hostile.tiff_many_entries(20), hostile.tiff_many_entries(2_000)),
        (
            hostile.png_image(28, 28, before=hostile.png_chunk(b"eXIf", hostile.exif_entries(2))),
            hostile.png_image(28, 28, before=hostile.png_chunk(b"eXIf", hostile.exif_entries(900))),
        ),
        (
            hostile.png_image(28, 28, idat_size=100),
            hostile.png_image(28, 28, idat_size=1),
        ),
    ],
    ids=["jpeg_junk", "jpeg_fill", "gif_blocks", "gif_stray", "tiff_strips", "tiff_entries",
         "png_exif", "png_idat_chunks"],
)  # fmt: skip
def test_each_structure_adds_to_the_estimate_beyond_its_bytes(small, large):
    more_bytes = (len(large) - len(small)) * decode_budget.COMPRESSED_BYTE
    assert inspect(large).units > inspect(small).units + more_bytes


def test_a_webp_past_the_chunks_walked_is_charged_the_largest_exif():
    walked = inspect(hostile.webp_with_chunks(decode_budget.MAX_WEBP_CHUNKS - 10))
    beyond = inspect(hostile.webp_with_chunks(decode_budget.MAX_WEBP_CHUNKS + 10))
    largest_exif = decode_budget.MAX_EXIF_BYTES * decode_budget.EXIF_BYTE
    assert walked.units < largest_exif <= beyond.units


def test_a_full_run_of_gif_sub_blocks_is_counted_without_walking_each():
    data = hostile.gif_comment(3_000, block_size=255)
    assert inspect(data).units >= 3_000 * decode_budget.GIF_BLOCK


def test_compressed_png_text_with_exif_is_counted_as_exif():
    exif = hostile.exif_entries(500)
    text = f"\nexif\n{len(exif):8}\n{exif.hex()}\n".encode()
    chunk = b"Raw profile type exif\x00\x00" + zlib.compress(text)
    plain = inspect(hostile.png_image(28, 28, before=hostile.png_chunk(b"zTXt", b"k\x00\x00")))
    profiled = inspect(hostile.png_image(28, 28, before=hostile.png_chunk(b"zTXt", chunk)))
    assert profiled.units - plain.units >= len(exif) * decode_budget.EXIF_BYTE


@pytest.mark.parametrize(
    ("cheaper", "dearer"),
    [
        (hostile.png_image(300, 200), hostile.png_image(300, 200, 8, 2)),
        (hostile.png_image(300, 200, 8, 2), hostile.png_image(300, 200, 8, 6)),
        (hostile.png_image(300, 200, 8, 6), hostile.png_image(300, 200, 16, 6)),
        (hostile.png_image(300, 200, 16, 6), hostile.png_image(300, 200, 16, 6, True)),
        (hostile.png_image(300, 200), hostile.png_image(600, 200)),
        (encode(garment(), "BMP"), hostile.bmp_rle_runs(28, 28)),
        (
            encode(Image.new("RGB", (300, 200)), "JPEG"),
            encode(Image.new("RGB", (300, 200)), "JPEG", progressive=True),
        ),
        (encode(Image.new("L", (300, 200)), "TIFF"), encode(Image.new("F", (300, 200)), "TIFF")),
    ],
    ids=["rgb", "alpha", "16_bit", "adam7", "pixels", "bmp_rle", "jpeg_scans", "tiff_float"],
)
def test_the_estimate_grows_with_what_decoding_costs(cheaper, dearer):
    assert estimate(dearer) > estimate(cheaper)


def just_within(data: bytes) -> int:
    """The smallest budget that accepts `data` whole."""
    return estimate(data)


EVERY_FORMAT = {
    "png": hostile.png_image(400, 300, 8, 6),
    "jpeg": encode(hostile.noisy_photo(400, 300), "JPEG", progressive=True),
    "webp": encode(hostile.noisy_photo(400, 300, "RGBA"), "WEBP"),
    "gif": hostile.gif_image(400, 300),
    "bmp": hostile.bmp_rle_runs(400, 300),
    "tiff": encode(hostile.noisy_photo(400, 300), "TIFF", compression="tiff_lzw"),
}


@pytest.mark.parametrize("name", EVERY_FORMAT)
def test_an_image_just_within_the_budget_decodes_and_one_unit_less_is_refused(name):
    data = EVERY_FORMAT[name]
    budget = just_within(data)
    image = decode_image(data, **LIMITS, budget=budget)
    assert to_model_input(image).shape == (28, 28)
    assert image.size == opened(data).size  # whole, not drafted
    with pytest.raises(errors.ImageTooLarge, match="decoding budget"):
        decode_image(data, **LIMITS, budget=budget - 1)


LARGE_PHOTO = encode(catalogue_photo(garment(), scale=40, pad=(80, 20)), "JPEG", quality=90)


def test_a_jpeg_over_the_budget_is_decoded_at_half_size_when_that_fits():
    image = decode_image(LARGE_PHOTO, **LIMITS, budget=estimate(LARGE_PHOTO, scale=2))
    assert image.size == (640, 580)
    full = to_model_input(decode_image(LARGE_PHOTO, **LIMITS))
    assert np.abs(to_model_input(image).astype(int) - full).max() <= 8


def test_a_jpeg_is_refused_when_a_quarter_of_it_would_still_be_too_dear():
    with pytest.raises(errors.ImageTooLarge):
        decode_image(LARGE_PHOTO, **LIMITS, budget=estimate(LARGE_PHOTO, scale=4) - 1)


def test_a_small_jpeg_is_not_drafted_below_the_smallest_side():
    side = decode_budget.MIN_DRAFT_SIDE  # half of it would fall below the smallest side
    data = encode(hostile.noisy_photo(side, side), "JPEG")
    with pytest.raises(errors.ImageTooLarge):
        decode_image(data, **LIMITS, budget=estimate(data) - 1)


@pytest.mark.parametrize(
    ("mode", "options"),
    [("RGB", {}), ("RGB", {"progressive": True}), ("L", {"progressive": True})],
    ids=["baseline", "progressive", "progressive_grey"],
)
def test_a_jpeg_at_the_pixel_limit_is_accepted(mode, options):
    data = encode(Image.new(mode, (5000, 5000), 200), "JPEG", **options)
    image = opened(data)
    check(image, inspect(data))  # decoded whole or smaller, never refused


def test_a_baseline_photo_at_the_pixel_limit_is_decoded_whole():
    data = encode(Image.new("RGB", (5000, 5000), 200), "JPEG")
    structure = inspect(data)
    budget_left = DECODE_BUDGET - 10 * 2**20 * decode_budget.COMPRESSED_BYTE  # a full body
    assert structure.plus(pixel_cost(opened(data), structure.facts)).units <= budget_left
