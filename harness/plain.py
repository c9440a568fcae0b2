"""Plain digit images, the kinds that are not photos: another data set's digits, digits cut out close, printed
digits. Deterministic; used by the tests and by `make bench-plain`.

    uci_digits       scikit-learn's bundled UCI handwritten digits (1,797 by 43 writers, 8x8, 17 grey levels),
                     enlarged, white on black as the data set stores them or inverted
    at_8x8           MNIST digits brought down to the UCI digits' 8x8 and enlarged the same way: the control that
                     says how much of the UCI figure is the resolution, not the writers
    variant          one MNIST digit padded or cut to its ink, scaled, stretched, inverted, in a colour mode and
                     a file format: the space the property test draws from
    printed_digits   0-9 rendered in a font, dark on light, at a few sizes and small rotations
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image, ImageFont

from harness.digits import encode
from training.printed import render

DISPLAY_WEIGHTS = ("Hairline", "Thin")  # display weights: strokes a fraction of a pixel wide at 16 px


def text_weight(font: Path) -> bool:
    """Whether `font` is a text weight, not a display one (Lato-Hairline, Cantarell-Thin...)."""
    return not any(word in font.stem for word in DISPLAY_WEIGHTS)


def enlarge(pixels: np.ndarray, size: int) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC))


def uci_digits(size: int, inverted: bool = False) -> tuple[list[bytes], np.ndarray]:
    """All 1,797 UCI digits as `size`x`size` grey PNGs (bicubic enlargement of the 8x8 originals), and labels."""
    from sklearn.datasets import load_digits  # bundled with scikit-learn: nothing is downloaded

    data = load_digits()
    small = np.rint(data.images / 16 * 255).astype(np.uint8)
    images = [enlarge(p, size) for p in small]
    return [encode(Image.fromarray(255 - p if inverted else p)) for p in images], data.target


def at_8x8(images: np.ndarray, size: int, inverted: bool = False) -> list[bytes]:
    """MNIST digits (uint8 [N, 28, 28]) at the UCI digits' resolution: the 20x20 box MNIST fits each digit in,
    averaged down to 8x8, then enlarged as `uci_digits` does."""
    small = [np.asarray(Image.fromarray(p[4:24, 4:24]).resize((8, 8), Image.Resampling.BOX)) for p in images]
    return [encode(Image.fromarray(255 - e if inverted else e)) for e in (enlarge(p, size) for p in small)]


def cut_to_ink(pixels: np.ndarray) -> np.ndarray:
    """A white-on-black digit cut to the box of its nonzero pixels: its strokes touch all four edges."""
    rows, cols = np.flatnonzero(pixels.max(1) > 0), np.flatnonzero(pixels.max(0) > 0)
    return pixels[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]


def variant(
    pixels: np.ndarray,
    pad: int | None,
    long_side: int,
    stretch: float,
    inverted: bool,
    mode: str,
    fmt: str,
    quality: int = 90,
) -> bytes:
    """A 28x28 MNIST digit as a client might send it: padded by `pad` px of background (None: cut to its ink,
    touching all four edges), scaled to `long_side` px on its long side, stretched by `stretch` (> 1: wider,
    < 1: taller), white on black or `inverted`, in `mode` ("L", "RGB", or "LA": strokes on a transparent
    background) and `fmt` ("PNG" or "JPEG" at `quality`; JPEG has no transparency, so "LA" is sent as PNG)."""
    digit = cut_to_ink(pixels) if pad is None else np.pad(cut_to_ink(pixels), pad)
    height, width = digit.shape[0], digit.shape[1] * stretch
    scale = long_side / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    ink = Image.fromarray(digit).resize(size, Image.Resampling.BICUBIC)
    if mode == "LA":
        image = Image.new("LA", size, (255 if inverted else 0, 0))
        image.putalpha(ink)
        return encode(image)
    image = Image.fromarray(255 - np.asarray(ink)) if inverted else ink
    image = image.convert(mode)
    return encode(image, fmt, quality=quality) if fmt == "JPEG" else encode(image, fmt)


def printed_digits(
    font: Path, sizes: tuple[int, ...] = (16, 32, 64), angles: tuple[float, ...] = (-4.0, 0.0, 4.0)
) -> tuple[list[bytes], np.ndarray]:
    """0-9 in `font`, dark grey on an off-white label with a margin of half the digit's height, at each of
    `sizes` (px, the font's size) and rotated by each of `angles` (degrees), as PNGs; and their labels. The test
    fonts are `training.printed.font_files(test=True)`: training never renders them."""
    files, labels = [], []
    for size in sizes:
        face = ImageFont.truetype(str(font), size)
        for digit in range(10):
            for angle in angles:
                files.append(encode(render(face, digit, angle, ink=30, paper=235)))
                labels.append(digit)
    return files, np.array(labels)
