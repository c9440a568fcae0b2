"""Written numbers made of MNIST test digits, for /read: the digits side by side on one strip, with gaps of any
width or touching, then rendered the ways the photo suite renders one digit (harness/photos.py) and as canvas
drawings. Deterministic for a seed. Only ever feed it MNIST *test* digits.

    number_strip   digits -> one white-on-black strip (28 rows and a margin) and the number it shows
    number_image   a strip -> image bytes, as a photo (photos.CONDITIONS), a canvas drawing or a transparent one
    hairline_number  "174" drawn one pixel wide in light grey, its digits' boxes: strokes thinner than a pixel
"""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

from harness.digits import encode
from harness.photos import CONDITIONS, photo

CANVASES = ("canvas", "transparent")  # white strokes on black, and a browser canvas's strokes on transparency
RENDERINGS = CONDITIONS + CANVASES


def number_strip(images: np.ndarray, rng: np.random.Generator, touching: bool = False) -> np.ndarray:
    """MNIST digits side by side, white on black, uint8 [36, W]: each cut to its ink's columns, a pixel or two up
    or down, with gaps of 2-14 px between them, or (`touching`) overlapping by 1-4 px, where the ink adds up."""
    parts = []
    for pixels in images:
        columns = np.flatnonzero(pixels.max(axis=0) > 40)
        parts.append(pixels[:, columns[0] : columns[-1] + 1] if len(columns) else pixels)
    gaps = -rng.integers(1, 5, len(parts)) if touching else rng.integers(2, 15, len(parts))
    width = sum(p.shape[1] for p in parts) + int(gaps[1:].sum()) + 16
    strip = np.zeros((36, width), np.int32)
    x = 8
    for n, part in enumerate(parts):
        if n:
            x += int(gaps[n])
        y = 4 + int(rng.integers(-2, 3))
        strip[y : y + 28, x : x + part.shape[1]] += part
        x += part.shape[1]
    return np.clip(strip, 0, 255).astype(np.uint8)


def number_image(strip: np.ndarray, rendering: str, seed: int) -> bytes:
    """The strip as a phone photo (a condition of harness/photos.py), or as a drawing at 5-8x: white strokes on a
    black canvas (PNG), or black strokes on a transparent one (RGBA PNG, as a browser's canvas gives them)."""
    if rendering in CONDITIONS:
        return photo(strip, rendering, seed)
    scale = int(np.random.default_rng(seed).integers(5, 9))
    size = (strip.shape[1] * scale, strip.shape[0] * scale)
    strokes = Image.fromarray(strip).resize(size, Image.Resampling.BICUBIC)
    if rendering == "canvas":
        return encode(strokes.convert("RGB"), compress_level=1)
    canvas = Image.new("RGBA", size, (0, 0, 0, 0))
    canvas.putalpha(strokes)
    return encode(canvas, compress_level=1)


def number_set(
    images: np.ndarray, labels: np.ndarray, count: int, rendering: str, touching: bool = False, seed: int = 0
) -> list[tuple[bytes, str]]:
    """`count` numbers of 2-6 digits (one in five of 7-12), digits drawn in turn from `images`, each rendered
    `rendering`: (image bytes, the number)."""
    rng = np.random.default_rng([seed, RENDERINGS.index(rendering), touching])
    out, at = [], 0
    for n in range(count):
        length = int(rng.integers(7, 13)) if rng.random() < 0.2 else int(rng.integers(2, 7))
        index = np.arange(at, at + length) % len(images)
        at += length
        strip = number_strip(images[index], rng, touching)
        out.append((number_image(strip, rendering, seed * 100_003 + n), "".join(map(str, labels[index]))))
    return out


def hairline_number() -> tuple[bytes, list[tuple[int, int, int, int]]]:
    """ "174" drawn one pixel wide in light grey on a 120x60 label (a Hairline font's strokes at a small size: no
    3x3 patch of it is dark enough to be ink, runs of three pixels are), as a PNG; and each digit's box
    (left, top, right, bottom)."""
    page = Image.new("L", (120, 60), 235)
    draw = ImageDraw.Draw(page)
    draw.line([(30, 15), (30, 45)], fill=170)  # 1
    draw.line([(50, 15), (70, 15), (58, 45)], fill=170)  # 7
    draw.line([(95, 15), (84, 35), (100, 35)], fill=170)  # 4: its slant and bar...
    draw.line([(96, 25), (96, 45)], fill=170)  # ...and its stem
    return encode(page), [(30, 15, 31, 46), (50, 15, 71, 46), (84, 15, 101, 46)]
