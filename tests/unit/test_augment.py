"""The training distortions (training/augment.py) on real digits: shapes, range, seeding, and that each does what
it says."""

from __future__ import annotations

import pytest
import torch

from harness.digits import sample_digits
from training.augment import RECIPES, augment, elastic_field, gaussian_blur, random_affine, robust, wipe_strip


@pytest.fixture(scope="module")
def digits() -> torch.Tensor:
    images, _ = sample_digits()
    return torch.from_numpy(images[:64].copy()).float().div(255).unsqueeze(1)


@pytest.mark.parametrize("recipe", RECIPES)
def test_each_recipe_keeps_shape_and_range_and_is_seeded(digits, recipe):
    a = augment(digits, recipe, torch.Generator().manual_seed(1))
    b = augment(digits, recipe, torch.Generator().manual_seed(1))
    c = augment(digits, recipe, torch.Generator().manual_seed(2))
    assert a.shape == digits.shape and torch.equal(a, b)
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, digits) if recipe == "none" else not torch.equal(a, c)


def test_affine_with_nothing_asked_changes_nothing(digits):
    unchanged = random_affine(digits, torch.Generator(), max_rotation=0, max_scale=0, max_shift=0)
    torch.testing.assert_close(unchanged, digits, atol=1e-5, rtol=0)


def test_elastic_field_is_smooth_and_of_the_asked_size():
    field = elastic_field(256, 28, 28, 1.5, torch.Generator().manual_seed(0))
    pixels = field * 14  # grid units -> pixels (one pixel is 2 / 28)
    assert pixels.flatten(1).std(1).mean() == pytest.approx(1.5, rel=0.05)
    # Smooth: neighbouring displacements differ far less than the field varies.
    step = (pixels[:, 1:] - pixels[:, :-1]).abs().mean()
    assert step < 0.3 * pixels.abs().mean()


def test_blur_keeps_the_ink_and_spreads_it(digits):
    blurred = gaussian_blur(digits, 1.0)
    # The ink is kept (up to what spills past the frame) and spread: its peak falls.
    assert blurred.sum() == pytest.approx(digits.sum().item(), rel=0.02)
    assert blurred.amax((1, 2, 3)).mean() < digits.amax((1, 2, 3)).mean()


def test_wiped_strip_only_removes_ink_on_the_chosen_images(digits):
    which = torch.tensor([True, False] * 32)[:, None, None, None]
    wiped = wipe_strip(digits, which, torch.Generator().manual_seed(0))
    assert torch.equal(wiped[1::2], digits[1::2])
    assert (wiped <= digits).all() and (wiped[::2].sum((1, 2, 3)) < digits[::2].sum((1, 2, 3))).float().mean() > 0.5


def test_robust_leaves_many_digits_close_to_clean_and_hits_some_hard(digits):
    """Each distortion hits a part of the batch: most images stay near their affine-only selves, some do not."""
    many = digits.repeat(4, 1, 1, 1)
    out = robust(many, torch.Generator().manual_seed(0))
    background = out.flatten(1).median(1).values
    assert (background < 0.05).float().mean() > 0.5  # most keep a black background
    assert (background > 0.2).float().mean() > 0.03  # some are on grey paper
