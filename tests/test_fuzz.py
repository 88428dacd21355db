"""Property-based fuzzing of decoding and preprocessing with random and mutated image files.

Whatever the bytes, decode_image and to_model_input either give a 28x28 uint8 array or raise
one of the documented errors, within a bounded time and memory. The default run is small and
repeatable; FMNIST_FUZZ_EXAMPLES=5000 (say) runs a bigger, freshly random one.
"""

from __future__ import annotations

import os
import resource
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from harness import hostile
from harness.images import catalogue_photo, encode, garment
from service import errors
from service.io.images import decode_image
from service.io.preprocessing import to_model_input

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning:PIL")  # "Corrupt EXIF data"
EXAMPLES = int(os.environ.get("FMNIST_FUZZ_EXAMPLES", "120"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,  # timed below, with a bound that suits a shared CI machine
    derandomize="FMNIST_FUZZ_EXAMPLES" not in os.environ,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    database=None,
)
MAX_PIXELS = 25_000_000  # the service's default limit
CASE_SECONDS = 10.0
CASE_MEMORY_BYTES = 1 << 30
DOCUMENTED = (
    errors.NotAnImage,
    errors.UnsupportedImageFormat,
    errors.CorruptImage,
    errors.ImageTooLarge,
    errors.UnusableImage,
)


def _seeds() -> list[bytes]:
    """Real files in every accepted format and several modes, small enough to mutate."""
    photo = catalogue_photo(garment(4), scale=2, pad=(6, 2))
    gray, rgb = photo.convert("L"), photo.convert("RGB")
    exif = hostile.exif_entries(3)
    return [
        encode(gray, "PNG"),
        encode(rgb.convert("RGBA"), "PNG"),
        encode(rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=8), "PNG", transparency=0),
        encode(Image.fromarray(np.asarray(gray, np.uint16) * 257), "PNG"),
        encode(rgb, "JPEG", quality=80),
        encode(rgb, "JPEG", quality=80, progressive=True),
        encode(gray, "GIF"),
        encode(rgb, "WEBP", quality=80),
        encode(gray, "WEBP", lossless=True),
        encode(gray, "TIFF"),
        encode(rgb, "TIFF", compression="tiff_deflate"),
        encode(gray, "BMP"),
        encode(rgb.convert("P"), "BMP"),
        # The structures the decoding budget reads before Pillow does (docs/security.md)
        hostile.jpeg_padded(markers=3, junk=3, fill=3),
        hostile.jpeg_repeated_scan(32, 32, 3),
        hostile.png_image(40, 30, 16, 6, True, before=hostile.png_chunk(b"eXIf", exif)),
        hostile.gif_comment(5),
        hostile.bmp_rle_runs(60, 30, rle4=True),
        hostile.tiff_strips(28, 28, 28),
        hostile.tiff_many_entries(20),
        hostile.webp_with_chunks(3),
    ]


SEEDS = _seeds()


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A seed file with bytes overwritten, 32-bit fields set to extreme values, or cut short."""
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 8))):
        if not data:  # deleted whole: a small seed can be
            break
        position = draw(st.integers(0, len(data) - 1))
        kind = draw(st.sampled_from(["byte", "field", "insert", "delete"]))
        if kind == "byte":
            data[position] = draw(st.integers(0, 255))
        elif kind == "field":  # sizes, offsets and counts live in 16- and 32-bit fields
            value = draw(st.sampled_from([0, 1, 0x7FFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF]))
            order = draw(st.sampled_from(["big", "little"]))
            data[position : position + 4] = value.to_bytes(4, order)
        elif kind == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=64))
        else:
            del data[position : position + draw(st.integers(1, 64))]
    if draw(st.booleans()):
        data = data[: draw(st.integers(0, len(data)))]
    return bytes(data)


def peak_rss_bytes() -> int:
    """This process's peak resident memory so far (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def assert_documented_outcome(data: bytes) -> None:
    """Decode and preprocess `data`: a 28x28 result or a documented error, in bounded time."""
    peak_before = peak_rss_bytes()
    started = time.perf_counter()
    try:
        pixels = to_model_input(decode_image(data, MAX_PIXELS, 20.0))
    except DOCUMENTED as error:
        assert error.detail and 400 <= error.status < 500
    else:
        assert pixels.shape == (28, 28) and pixels.dtype == np.uint8
    assert time.perf_counter() - started < CASE_SECONDS
    assert peak_rss_bytes() - peak_before < CASE_MEMORY_BYTES


def test_seeds_decode():
    for seed in SEEDS:
        assert to_model_input(decode_image(seed, MAX_PIXELS, 20.0)).shape == (28, 28)


@FUZZ
@given(mutated())
def test_mutated_images_raise_only_documented_errors(data):
    assert_documented_outcome(data)


@FUZZ
@given(
    st.one_of(
        st.binary(max_size=4096),
        # Right signature, random rest: reaches each decoder's header parser.
        st.tuples(st.sampled_from([seed[:12] for seed in SEEDS]), st.binary(max_size=512)).map(
            b"".join
        ),
    )
)
def test_random_bytes_raise_only_documented_errors(data):
    assert_documented_outcome(data)


@pytest.mark.parametrize("seed", range(len(SEEDS)))
def test_every_truncation_of_a_seed_is_handled(seed):
    data = SEEDS[seed]
    for end in range(0, len(data), max(1, len(data) // 64)):
        assert_documented_outcome(data[:end])
