"""The 15 corruptions of MNIST-C (Mu & Gilmer, 2019, arXiv:1906.02337), written here from the paper's description
at its chosen severities, applied to the MNIST test set: `python -m training evaluate MODEL --corruptions`.

Each corruption maps uint8 [N, 28, 28] (white ink on black) to uint8 [N, 28, 28], drawing any randomness from the
numpy Generator it is given, so that a seed gives the same corrupted set every time. None of this code is used in
training (training/augment.py is generic on purpose): the benchmark measures what the model was not shown.
"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

SIZE = 28
CENTRE = (SIZE - 1) / 2


def as_unit(images: np.ndarray) -> np.ndarray:
    return images.astype(np.float32) / 255


def as_uint8(images: np.ndarray) -> np.ndarray:
    return (np.clip(images, 0, 1) * 255).round().astype(np.uint8)


def blur(image: np.ndarray, sigma: float) -> np.ndarray:
    return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)


def warp(images: np.ndarray, matrix: Callable[[int], np.ndarray]) -> np.ndarray:
    """Each image resampled (bilinear, black outside) through its 2x3 matrix from output to input coordinates."""
    flags = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    return np.stack([cv2.warpAffine(image, matrix(i), (SIZE, SIZE), flags=flags) for i, image in enumerate(images)])


def about_centre(linear: np.ndarray) -> np.ndarray:
    """The 2x3 affine matrix of a 2x2 linear map that keeps the image's centre where it is."""
    offset = np.array([CENTRE, CENTRE]) - linear @ np.array([CENTRE, CENTRE])
    return np.hstack([linear, offset[:, None]]).astype(np.float32)


def shot_noise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Poisson noise: each pixel a photon count of mean 3 x its brightness, rescaled."""
    return as_uint8(rng.poisson(as_unit(images) * 3) / 3)


def impulse_noise(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Salt and pepper: 17% of pixels set to black or white, half each."""
    x = as_unit(images)
    hit = rng.random(x.shape) < 0.17
    return as_uint8(np.where(hit, rng.random(x.shape) < 0.5, x))


