"""Any image -> a 28x28 MNIST-style digit (white ink on black, fitted in 20x20, centred by centre of mass)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from service.errors import ClientError

SIZE, BOX = 28, 20
MIN_CONTRAST = 32  # ink must stand this far (0-255) above the background, or there is no digit
NO_DIGIT = "no digit found: the image has no ink that stands out from its background"
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
    """The background is what the image's border mostly is."""
    return float(np.median(np.concatenate([gray[0], gray[-1], gray[:, 0], gray[:, -1]]))) > 127


def white_on_black(gray: np.ndarray) -> np.ndarray:
    """Invert a light background, so that the ink is the bright part."""
    return 255.0 - gray if light_background(gray) else gray


def is_mnist_format(gray: np.ndarray) -> bool:
    """A 28x28 white-on-black image is taken as MNIST already: reframing it would only blur it."""
    return gray.shape == (SIZE, SIZE) and not light_background(gray)


def require_ink(gray: np.ndarray) -> float:
    """The background level (the median pixel); 422 when no pixel stands MIN_CONTRAST above it."""
    background = float(np.median(gray))
    if float(gray.max()) - background < MIN_CONTRAST:
        raise ClientError(422, NO_DIGIT)
    return background


def frame_digit(ink: np.ndarray) -> np.ndarray:
    """White-on-black float [H, W] -> uint8 [28, 28]: crop to the ink, fit in 20x20, centre by mass."""
    ink = np.clip(ink - require_ink(ink), 0, None)
    peak = float(ink.max())
    inked = ink > INK_FRACTION * peak
    rows, cols = np.flatnonzero(inked.any(axis=1)), np.flatnonzero(inked.any(axis=0))
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] * (255.0 / peak)

    height, width = crop.shape
    scale = BOX / max(height, width)
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    digit = np.asarray(Image.fromarray(crop.astype(np.float32), mode="F").resize(size, Image.Resampling.LANCZOS))
    digit = np.clip(digit, 0, 255)

    # Place the centre of mass at the centre of the 28x28 frame, as MNIST's makers did.
    total = digit.sum()
    cy, cx = (np.indices(digit.shape) * digit).reshape(2, -1).sum(axis=1) / total
    top = int(np.clip(round(SIZE / 2 - cy), 0, SIZE - digit.shape[0]))
    left = int(np.clip(round(SIZE / 2 - cx), 0, SIZE - digit.shape[1]))
    frame = np.zeros((SIZE, SIZE), dtype=np.float32)
    frame[top : top + digit.shape[0], left : left + digit.shape[1]] = digit
    return np.rint(frame).astype(np.uint8)


def to_mnist(image: Image.Image) -> np.ndarray:
    """The 28x28 uint8 image the model sees."""
    gray = white_on_black(to_gray(image))
    if is_mnist_format(gray):
        require_ink(gray)
        return np.rint(gray).astype(np.uint8)
    return frame_digit(gray)


def normalise(pixels: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 or float 0-255 [N, 28, 28] -> float32 [N, 1, 28, 28], as in training."""
    return ((np.asarray(pixels, dtype=np.float32) / 255.0 - mean) / std)[:, None, :, :]
