"""The training distortions (training/augment.py) on real digits: shapes, range, seeding, and that each does what
it says."""

from __future__ import annotations

import pytest
import torch

from harness.digits import sample_digits
from training.augment import (
    RECIPES,
    augment,
    elastic_field,
    gaussian_blur,
    outline,
    pen_strokes,
    random_affine,
    reverse_patch,
    robust,
    uneven_light,
    wipe_strip,
)


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


def test_slant_moves_each_row_sideways_in_proportion_to_its_height():
    bar = torch.zeros(1, 1, 28, 28)
    bar[..., 4:24, 13:15] = 1  # a vertical bar
    slanted = random_affine(bar, torch.Generator().manual_seed(0), 0, 0, 0, max_shear=0.3)
    columns = torch.arange(28.0)
    centre = [float((slanted[0, 0, row] * columns).sum() / slanted[0, 0, row].sum()) for row in (6, 21)]
    # Rows 15 pixels apart land apart by the slant (up to 0.3 x 15 = 4.5 pixels), top and bottom opposite ways.
    assert 0.5 < abs(centre[0] - centre[1]) <= 4.6 and (centre[0] - 13.5) * (centre[1] - 13.5) < 0


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


def test_outline_hollows_the_strokes(digits):
    ring = outline(digits)
    ink = digits > 0.9
    assert ring.amax((1, 2, 3)).min() == 1  # full brightness
    assert ring[ink].mean() < 0.1  # where the ink was, dark
    # ... and bright just beside it: the ring is about as long as the stroke's edge.
    assert ((ring > 0.5) & ~ink).sum((1, 2, 3)).float().mean() > 0.5 * ink.sum((1, 2, 3)).float().mean()


def test_pen_strokes_only_add_ink_to_the_chosen_images(digits):
    which = torch.tensor([True, False] * 32)[:, None, None, None]
    crossed = pen_strokes(digits, which, torch.Generator().manual_seed(0))
    assert torch.equal(crossed[1::2], digits[1::2]) and (crossed >= digits).all()
    added = (crossed[::2] - digits[::2] > 0.5).sum((1, 2, 3))
    assert (added >= 8).float().mean() > 0.8  # a stroke, not a speck, on nearly every chosen image


def test_reverse_patch_flips_a_rectangle_on_the_chosen_images(digits):
    which = torch.tensor([True, False] * 32)[:, None, None, None]
    flipped = reverse_patch(digits, which, torch.Generator().manual_seed(0))
    assert torch.equal(flipped[1::2], digits[1::2])
    changed = (flipped[::2] != digits[::2])[:, 0]
    assert torch.allclose(flipped[::2][changed[:, None]], 1 - digits[::2][changed[:, None]])
    rows, cols = changed.any(2).sum(1), changed.any(1).sum(1)
    # A rectangle: as many changed pixels as its rows times its columns, up to pixels that were exactly 0.5.
    assert ((changed.sum((1, 2)) - rows * cols).abs() <= 2).all() and (rows >= 7).all()


def test_uneven_light_spans_zero_to_one_smoothly():
    light = uneven_light(32, (28, 28), torch.Generator().manual_seed(0))
    assert torch.allclose(light.amin((2, 3)), torch.zeros(32, 1)) and torch.allclose(
        light.amax((2, 3)), torch.ones(32, 1)
    )
    assert (light[..., 1:] - light[..., :-1]).abs().mean() < 0.1


def test_shape_only_sets_the_share_of_digits_left_with_only_the_shape_changes(digits):
    """--shape-only: that share of the robust recipe's images keeps only the shape changes (moved, slanted,
    distorted, thicker or thinner strokes); the rest get paper, light, strokes and noise too. Same draws whatever
    the share: an image kept clean is the one the recipe made before it went further."""
    batch = digits.repeat(4, 1, 1, 1)  # 256 images

    def kept_clean(share: float) -> float:
        shaped = robust(batch, torch.Generator().manual_seed(5), shape_only=1.0)
        mixed = robust(batch, torch.Generator().manual_seed(5), shape_only=share)
        return float((mixed == shaped).flatten(1).all(1).float().mean())

    assert kept_clean(0.0) < 0.15  # only the few no distortion happened to touch
    assert 0.5 < kept_clean(0.6) < 0.75
