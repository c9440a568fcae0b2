"""The 15 MNIST-C corruptions (training/corruptions.py) on real digits: each is seeded, keeps the format, and does
what the paper describes."""

from __future__ import annotations

import numpy as np
import pytest

from harness.digits import sample_digits
from training.corruptions import CORRUPTIONS, corrupt


@pytest.fixture(scope="module")
def digits() -> np.ndarray:
    return sample_digits()[0][:64]


def centre_of_mass(images: np.ndarray) -> np.ndarray:
    ys, xs = np.mgrid[0:28, 0:28]
    mass = images.astype(float).sum((1, 2))
    return np.stack([(images * ys).sum((1, 2)) / mass, (images * xs).sum((1, 2)) / mass], 1)


def test_there_are_the_papers_fifteen():
    assert len(CORRUPTIONS) == 15


@pytest.mark.parametrize("name", CORRUPTIONS)
def test_each_is_seeded_keeps_the_format_and_changes_the_images(digits, name):
    a, b = corrupt(digits, name, seed=0), corrupt(digits, name, seed=0)
    assert a.dtype == np.uint8 and a.shape == digits.shape
    np.testing.assert_array_equal(a, b)
    assert (a != digits).any(axis=(1, 2)).mean() > 0.9, "most images should change"


def test_translate_moves_each_digit_three_pixels_each_way(digits):
    moved = centre_of_mass(corrupt(digits, "translate")) - centre_of_mass(digits)
    # Ink pushed off the edge moves the centre less for a few digits that touch it.
    assert np.median(np.abs(moved)) == pytest.approx(3, abs=0.05) and (np.abs(moved) > 1.9).all()


def test_scale_shrinks_the_ink_to_about_seventy_percent(digits):
    def spread(images: np.ndarray) -> np.ndarray:
        ys = np.mgrid[0:28, 0:28][0]
        centre = centre_of_mass(images)[:, 0, None, None]
        return np.sqrt((images * (ys - centre) ** 2).sum((1, 2)) / images.sum((1, 2)))

    ratio = spread(corrupt(digits, "scale")) / spread(digits)
    assert np.median(ratio) == pytest.approx(0.7, abs=0.05)


def test_rotate_and_shear_keep_the_centre(digits):
    for name in ("rotate", "shear"):
        np.testing.assert_allclose(centre_of_mass(corrupt(digits, name)), centre_of_mass(digits), atol=1.5)


def test_brightness_lifts_the_background_to_half(digits):
    bright = corrupt(digits, "brightness")
    assert np.median(bright[digits == 0]) == 128 and bright.max() == 255


def test_stripe_inverts_the_outer_quarters_only(digits):
    striped = corrupt(digits, "stripe")
    np.testing.assert_array_equal(striped[:, :, 7:21], digits[:, :, 7:21])
    np.testing.assert_array_equal(striped[:, :, :7], 255 - digits[:, :, :7])


def test_canny_edges_keeps_only_outlines(digits):
    edges = corrupt(digits, "canny_edges")
    assert set(np.unique(edges)) <= {0, 255}
    assert (edges > 0).sum() < (digits > 127).sum() * 1.5 and (edges > 0).any(axis=(1, 2)).all()


def test_noise_hits_the_background(digits):
    for name, share in (("impulse_noise", 0.17 / 2), ("shot_noise", 0.0)):
        noisy = corrupt(digits, name)
        assert (noisy[digits == 0] == 255).mean() == pytest.approx(share, abs=0.02), name


def test_lines_are_added_to_the_image(digits):
    for name in ("dotted_line", "zigzag"):
        lined = corrupt(digits, name)
        assert (lined >= digits).all() and (lined.astype(int).sum((1, 2)) > digits.astype(int).sum((1, 2))).mean() > 0.9
