"""Catalogue-style photos of Fashion-MNIST images, and what the service makes of them.

A user uploads a photo, not a 28x28 array: the garment upscaled, a little soft, padded on a
light and often tinted background, as JPEG, PNG or WebP, sometimes with a transparent
background or rotated with an EXIF orientation. `render` draws one such photo from a 28x28
image; `round_trip` decodes and preprocesses it the way the service does. Training mixes
round-tripped images into its batches (TrainConfig.photo_fraction, drawn among
TrainConfig.photos_per_image photos of each image: `photo_sets`), so that the network knows
what preprocessing makes of photos; tests/test_photo_accuracy.py measures the gap between
photos and raw images through /predict with `styles(10_000, TEST_PHOTO_SEED)`, in order.
"""

from __future__ import annotations

import io
import os
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageFilter

from service.io.images import decode_image
from service.io.preprocessing import to_model_input
from service.settings import Settings
from training.data import IMAGE_SIZE as SIZE

# The service's default limits (far above any render here), not the environment's.
MAX_PIXELS = Settings.max_pixels
MAX_ASPECT_RATIO = Settings.max_aspect_ratio
EXIF_ORIENTATION = 0x0112
# Orientation tag -> the transpose that makes a stored image show upright under that tag
# (ImageOps.exif_transpose applies the inverse on decoding).
STORED_AS = {
    3: Image.Transpose.ROTATE_180,
    6: Image.Transpose.ROTATE_90,
    8: Image.Transpose.ROTATE_270,
}


@dataclass(frozen=True)
class PhotoStyle:
    """How one photo is rendered from a 28x28 image."""

    scale: int  # the garment's 28 pixels become 28 * scale
    blur: float  # Gaussian radius after upscaling, in photo pixels
    pad: tuple[int, int, int, int]  # left, top, right, bottom margins, in photo pixels
    background: tuple[int, int, int]  # the light backdrop's RGB
    format: str  # JPEG, PNG or WebP
    quality: int  # JPEG and WebP quality
    transparent: bool  # RGBA, the backdrop fully transparent (PNG and WebP only)
    orientation: int  # EXIF orientation tag: 1 upright, or 3, 6, 8 (stored rotated)

    @property
    def content_type(self) -> str:
        """The upload's media type."""
        return f"image/{self.format.lower()}"


def render(pixels: np.ndarray, style: PhotoStyle) -> bytes:
    """Draw `pixels` (28, 28) uint8, light on black, as a dark garment on a light backdrop."""
    side = SIZE * style.scale
    garment = Image.fromarray(255 - pixels).resize((side, side), Image.Resampling.BICUBIC)
    if style.blur:
        garment = garment.filter(ImageFilter.GaussianBlur(style.blur))
    left, top, right, bottom = style.pad
    size = (side + left + right, side + top + bottom)
    # The garment's darkness taken from the backdrop: 255 (white) keeps the backdrop's tint.
    ink = np.asarray(garment, dtype=np.float32)[..., np.newaxis] / 255
    backdrop = np.asarray(style.background, dtype=np.float32)
    photo_pixels = np.empty((size[1], size[0], 3), dtype=np.float32)
    photo_pixels[:] = backdrop
    photo_pixels[top : top + side, left : left + side] = backdrop * ink
    photo = Image.fromarray(np.rint(photo_pixels).astype(np.uint8), "RGB")
    if style.transparent:
        # A cut-out: the garment opaque, the backdrop transparent, edges anti-aliased over
        # the faintest intensities (below 8 of 255, which show as near-white anyway).
        alpha = np.zeros((size[1], size[0]), dtype=np.float32)
        alpha[top : top + side, left : left + side] = (255 - np.asarray(garment)) * 32.0
        photo.putalpha(Image.fromarray(np.clip(alpha, 0, 255).astype(np.uint8)))
    exif = Image.Exif()
    if style.orientation in STORED_AS:
        photo = photo.transpose(STORED_AS[style.orientation])
        exif[EXIF_ORIENTATION] = style.orientation
    out = io.BytesIO()
    options: dict[str, object] = {"exif": exif.tobytes()} if style.orientation != 1 else {}
    if style.format in ("JPEG", "WebP"):
        options["quality"] = style.quality
    photo.save(out, style.format.upper(), **options)
    return out.getvalue()


