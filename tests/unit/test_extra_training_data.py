"""What a run mixes into MNIST besides its augmentations: printed digits (training/printed.py, the test fonts held
out) and outliers taught as no digit (training/outliers.py), and how the batches and the loss take them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from harness.digits import sample_digits
from training import outliers, printed
from training.train import OUTLIER, TrainConfig, batches, loss_of

IMAGES, LABELS = sample_digits()


@pytest.mark.parametrize("kind", outliers.KINDS)
def test_each_kind_of_outlier_is_a_framed_image_with_ink(kind: str) -> None:
    rng = np.random.default_rng(0)
    made = [outliers.outlier(kind, IMAGES[n], IMAGES[n + 1], rng) for n in range(0, 40, 2)]
    made = [m for m in made if m is not None]
    assert len(made) >= 10
    for image in made:
        assert image.shape == (28, 28) and image.dtype == np.uint8 and image.max() > 200
        rows, cols = np.flatnonzero(image.max(1)), np.flatnonzero(image.max(0))
        assert max(rows[-1] - rows[0], cols[-1] - cols[0]) + 1 <= 21  # fitted in the 20x20 box, as a digit is


def test_a_pair_is_framed_wider_than_either_digit_alone() -> None:
    rng = np.random.default_rng(1)
    pair = outliers.outlier("pair", IMAGES[0], IMAGES[1], rng)
    cols = np.flatnonzero(pair.max(0) > 40)
    rows = np.flatnonzero(pair.max(1) > 40)
    assert cols[-1] - cols[0] >= rows[-1] - rows[0]  # two digits side by side: wider than tall


def test_a_narrow_digit_has_no_part_taken_as_an_outlier() -> None:
    one = IMAGES[np.flatnonzero(LABELS == 1)[0]]
    assert outliers.outlier("part", one, one, np.random.default_rng(0)) is None


def test_the_bank_is_seeded_and_mixes_the_kinds() -> None:
    a, b = outliers.outlier_bank(IMAGES, 30, seed=4), outliers.outlier_bank(IMAGES, 30, seed=4)
    assert a.shape == (30, 28, 28) and np.array_equal(a, b)
    assert not np.array_equal(a, outliers.outlier_bank(IMAGES, 30, seed=5))


def test_an_outlier_is_taught_the_uniform_distribution() -> None:
    labels = torch.tensor([3, OUTLIER])
    uniform = torch.zeros(2, 10)
    sure = torch.zeros(2, 10)
    sure[:, 3] = 10.0  # sure it is a 3: right for the digit, wrong for the outlier
    uniform[0, 3] = 10.0
    assert loss_of(uniform, labels) < loss_of(sure, labels)
    assert loss_of(sure[:1], labels[:1]) == pytest.approx(torch.nn.functional.cross_entropy(sure[:1], labels[:1]))


def test_batches_replace_their_share_with_each_extra_set() -> None:
    x = torch.zeros(200, 1, 28, 28)
    y = torch.zeros(200, dtype=torch.int64)
    extra = (torch.ones(5, 1, 28, 28), torch.full((5,), 7), 0.1), (torch.ones(5, 1, 28, 28), torch.full((5,), -1), 0.2)
    config = TrainConfig(batch_size=50)
    batch, labels = next(batches(x, y, config, torch.Generator().manual_seed(0), list(extra)))
    assert labels.tolist() == [7] * 5 + [-1] * 10 + [0] * 35
    assert batch[:15].min() == 1 and batch[15:].max() == 0
    assert y.max() == 0 and x.max() == 0  # the training set itself untouched


def test_test_fonts_are_never_training_fonts() -> None:
    assert printed.is_test_font(Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"))
    assert printed.is_test_font(Path("/usr/share/fonts/opentype/cantarell/Cantarell-Regular.otf"))
    assert not printed.is_test_font(Path("/usr/share/fonts/truetype/noto/NotoSans-Regular.ttf"))
    assert not set(printed.font_files(test=True)) & set(printed.font_files(test=False))


def test_printed_digits_are_read_as_the_service_reads_them() -> None:
    fonts = printed.font_files(test=True)[:1] or printed.font_files(test=False)[:1]
    if not fonts:
        pytest.skip("no fonts on this machine (make install-fonts)")
    images, labels = printed.printed_bank(fonts, per_digit=2, seed=0)
    assert images.shape[1:] == (28, 28) and sorted(set(labels.tolist())) == list(range(10))
    assert images[:, 0].max() == 0 or images.mean() < 60  # white on black, in MNIST's frame
