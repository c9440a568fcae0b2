"""Printed digits for training (`--printed SHARE`): 0-9 rendered in the machine's fonts, read into MNIST's format by
the service's own reading (service/preprocess.py), so that the network learns printed shapes as the service will
show them: a "1" with a flag and a foot, a "7" with a bar, old-style figures, bold and condensed faces.

The fonts are split by family: the test families (TEST_FAMILIES, what `make bench-plain` reports) are never
rendered here, so that its printed-digit figure measures fonts the network has not seen. Fonts come from Debian's
fonts-* packages (`make install-fonts`); a font without the ten ASCII digits (most of Noto's scripts) is skipped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from fontTools.ttLib import TTFont
from PIL import Image, ImageDraw, ImageFont

from service.errors import ClientError
from service.preprocess import to_mnist

FONT_DIRS = (Path("/usr/share/fonts/truetype"), Path("/usr/share/fonts/opentype"))
# Held out for the benchmark (harness/plain.py): Debian's DejaVu, Liberation, FreeFont, Lato and Cantarell.
TEST_FAMILIES = ("dejavu", "liberation", "freefont", "lato", "cantarell")
NOT_TEXT = ("Math", "Symbol", "Dingbats", "Emoji", "Music")  # fonts whose digits are not plain figures, if any


def has_digits(path: Path) -> bool:
    """Whether the font maps all of 0-9 (rather than drawing a missing glyph's box)."""
    try:
        with TTFont(str(path), lazy=True, fontNumber=0) as font:
            cmap = font.getBestCmap() or {}
    except Exception:  # a font file fontTools cannot read is no font for this
        return False
    return all(ord(str(d)) in cmap for d in range(10))


def font_files(test: bool) -> list[Path]:
    """The machine's text fonts with all ten digits, by path: the test families' (`test`), or all the others."""
    found = sorted({p for d in FONT_DIRS if d.exists() for p in d.rglob("*") if p.suffix.lower() in (".ttf", ".otf")})
    return [
        p for p in found if is_test_font(p) == test and not any(word in p.name for word in NOT_TEXT) and has_digits(p)
    ]


def is_test_font(path: Path) -> bool:
    return any(family in part.lower() for part in path.parts for family in TEST_FAMILIES)


def render(font: ImageFont.FreeTypeFont, digit: int, angle: float, ink: int, paper: int) -> Image.Image:
    """`digit` in `font`, `ink` on `paper` (grey levels), with a margin of half its height, rotated by `angle`."""
    left, top, right, bottom = font.getbbox(str(digit))
    margin = max(2, (bottom - top) // 2)
    canvas = Image.new("L", (right - left + 2 * margin, bottom - top + 2 * margin), 0)
    ImageDraw.Draw(canvas).text((margin - left, margin - top), str(digit), fill=255, font=font)
    coverage = np.asarray(canvas.rotate(angle, Image.Resampling.BICUBIC, expand=True, fillcolor=0), np.float32) / 255
    return Image.fromarray(np.rint(paper + (ink - paper) * coverage).astype(np.uint8))


def printed_bank(fonts: list[Path], per_digit: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """`per_digit` renderings of each digit in each font (size 14-72 px, -6 to 6 degrees, dark ink on a light
    ground of random greys), each read into MNIST format by the service: uint8 [N, 28, 28] and labels [N]. A
    rendering the service refuses (a hairline face at a small size) is left out."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for path in fonts:
        for _ in range(per_digit):
            font = ImageFont.truetype(str(path), int(rng.integers(14, 73)))
            for digit in range(10):
                image = render(font, digit, rng.uniform(-6, 6), int(rng.integers(0, 90)), int(rng.integers(170, 256)))
                try:
                    images.append(to_mnist(image).pixels)
                except ClientError:
                    continue
                labels.append(digit)
    return np.stack(images), np.array(labels, np.int64)
