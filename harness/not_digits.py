"""Images that are not digits, for measuring `min_confidence` (accuracy/bench_unsure.py, tests): letters and
symbols rendered in several fonts, drawn shapes, noise and textures, as PNG files the way a client would send
them (dark ink on light paper, 112x112). Seeded: the same set every time.
"""

from __future__ import annotations

import string
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from harness.digits import encode

SIZE = 112
FONTS = Path(matplotlib.get_data_path()) / "fonts" / "ttf"  # shipped with matplotlib: the same on every machine
FONT_FILES = ("DejaVuSans.ttf", "DejaVuSans-Bold.ttf", "DejaVuSerif-Italic.ttf", "DejaVuSansMono.ttf", "cmr10.ttf")
LETTERS = string.ascii_letters
SYMBOLS = "+-=×÷?!@#$%&*()[]{}<>/\\~^_|πΣΩλµ€£¥§¶©®→←↑↓★♥♦♣♠☺✓✗∞≈≠≤≥∑√∫"
KINDS = ("letter", "symbol", "shape", "noise", "texture")


def rendered(char: str, font_file: str) -> Image.Image | None:
    """`char` in black on white, filling most of the square; None when the font lacks it (nothing drawn)."""
    font = ImageFont.truetype(str(FONTS / font_file), 80)
    image = Image.new("L", (SIZE, SIZE), 255)
    draw = ImageDraw.Draw(image)
    left, top, right, bottom = draw.textbbox((0, 0), char, font=font)
    if right - left < 2 and bottom - top < 2:
        return None
    draw.text(((SIZE - (right - left)) / 2 - left, (SIZE - (bottom - top)) / 2 - top), char, font=font, fill=0)
    return None if np.asarray(image).min() > 128 else image


def shape(rng: np.random.Generator) -> Image.Image:
    image = Image.new("L", (SIZE, SIZE), 255)
    draw = ImageDraw.Draw(image)
    width = int(rng.integers(3, 10))
    box = sorted(rng.integers(10, SIZE - 10, 2)), sorted(rng.integers(10, SIZE - 10, 2))
    (x0, x1), (y0, y1) = box
    x1, y1 = max(x1, x0 + 20), max(y1, y0 + 20)
    kind = rng.integers(5)
    if kind == 0:
        draw.ellipse((x0, y0, x1, y1), outline=0, width=width)
    elif kind == 1:
        draw.rectangle((x0, y0, x1, y1), outline=0, width=width)
    elif kind == 2:
        draw.polygon([tuple(p) for p in rng.integers(10, SIZE - 10, (3, 2))], outline=0, width=width)
    elif kind == 3:
        draw.ellipse((x0, y0, x1, y1), fill=0)
    else:
        draw.line([tuple(p) for p in rng.integers(10, SIZE - 10, (int(rng.integers(3, 7)), 2))], fill=0, width=width)
    return image


def noise(rng: np.random.Generator) -> Image.Image:
    kind = rng.integers(3)
    if kind == 0:
        pixels = rng.integers(0, 256, (SIZE, SIZE))
    elif kind == 1:
        pixels = np.where(rng.random((SIZE, SIZE)) < rng.uniform(0.02, 0.2), 0, 255)
    else:  # blotches: coarse noise enlarged
        coarse = rng.integers(0, 256, (8, 8)).astype(np.uint8)
        return Image.fromarray(coarse, "L").resize((SIZE, SIZE), Image.Resampling.BICUBIC)
    return Image.fromarray(pixels.astype(np.uint8), "L")


def texture(rng: np.random.Generator) -> Image.Image:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    period, angle = rng.uniform(6, 24), rng.uniform(0, np.pi)
    kind = rng.integers(3)
    if kind == 0:  # stripes
        value = np.sin((x * np.cos(angle) + y * np.sin(angle)) * 2 * np.pi / period)
    elif kind == 1:  # checkerboard
        value = np.sign(np.sin(x * 2 * np.pi / period) * np.sin(y * 2 * np.pi / period))
    else:  # concentric rings
        value = np.sin(np.hypot(x - SIZE / 2, y - SIZE / 2) * 2 * np.pi / period)
    return Image.fromarray(((value > 0) * 255).astype(np.uint8), "L")


def not_digits(seed: int = 0, per_generated_kind: int = 60) -> list[tuple[str, str, bytes]]:
    """(kind, name, PNG bytes) for every letter and symbol in every font that has it, and `per_generated_kind`
    shapes, noise images and textures."""
    items = []
    for font_file in FONT_FILES:
        seen = set()  # a font without a glyph draws the same placeholder box for each: keep one
        for kind, chars in (("letter", LETTERS), ("symbol", SYMBOLS)):
            for char in chars:
                if (image := rendered(char, font_file)) is not None and (data := encode(image)) not in seen:
                    seen.add(data)
                    items.append((kind, f"{char} {font_file}", data))
    rng = np.random.default_rng(seed)
    for kind, make in (("shape", shape), ("noise", noise), ("texture", texture)):
        items += [(kind, f"{kind} {i}", encode(make(rng))) for i in range(per_generated_kind)]
    return items
