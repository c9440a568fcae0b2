"""The line reader (service/line_reader.py): its input image, its decoding, and the shipped model reading lines of
touching real MNIST test digits (the committed samples)."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from harness.digits import sample_digits
from service.contract import ModelLoadError
from service.line_reader import (
    BLANK,
    DEFAULT_FILE,
    HEIGHT,
    MARGIN,
    MAX_COLUMNS,
    STRIDE,
    WRITING,
    LineReader,
    greedy_text,
    line_image,
)
from training.outliers import ink_columns, side_by_side

IMAGES, LABELS = sample_digits()
READER = LineReader()


def test_a_line_image_is_the_writing_28_rows_tall_between_blank_margins() -> None:
    ink = np.zeros((300, 900), np.uint8)
    ink[100:200, 150:551] = 255  # a block 100 rows tall, 401 wide, far from the image's edges
    image = line_image(ink)
    assert image.dtype == np.float32 and image.shape[0] == HEIGHT and image.shape[1] % STRIDE == 0
    rows = np.flatnonzero(image.max(axis=1) > 0.5)
    columns = np.flatnonzero(image.max(axis=0) > 0.5)
    assert (rows[0], rows[-1] + 1) == ((HEIGHT - WRITING) // 2, (HEIGHT + WRITING) // 2)  # 2 blank rows each side
    assert columns[0] == MARGIN and image.shape[1] - columns[-1] - 1 >= MARGIN
    assert columns[-1] - columns[0] + 1 == pytest.approx(401 * WRITING / 100, abs=1)  # its aspect kept
    assert image.max() == pytest.approx(1.0)
    assert line_image(np.zeros((10, 10))).max() == 0  # no ink: a blank line, not an error
    dash = np.zeros((20, 3000), np.uint8)
    dash[10, 100:2900] = 255  # one row tall: 28 x 2,800 columns at its aspect
    assert line_image(dash).shape == (HEIGHT, MAX_COLUMNS)


def test_greedy_decoding_merges_repeats_and_drops_blanks() -> None:
    classes = [BLANK, 4, 4, BLANK, 4, 1, 1, BLANK, BLANK, 0]
    frames = np.eye(BLANK + 1)[classes]
    assert greedy_text(frames) == "4410"  # a blank between two 4s keeps both; repeats without one are one
    assert greedy_text(np.eye(BLANK + 1)[[BLANK, BLANK]]) == ""


def test_the_shipped_reader_reads_lines_of_touching_digits() -> None:
    """60 lines of 4 sample digits, each overlapping the one before by 2 px (at 28 px): the classifier reading
    candidates alone gets few of these right, since two glued digits often read as one sure digit. Measured when
    written: 51 of 60."""
    right = 0
    for start in range(0, 240, 4):
        line = ink_columns(IMAGES[start])
        for n in range(start + 1, start + 4):
            line = side_by_side(line, ink_columns(IMAGES[n]), -2)
        right += READER.read(line_image(line)) == "".join(map(str, LABELS[start : start + 4]))
    assert right >= 48


def test_a_reader_whose_file_does_not_match_its_card_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "line_reader.onnx"
    shutil.copy(DEFAULT_FILE.with_suffix(".json"), tmp_path / "line_reader.json")
    copy.write_bytes(DEFAULT_FILE.read_bytes() + b"\0")
    with pytest.raises(ModelLoadError, match="sha256"):
        LineReader(copy)
