"""Any image -> a 28x28 MNIST-style digit (white ink on black, fitted in 20x20, centred by centre of mass)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from PIL import Image

from service.decode import decode_image
from service.errors import ClientError
from service.photo import (
    NO_DIGIT,
    THIN_ENLARGE,
    FillsFrame,
    ThinStrokes,
    edge_pixels,
    enlarged_for_thin_strokes,
    find_digit,
)

Box = tuple[int, int, int, int]

SIZE, BOX = 28, 20
DARK = 64  # a background at or below this (0-255) is dark: the ink is the bright part
BORDER_SPLIT = 0.15  # a border within this of half light, half dark does not decide the polarity alone
MIN_CONTRAST = 32  # ink must stand this far (0-255) above the background, or there is no digit
SQUAT = 1.15  # ink this many times wider than tall is seldom one digit
INK_FRACTION = 0.25  # pixels above this fraction of the peak ink count for the bounding box (noise tolerance)


def to_gray(image: Image.Image) -> np.ndarray:
    """float32 [H, W] in 0-255 from any mode. On a transparent canvas the alpha channel is the ink."""
    if "A" in image.getbands() or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA") if image.mode != "LA" else image
        alpha = np.asarray(rgba.getchannel("A"), dtype=np.float32)
        if alpha.min() < 255:
            # Strokes drawn on a transparent canvas: whatever their colour, they are where alpha is
            # (already bright ink on a dark, transparent background).
            return alpha
        image = rgba.convert("RGB")
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        pixels = np.asarray(image, dtype=np.float32)
        peak = 65535.0 if image.mode.startswith("I;16") else max(float(pixels.max()), 1.0)
        return np.clip(pixels / peak * 255.0, 0, 255)
    return np.asarray(image.convert("L"), dtype=np.float32)


def light_background(gray: np.ndarray) -> bool:
    """Paper (dark ink on a light ground), not a dark screen, canvas or chalkboard (light ink on a dark one).

    The evidence is the image's border, by majority: the ground surrounds the digit, so it holds most of the
    border even when the digit touches every edge (a digit cropped to its ink covers a fifth of its border, a
    third at most in MNIST and in scikit-learn's digits), and a photographed sheet stays above DARK even where a
    shadow covers part of its edge. Where the border is split nearly evenly, the whole image's brightness decides:
    a digit covers a minority of a tight crop's pixels far more often than paper covers a minority of a photo's."""
    border = edge_pixels(gray)
    light_share = np.count_nonzero(border > DARK) / border.size
    if abs(light_share - 0.5) > BORDER_SPLIT:
        return light_share > 0.5
    # Counted, not np.percentile / np.median (10x the cost on a 28x28 image): the same test.
    sample = gray[::4, ::4] if gray.size > 4096 else gray
    return np.count_nonzero(sample > DARK) > sample.size / 2


def require_ink(gray: np.ndarray) -> float:
    """The background level of white ink on a dark ground; 422 when no pixel stands MIN_CONTRAST above it. The
    level is the median pixel, or the border's median where that is darker: a digit cropped to its ink (a "1")
    can cover most of the image, never most of its border (light_background)."""
    border = edge_pixels(gray)
    background = min(middle_value(gray.ravel()), middle_value(border))
    if float(gray.max()) - background < MIN_CONTRAST:
        raise ClientError(422, NO_DIGIT)
    return background


def middle_value(values: np.ndarray) -> float:
    """The median, without np.median's overhead (a third of the time on a 28x28 image)."""
    middle = len(values) // 2
    return float(np.partition(values, middle)[middle])


def crop_to_ink(ink: np.ndarray) -> tuple[np.ndarray, Box]:
    """White-on-black float [H, W] -> its inked part, background removed, and that part's box in `ink`."""
    ink = np.clip(ink - require_ink(ink), 0, None)
    peak = float(ink.max())
    inked = ink > INK_FRACTION * peak
    rows, cols = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    box = (int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1)
    return ink[box[1] : box[3], box[0] : box[2]] * (255.0 / peak), box


def fit_and_centre(crop: np.ndarray) -> np.ndarray:
    """A digit's ink, white on black 0-255, cropped to it -> uint8 [28, 28]: fitted in 20x20 keeping its aspect
    ratio, its centre of mass at the centre, as MNIST's makers did."""
    height, width = crop.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = np.asarray(Image.fromarray(crop.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS))
    digit = np.clip(digit, 0, 255)
    total = digit.sum()
    if total <= 0:  # Lanczos ringing can cancel a lone faint pixel
        raise ClientError(422, NO_DIGIT)
    cy, cx = (np.indices(digit.shape) * digit).reshape(2, -1).sum(axis=1) / total
    top = int(np.clip(round(SIZE / 2 - cy), 0, SIZE - digit.shape[0]))
    left = int(np.clip(round(SIZE / 2 - cx), 0, SIZE - digit.shape[1]))
    frame = np.zeros((SIZE, SIZE), dtype=np.float32)
    frame[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return np.rint(frame).astype(np.uint8)


@dataclass(frozen=True)
class Digit:
    pixels: np.ndarray  # uint8 [28, 28], what the model sees
    box: Box  # (left, top, right, bottom) of the digit in the image it was found in, right and bottom exclusive
    several: bool = False  # the image may hold more than one digit: more marks beside it, or ink far wider than tall


def looks_several(crop: np.ndarray) -> bool:
    """Whether white-on-black ink cropped to its box may be several digits side by side: wider than tall
    (SQUAT; a digit seldom is), or split by an empty column between two parts a quarter of it wide or more."""
    height, width = crop.shape
    if width > SQUAT * height:
        return True
    columns = crop.max(axis=0) > INK_FRACTION * 255
    empty = np.flatnonzero(~columns)
    return bool(len(empty)) and min(empty[0], width - 1 - empty[-1]) >= width // 4


def to_mnist(image: Image.Image) -> Digit:
    """The 28x28 uint8 image the model sees, and where in `image` the digit was.

    A light background is paper: the digit is found as ink darker than the paper around it (service/photo.py),
    which copes with uneven light, shadows, ruled lines and specks. A dark background (MNIST itself, a canvas's
    transparent strokes, chalk) is already white on black: cropped to the ink. A 28x28 image is MNIST format
    already, or its negative: passed through as it is (inverted if the background is light)."""
    gray = to_gray(image)
    light = light_background(gray)
    if gray.shape == (SIZE, SIZE):  # MNIST already (or its negative): reframing it would only blur it
        gray = 255 - gray if light else gray
        require_ink(gray)
        return Digit(np.rint(gray).astype(np.uint8), (0, 0, SIZE, SIZE))
    others = False
    if not light:
        crop, box = crop_to_ink(gray)
    else:
        try:
            crop, box, others = find_digit_on_paper(gray)
        except FillsFrame:  # cut out close: its ground is even, and the strokes that reach its edges are the digit
            crop, box = crop_to_ink(255 - gray)
    return Digit(fit_and_centre(crop), box, others or looks_several(crop))


def find_digit_on_paper(gray: np.ndarray) -> tuple[np.ndarray, Box, bool]:
    """service.photo.find_digit, and where the strokes are thinner than a pixel (a Thin or Hairline font, a fine
    pen in a small image), find_digit again on the image enlarged (thin=True: their darkness taken along them),
    the box scaled back. Only what would have been refused as no digit is looked at twice."""
    try:
        return find_digit(gray, close_crops=True)
    except ThinStrokes:
        enlarged = enlarged_for_thin_strokes(gray)
    crop, box, others = find_digit(enlarged, close_crops=True, thin=True)
    left, top, right, bottom = (round(side / THIN_ENLARGE) for side in box)
    return crop, (left, top, right, bottom), others


def read_digit(data: bytes, max_pixels: int) -> Digit:
    """Image bytes -> the digit the model sees, its box in the pixels of the full image as displayed."""
    decoded = decode_image(data, max_pixels)
    digit = to_mnist(decoded.image)
    (sx, sy), (left, top, right, bottom) = decoded.scale, digit.box
    return replace(digit, box=(round(left * sx), round(top * sy), round(right * sx), round(bottom * sy)))