def round_trip(pixels: np.ndarray, style: PhotoStyle) -> np.ndarray:
    """What the service classifies for a photo of `pixels` in `style`: (28, 28) uint8."""
    image = decode_image(render(pixels, style), MAX_PIXELS, MAX_ASPECT_RATIO)
    return to_model_input(image)


def _style(
    rng: np.random.Generator, scales: tuple[int, ...], formats: tuple[str, ...]
) -> PhotoStyle:
    """One style drawn from `rng` (the ranges of STYLES and of training's photos)."""
    scale = int(rng.choice(scales))
    side = SIZE * scale
    pad = tuple(int(rng.integers(0, side // 2 + 1)) for _ in range(4))
    tinted = rng.random() < 0.5
    background = tuple(int(v) for v in rng.integers(215, 256, 3)) if tinted else (255, 255, 255)
    image_format = str(rng.choice(formats))
    return PhotoStyle(
        scale=scale,
        blur=float(rng.choice((0.0, 0.0, 0.5, 1.0, 2.0))) * scale / 4,
        pad=(pad[0], pad[1], pad[2], pad[3]),
        background=(background[0], background[1], background[2]),
        format=image_format,
        quality=int(rng.integers(70, 96)),
        transparent=image_format != "JPEG" and rng.random() < 0.25,
        orientation=int(rng.choice((1, 1, 1, 3, 6, 8))),
    )


# Test photos go up to 12 times the original's size; training's stop at 8, whose preprocessed
# images differ little from larger ones' and which cost a fraction of the time to make.
TEST_SCALES = (3, 4, 6, 8, 12)
TRAINING_SCALES = (3, 4, 6, 8)
TEST_PHOTO_SEED = 2017  # the test images' photo styles: a seed no training run takes by default
FORMATS = ("JPEG", "PNG", "WebP")


def styles(count: int, seed: int, scales: tuple[int, ...] = TEST_SCALES) -> list[PhotoStyle]:
    """`count` styles drawn with `seed`: upscaled by one of `scales`, blur, uneven padding,
    white or tinted backdrops, JPEG, PNG or WebP, some transparent, some stored rotated."""
    rng = np.random.default_rng(seed)
    return [_style(rng, scales, FORMATS) for _ in range(count)]


def _round_trip_chunk(job: tuple[np.ndarray, list[PhotoStyle]]) -> np.ndarray:
    """Round-trip a chunk of images, one style each (run in a worker process)."""
    images, chunk_styles = job
    return np.stack(
        [round_trip(pixels, style) for pixels, style in zip(images, chunk_styles, strict=True)]
    )


def photo_versions(
    images: np.ndarray,
    seed: int,
    scales: tuple[int, ...] = TRAINING_SCALES,
    chunk: int = 2000,
) -> np.ndarray:
    """Each image (N, 28, 28) round-tripped through a photo of a style of its own, drawn with
    `seed`, on every core; a progress line per tenth."""
    all_styles = styles(len(images), seed, scales)
    jobs = [
        (images[start : start + chunk], all_styles[start : start + chunk])
        for start in range(0, len(images), chunk)
    ]
    started, done, results = time.perf_counter(), 0, []
    with ProcessPoolExecutor(os.cpu_count()) as pool:
        for result in pool.map(_round_trip_chunk, jobs):
            results.append(result)
            done += len(result)
            if len(results) % max(1, len(jobs) // 10) == 0 or done == len(images):
                print(
                    f"photos: {done}/{len(images)} rendered and preprocessed "
                    f"in {time.perf_counter() - started:.0f}s",
                    flush=True,
                )
    return np.concatenate(results) if results else images[:0].copy()


def photo_sets(
    images: np.ndarray, seed: int, count: int, scales: tuple[int, ...] = TRAINING_SCALES
) -> np.ndarray:
    """`count` photos of each image (N, 28, 28), each of a style of its own drawn with `seed`,
    round-tripped: (N, count, 28, 28). The first of each is `photo_versions`'s."""
    flat = photo_versions(np.tile(images, (count, 1, 1)), seed, scales)
    return flat.reshape(count, len(images), SIZE, SIZE).swapaxes(0, 1)
