"""service/morphology.py computes what the OpenCV calls it replaced did, border rules and label order included:
compared with OpenCV itself (a dev dependency only) on random images of random sizes."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from service import morphology

cv2 = pytest.importorskip("cv2")

sizes = st.tuples(st.integers(1, 70), st.integers(1, 70))
seeds = st.integers(0, 2**32 - 1)
CASES = settings(max_examples=150, deadline=None, derandomize=True)


def grey(shape: tuple[int, int], seed: int) -> np.ndarray:
    return (np.random.default_rng(seed).random(shape) * 255).astype(np.float32)


def mask(shape: tuple[int, int], seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.random(shape) < rng.random()  # from nearly empty to nearly full


@CASES
@given(sizes, seeds, st.integers(1, 40))
def test_grey_closing_is_opencvs(shape, seed, window):
    image = grey(shape, seed)
    expected = cv2.morphologyEx(image, cv2.MORPH_CLOSE, np.ones((window, window), np.uint8))
    np.testing.assert_array_equal(morphology.grey_closing(image, window), expected)


@CASES
@given(sizes, seeds, st.integers(0, 15))
def test_column_opening_is_opencvs(shape, seed, half):
    image, length = grey(shape, seed), 2 * half + 1
    column = np.ones((length, 1), np.uint8)
    expected = cv2.morphologyEx(image, cv2.MORPH_OPEN, column, borderType=cv2.BORDER_REPLICATE)
    np.testing.assert_array_equal(morphology.column_opening(image, length), expected)


@CASES
@given(st.tuples(st.integers(2, 70), st.integers(2, 70)), seeds)
def test_box_mean_is_opencvs_blur(shape, seed):
    image = grey(shape, seed)
    np.testing.assert_allclose(morphology.box_mean_3x3(image), cv2.blur(image, (3, 3)), rtol=1e-5, atol=1e-3)


@CASES
@given(sizes, seeds, st.booleans())
def test_dilate_is_opencvs(shape, seed, cross):
    marks = mask(shape, seed)
    kernel = cv2.getStructuringElement(cv2.MORPH_CROSS if cross else cv2.MORPH_RECT, (3, 3))
    expected = cv2.dilate(marks.view(np.uint8), kernel).view(bool)
    np.testing.assert_array_equal(morphology.dilate(marks, cross=cross), expected)


@CASES
@given(sizes, seeds, st.sampled_from([4, 8]))
def test_labels_are_opencvs_in_opencvs_order(shape, seed, connectivity):
    """The same count and the same label on every pixel: code that breaks ties by label sees no change."""
    marks = mask(shape, seed)
    count, labels = cv2.connectedComponents(marks.view(np.uint8), connectivity=connectivity)
    got_count, got = morphology.label_marks(marks, connectivity)
    assert got_count == count and got.dtype == np.int32
    np.testing.assert_array_equal(got, labels)


def test_a_winding_stroke_is_one_mark():
    """Rows joined at alternate ends: the labels must flow along all of it (propagation runs until it settles)."""
    snake = np.zeros((41, 41), bool)
    snake[::4, 1:-1] = True
    for k, row in enumerate(range(0, 40, 4)):
        snake[row + 1 : row + 4, 39 if k % 2 == 0 else 1] = True
    count, labels = morphology.label_marks(snake, 4)
    assert count == 2 and set(np.unique(labels[snake])) == {1}
    np.testing.assert_array_equal(labels, cv2.connectedComponents(snake.view(np.uint8), connectivity=4)[1])