def glass_blur(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Blur (sigma 0.7), then pixels swapped with a neighbour up to 1 pixel away, twice over, then blur again."""
    x = np.stack([blur(image, 0.7) for image in as_unit(images)])
    n, rows = len(x), np.arange(len(x))
    for _ in range(2):
        for h in range(SIZE - 1, 1, -1):
            for w in range(SIZE - 1, 1, -1):
                swap = rng.random(n) < 0.5
                dy, dx = rng.integers(-1, 1, size=(2, n), endpoint=False)
                h2, w2 = h + dy, w + dx
                here, there = x[rows, h, w].copy(), x[rows, h2, w2].copy()
                x[rows, h, w] = np.where(swap, there, here)
                x[rows, h2, w2] = np.where(swap, here, there)
    return as_uint8(np.stack([blur(image, 0.7) for image in x]))


def motion_blur(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A smear along a random direction within 45 degrees of horizontal: a one-sided Gaussian-weighted streak of
    up to 10 pixels (sigma 3)."""
    steps = np.arange(11)
    weights = np.exp(-(steps**2) / (2 * 3.0**2))
    weights /= weights.sum()
    out = []
    for image, angle in zip(as_unit(images), np.radians(rng.uniform(-45, 45, len(images))), strict=True):
        kernel = np.zeros((21, 21), np.float32)
        for step, weight in zip(steps, weights, strict=True):
            kernel[round(10 + step * np.sin(angle)), round(10 + step * np.cos(angle))] += weight
        out.append(cv2.filter2D(image, -1, kernel, borderType=cv2.BORDER_CONSTANT))
    return as_uint8(np.stack(out))


def shear(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Sheared horizontally by 0.4 rad, either way, about the centre."""
    signs = rng.choice([-1, 1], len(images))
    return warp(images, lambda i: about_centre(np.array([[1, -np.sin(0.4 * signs[i])], [0, np.cos(0.4 * signs[i])]])))


def scale(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shrunk to 70% about the centre."""
    return warp(images, lambda i: about_centre(np.eye(2) / 0.7))


def rotate(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotated by 0.4 rad (23 degrees), either way, about the centre."""
    angles = 0.4 * rng.choice([-1, 1], len(images))
    return warp(
        images,
        lambda i: about_centre(
            np.array([[np.cos(angles[i]), -np.sin(angles[i])], [np.sin(angles[i]), np.cos(angles[i])]])
        ),
    )


def brightness(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Half of full brightness added to every pixel (HSV value + 0.5 on a grey image)."""
    return as_uint8(as_unit(images) + 0.5)


def translate(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Moved by 3 pixels along each axis, in random directions."""
    shifts = 3 * rng.choice([-1, 1], size=(len(images), 2))
    return warp(images, lambda i: np.hstack([np.eye(2), -shifts[i][:, None]]).astype(np.float32))


def stripe(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The left and right quarters (7 columns each) inverted."""
    out = images.copy()
    out[:, :, :7] = 255 - out[:, :, :7]
    out[:, :, 21:] = 255 - out[:, :, 21:]
    return out


def fog(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A fractal cloud (diamond-square, roughness decay 1.4) added at 3x full brightness, the sum scaled back so
    that the digit keeps its share: a faint digit in a bright, uneven haze."""
    x = as_unit(images)
    peak = x.max(axis=(1, 2), keepdims=True)
    haze = np.stack([plasma(32, 1.4, rng)[:SIZE, :SIZE] for _ in images])
    return as_uint8((x + 3 * haze) * peak / (peak + 3))


def plasma(size: int, decay: float, rng: np.random.Generator) -> np.ndarray:
    """A square fractal height map in [0, 1] by the diamond-square algorithm (`size` a power of two)."""
    grid = np.zeros((size, size))
    step, wibble = size, 100.0
    while step >= 2:
        half = step // 2
        corners = grid[0:size:step, 0:size:step]
        square = corners + np.roll(corners, -1, 0)
        square = square + np.roll(square, -1, 1)
        grid[half:size:step, half:size:step] = square / 4 + wibble * rng.uniform(-wibble, wibble, square.shape)
        centres = grid[half:size:step, half:size:step]
        for rows, cols, neighbours in (
            (slice(0, size, step), slice(half, size, step), np.roll(centres, 1, 0) + centres),
            (slice(half, size, step), slice(0, size, step), np.roll(centres, 1, 1) + centres),
        ):
            ends = corners + np.roll(corners, -1, 1) if rows.start == 0 else corners + np.roll(corners, -1, 0)
            total = neighbours + ends
            grid[rows, cols] = total / 4 + wibble * rng.uniform(-wibble, wibble, total.shape)
        step //= 2
        wibble /= decay
    grid -= grid.min()
    return grid / grid.max()


def spatter(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Mud: blobs where smoothed noise peaks, painted dark grey (63/255) over the image."""
    out = []
    for image in as_unit(images):
        liquid = blur(rng.normal(0.65, 0.3, image.shape).astype(np.float32), 1)
        mask = blur((liquid > 0.65).astype(np.float32), 1.5)
        mask[mask < 0.8] = 0
        out.append(image * (1 - mask) + 63 / 255 * mask)
    return as_uint8(np.stack(out))


def soft_line(c0: float, r0: float, c1: float, r1: float) -> np.ndarray:
    """A 28x28 layer with an anti-aliased line about 4 pixels wide through (c0, r0) and (c1, r1), between c0 and c1."""
    if c1 == c0:
        return np.zeros((SIZE, SIZE), np.float32)
    cols, rows = np.meshgrid(np.arange(SIZE), np.arange(SIZE))
    slope = (r1 - r0) / (c1 - c0)
    distance = np.clip(np.abs(rows - (slope * (cols - c0) + r0)), 0, 2.3 - 1e-9)
    layer = np.clip(np.log(1 - distance / 2.3) + 1, 0, 1)
    layer[:, : int(np.floor(c0))] = 0
    layer[:, int(np.ceil(c1)) :] = 0
    return layer.astype(np.float32)


def dotted_line(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A line across the image, from a random height on the left to one on the right, drawn as 2-pixel dashes."""
    out = []
    for image in as_unit(images):
        r0, r1 = rng.integers(0, SIZE - 1, size=2)
        line = soft_line(0, r0, SIZE - 1, r1)
        for start in range(2, SIZE, 4):
            line[:, start : start + 2] = 0
        out.append(image + line)
    return as_uint8(np.stack(out))


def zigzag(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A zigzag (2-pixel teeth) across the image along a random, slightly tilted line."""
    out = []
    for image in as_unit(images):
        r0 = rng.integers(0, SIZE - 1)
        r1 = r0 + rng.integers(-5, 5)
        tilt = np.arctan((r1 - r0) / 23)
        length = 23 / np.cos(tilt)
        points = [(0.0, 0.0)] + [((2 * i + 1) * 2.0, (-1) ** i * 2.0) for i in range(int((length - 2) // 4) + 1)]
        points.append((length, 0.0))
        turn = np.array([[np.cos(tilt), -np.sin(tilt)], [np.sin(tilt), np.cos(tilt)]])
        cs, rs = turn @ np.array(points).T
        cs, rs = cs + 2, rs + r0
        x = image.copy()
        for i in range(1, len(cs)):
            a, b = sorted([(cs[i - 1], rs[i - 1]), (cs[i], rs[i])])
            x = np.clip(x + soft_line(a[0], a[1], b[0], b[1]), 0, 1)
        out.append(x)
    return as_uint8(np.stack(out))


def canny_edges(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Only the digit's outline: Canny edges (Gaussian sigma 1, thresholds 0.1 and 0.2 of full scale)."""
    smooth = [np.clip(blur(image, 1.0), 0, 1) for image in as_unit(images)]
    return np.stack([cv2.Canny(as_uint8(image), 26, 51, L2gradient=True) for image in smooth])


CORRUPTIONS: dict[str, Callable[[np.ndarray, np.random.Generator], np.ndarray]] = {
    f.__name__: f
    for f in (
        shot_noise,
        impulse_noise,
        glass_blur,
        motion_blur,
        shear,
        scale,
        rotate,
        brightness,
        translate,
        stripe,
        fog,
        spatter,
        dotted_line,
        zigzag,
        canny_edges,
    )
}


def corrupt(images: np.ndarray, name: str, seed: int = 0) -> np.ndarray:
    """The images under one corruption, the same for the same seed."""
    return CORRUPTIONS[name](images, np.random.default_rng([seed, list(CORRUPTIONS).index(name)]))
