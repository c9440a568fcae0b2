"""What is not one digit, for training (`--outliers SHARE`): the wrong cuts a reader of written numbers makes
(service/segment.py), framed as the service frames a digit, taught to give no digit a high probability (their
target is the uniform distribution: outlier exposure, Hendrycks et al. 2019).

Reading a number, the service asks the model about every run of pieces that could be one digit and keeps the
reading it is surest of; a model that reads two touching digits squeezed into one frame as a confident "2" makes
it merge them. Three kinds, from the *training* digits:

    pair    two digits side by side, touching or a little apart, framed together
    spill   a digit with a slice (a fifth to a half) of its neighbour beside it
    part    a wide digit cut through near its middle: its left or right part (never narrower than half of it)
"""

from __future__ import annotations

import numpy as np

from service.errors import ClientError
from service.preprocess import fit_and_centre

KINDS = ("pair", "spill", "part")


def ink_columns(pixels: np.ndarray) -> np.ndarray:
    """A digit cut to the columns that hold its ink."""
    columns = np.flatnonzero(pixels.max(axis=0) > 40)
    return pixels[:, columns[0] : columns[-1] + 1] if len(columns) else pixels


def side_by_side(left: np.ndarray, right: np.ndarray, gap: int) -> np.ndarray:
    """Two 28-row ink strips, `gap` columns apart (negative: overlapping, the ink adding up)."""
    width = left.shape[1] + max(gap, -left.shape[1] + 1) + right.shape[1]
    strip = np.zeros((28, max(width, left.shape[1])), np.int32)
    strip[:, : left.shape[1]] += left
    start = left.shape[1] + max(gap, -left.shape[1] + 1)
    strip[:, start : start + right.shape[1]] += right
    return np.clip(strip, 0, 255)


def outlier(kind: str, first: np.ndarray, second: np.ndarray, rng: np.random.Generator) -> np.ndarray | None:
    """One outlier of `kind` from two training digits, as the model sees it (uint8 [28, 28]); None where the
    digits do not make one (a part of a narrow digit)."""
    a, b = ink_columns(first), ink_columns(second)
    if kind == "pair":
        strip = side_by_side(a, b, int(rng.integers(-4, 5)))
    elif kind == "spill":  # the neighbour's slice on either side
        keep = max(1, round(b.shape[1] * rng.uniform(0.2, 0.5)))
        gap = int(rng.integers(-2, 2))
        strip = side_by_side(a, b[:, :keep], gap) if rng.random() < 0.5 else side_by_side(b[:, -keep:], a, gap)
    else:
        if a.shape[1] < 14:  # a narrow digit's part is a stroke, much like a "1"
            return None
        cut = round(a.shape[1] * rng.uniform(0.45, 0.6))
        strip = a[:, :cut] if rng.random() < 0.5 else a[:, a.shape[1] - cut :]
    rows = np.flatnonzero(strip.max(axis=1) > 0)
    if not len(rows):
        return None
    try:
        return fit_and_centre(strip[rows[0] : rows[-1] + 1].astype(np.float32))
    except ClientError:
        return None


def outlier_bank(images: np.ndarray, count: int, seed: int = 0) -> np.ndarray:
    """`count` outliers (uint8 [N, 28, 28]) made from random pairs of `images`, the three kinds in turn."""
    rng = np.random.default_rng(seed)
    made = []
    while len(made) < count:
        first, second = images[rng.integers(len(images), size=2)]
        image = outlier(KINDS[len(made) % len(KINDS)], first, second, rng)
        if image is not None:
            made.append(image)
    return np.stack(made)
