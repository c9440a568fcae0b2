"""The few image operations the photo path needs, in numpy; and `shrink`, the one a number's touching digits are
cut at (service/segment.py).

They replace OpenCV, whose wheel (155 MB installed, video codecs and a second OpenBLAS included) was a third of the
serving image for five calls. Each one computes what its OpenCV counterpart did, border rules included
(tests/unit/test_morphology.py compares them on random images), each in whole-array numpy passes. They cost more
than OpenCV's (docs/benchmarks.md, "Reading the photo figures").
"""

from __future__ import annotations

import numpy as np


def extreme(reduce: np.ufunc, dtype: np.dtype) -> float | int:
    """The value `reduce` always passes over: +inf (or the dtype's largest) for a minimum, -inf for a maximum."""
    if np.issubdtype(dtype, np.floating):
        return np.inf if reduce is np.minimum else -np.inf
    info = np.iinfo(dtype)
    return info.max if reduce is np.minimum else info.min


def sliding(reduce: np.ufunc, image: np.ndarray, size: int, axis: int) -> np.ndarray:
    """reduce (np.maximum or np.minimum) over `size` neighbours along `axis`: output i covers input i ... i + size
    - 1, so the output is size - 1 shorter along `axis` than `image`. One whole-array pass per shift: at these
    images' sizes (a few hundred pixels) and windows (3 to 25), faster in numpy than van Herk and Gil-Werman's
    method, whose cost does not grow with the window (docs/benchmarks.md, "Measured by hand")."""
    length = image.shape[axis] - size + 1

    def shifted(start: int) -> np.ndarray:
        cut = [slice(None)] * image.ndim
        cut[axis] = slice(start, start + length)
        return image[tuple(cut)]

    out = shifted(0).copy()
    for shift in range(1, size):
        reduce(out, shifted(shift), out=out)
    return out


def grey_filter(reduce: np.ufunc, image: np.ndarray, height: int, width: int, edge: bool) -> np.ndarray:
    """A rectangular max or min filter, anchored at the window's centre (OpenCV's (size // 2) for even sizes too).
    Outside the image: edge=True repeats the border pixels; False ignores them (OpenCV's default for morphology)."""
    out = image
    for axis, size in ((0, height), (1, width)):
        if size == 1:
            continue
        pad = [(0, 0)] * image.ndim
        pad[axis] = (size // 2, size - 1 - size // 2)
        if edge:
            extended = np.pad(out, pad, mode="edge")
        else:
            extended = np.pad(out, pad, constant_values=extreme(reduce, image.dtype))
        out = sliding(reduce, extended, size, axis)
    return out


def grey_closing(image: np.ndarray, window: int) -> np.ndarray:
    """cv2.morphologyEx(image, MORPH_CLOSE, ones((window, window))): a max filter, then a min filter."""
    return grey_filter(np.minimum, grey_filter(np.maximum, image, window, window, False), window, window, False)


def column_opening(image: np.ndarray, length: int) -> np.ndarray:
    """cv2.morphologyEx(image, MORPH_OPEN, ones((length, 1)), borderType=BORDER_REPLICATE): a min filter down the
    columns, then a max filter, the border rows repeated."""
    return grey_filter(np.maximum, grey_filter(np.minimum, image, length, 1, True), length, 1, True)


def box_mean_3x3(image: np.ndarray) -> np.ndarray:
    """cv2.blur(image, (3, 3)): the mean of each 3x3 patch, the border mirrored without repeating its pixel."""
    padded = np.pad(image.astype(np.float32, copy=False), 1, mode="reflect")
    rows = padded[:-2] + padded[1:-1] + padded[2:]
    return (rows[:, :-2] + rows[:, 1:-1] + rows[:, 2:]) / np.float32(9)


def dilate(mask: np.ndarray, cross: bool = False) -> np.ndarray:
    """A boolean mask grown by one pixel: to its 8 neighbours, or (cross=True) to the 4 beside it."""
    padded = np.pad(mask, 1)
    out = mask.copy()
    height, width = mask.shape
    for dy, dx in ((0, 1), (1, 0), (1, 2), (2, 1)) + (() if cross else ((0, 0), (0, 2), (2, 0), (2, 2))):
        out |= padded[dy : dy + height, dx : dx + width]
    return out


def label_marks(mask: np.ndarray, connectivity: int) -> tuple[int, np.ndarray]:
    """cv2.connectedComponents(mask, connectivity=4 or 8): the number of labels counting the background's 0, and
    the labels (int32), components numbered in OpenCV's order.

    By runs: each row's runs of set pixels; a run joins the runs of the row above that it touches (overlapping
    columns; or one column further either way with connectivity 8); the run graph's components by repeated
    min-label propagation with pointer jumping; then painted back. Passes over the runs, not the pixels, but to
    find the runs and to paint them."""
    height, width = mask.shape
    span = width + 2  # a run's key is row * span + column: keys of different rows never meet
    # Where each row's runs start (+1) and end (-1, one past): in row-major order they alternate, start first.
    bits = mask.view(np.int8) if mask.dtype == np.bool_ else (mask != 0).view(np.int8)
    edges = np.empty((height, width + 1), np.int8)
    edges[:, 0], edges[:, -1] = bits[:, 0], -bits[:, -1]
    np.subtract(bits[:, 1:], bits[:, :-1], out=edges[:, 1:-1])
    rows, columns = np.nonzero(edges)
    rows, starts, ends = rows[::2], columns[::2], columns[1::2]
    runs = len(starts)
    if runs == 0:
        return 1, np.zeros(mask.shape, np.int32)
    reach = 1 if connectivity == 8 else 0
    start_keys, end_keys = rows * span + starts, rows * span + ends
    above = (rows - 1) * span
    # The runs of the row above that run b touches: a contiguous range [first, last) of them.
    first = np.searchsorted(end_keys, above + starts - reach, side="right")
    last = np.searchsorted(start_keys, above + ends + reach, side="left")
    touching = np.maximum(last - first, 0) * (rows > 0)
    lower = np.repeat(np.arange(runs), touching)
    nth = np.arange(touching.sum()) - np.repeat(np.cumsum(touching) - touching, touching)  # 0, 1, ... per run
    upper = np.repeat(first, touching) + nth
    label = np.arange(runs)
    while True:
        low = np.minimum(label[lower], label[upper])
        new = label.copy()
        np.minimum.at(new, lower, low)
        np.minimum.at(new, upper, low)
        new = new[new]  # pointer jumping: each run to its label's label
        if np.array_equal(new, label):
            break
        label = new
    # Each run's label is now its component's first run (the least index). Numbered in OpenCV's order: as a
    # row-by-row scan first meets them (4: the first runs' own order), or, with 8, as its scan of 2x2 blocks (two
    # rows at a time) does; a 2x2 block holds one 8-connected component at most, so those keys are unique.
    is_first = label == np.arange(runs)
    count = int(is_first.sum())
    number = (np.cumsum(is_first) - 1)[label]  # 0 ... count - 1, in the order of the first runs
    if connectivity == 8:
        key = (rows // 2) * width + starts // 2
        least = np.full(count, key.max() + 1)
        np.minimum.at(least, number, key)
        order = np.empty(count, np.int32)
        order[np.argsort(least)] = np.arange(count, dtype=np.int32)
        number = order[number]
    run_label = (number + 1).astype(np.int32)
    # Painted: each run's pixels, found from its start and length (ink is a minority of the pixels).
    lengths = ends - starts
    at = np.repeat(rows * width + starts - np.cumsum(lengths) + lengths, lengths) + np.arange(lengths.sum())
    labels = np.zeros(height * width, np.int32)
    labels[at] = np.repeat(run_label, lengths)
    return count + 1, labels.reshape(height, width)


def shrink(ink: np.ndarray, labels: np.ndarray, factor: int) -> tuple[np.ndarray, np.ndarray]:
    """The ink and its marks at 1/`factor` of the size: each block of factor x factor pixels becomes
    one, its ink the mean (then brought back to full strength: thin strokes pale in the mean), its mark the
    block's highest label."""
    height, width = -(-ink.shape[0] // factor), -(-ink.shape[1] // factor)  # the last block padded with none
    padding = ((0, height * factor - ink.shape[0]), (0, width * factor - ink.shape[1]))
    blocks = (height, factor, width, factor)
    small = np.pad(ink, padding).reshape(blocks).mean(axis=(1, 3))
    labels = np.pad(labels, padding).reshape(blocks).max(axis=(1, 3))
    level = float(np.percentile(small[labels > 0], 90)) if (labels > 0).any() else 255.0
    small = np.clip(small * (255.0 / max(level, 1.0)), 0, 255)
    return small, labels
