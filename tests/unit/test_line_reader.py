"""The line reader (service/line_reader.py): its input image, its decoding, and the shipped model reading lines of
touching real MNIST test digits (the committed samples)."""

from __future__ import annotations

import itertools
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
    UNLIKELY,
    WRITING,
    LineReader,
    LineReading,
    add_logs,
    extend,
    frame_columns,
    greedy_text,
    line_image,
    log_softmax,
    placement,
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


def every_reading(log_probs: np.ndarray) -> dict[str, float]:
    """Each text's probability, summed over every path of classes through the frames (11^T of them)."""
    found: dict[str, float] = {}
    for path in itertools.product(range(BLANK + 1), repeat=len(log_probs)):
        text = greedy_text(np.eye(BLANK + 1)[list(path)])
        found[text] = found.get(text, 0.0) + float(np.exp(log_probs[np.arange(len(path)), path].sum()))
    return found


def test_likelihoods_and_likeliest_texts_are_ctcs_sums_over_every_path() -> None:
    """Against brute force on 4 frames: each text's likelihood is the sum over the paths that read as it, and
    the beam search, wide enough, finds the texts in order of it."""
    rng = np.random.default_rng(0)
    log_probs = log_softmax(rng.normal(0, 1, (4, BLANK + 1)))
    assert log_probs.min() > UNLIKELY
    truth = every_reading(log_probs)
    assert sum(truth.values()) == pytest.approx(1.0)
    reading = LineReading(log_probs)
    for text, probability in truth.items():
        assert np.exp(reading.log_likelihood(text)) == pytest.approx(probability, rel=1e-9)
    assert reading.log_likelihood("12345") == -np.inf  # more digits than frames can hold
    ranked = sorted(truth, key=truth.get, reverse=True)
    wide = reading.likeliest(len(truth))
    assert [text for text, _ in wide[:20]] == ranked[:20]
    for text, likelihood in wide[:20]:  # every alignment kept: exact
        assert np.exp(likelihood) == pytest.approx(truth[text], rel=1e-9)
    for text, likelihood in reading.likeliest():  # a narrow beam drops alignments: never more likely than exact
        assert likelihood <= np.log(truth[text]) + 1e-12
    assert reading.text == greedy_text(log_probs)


def test_surely_blank_frames_are_stepped_over_without_changing_the_beam() -> None:
    """Where a frame is surely blank (no digit above UNLIKELY), the search only carries each text on: its texts and
    likelihoods are those of extending every text by every frame."""
    rng = np.random.default_rng(1)
    scores = rng.normal(0, 2, (40, BLANK + 1))
    scores[rng.random(40) < 0.6, BLANK] = 30.0  # most frames surely blank, as a trained reader's are
    reading = LineReading(log_softmax(scores))
    blank_only = (reading.log_probs[:, :BLANK] <= UNLIKELY).all(axis=1)
    assert 10 < blank_only.sum() < 40
    beams = {"": (0.0, -np.inf)}
    for frame in reading.log_probs:
        beams = dict(sorted(extend(beams, frame).items(), key=lambda item: -add_logs(*item[1]))[:8])
    assert reading.likeliest(8) == [(text, add_logs(*ends)) for text, ends in beams.items()]


def test_the_shipped_reader_reads_lines_of_touching_digits() -> None:
    """60 lines of 4 sample digits, each overlapping the one before by 2 px (at 28 px): the classifier reading
    candidates alone gets few of these right, since two glued digits often read as one sure digit. Measured when
    written: 51 of 60."""
    right = 0
    for start in range(0, 240, 4):
        line = ink_columns(IMAGES[start])
        for n in range(start + 1, start + 4):
            line = side_by_side(line, ink_columns(IMAGES[n]), -2)
        right += READER.read(line_image(line)).text == "".join(map(str, LABELS[start : start + 4]))
    assert right >= 48


def test_digit_frames_are_the_middle_of_each_digit_s_run() -> None:
    frames = np.eye(BLANK + 1)[[BLANK, 4, 4, BLANK, 1, 1, 1, BLANK, 4, BLANK]]
    reading = LineReading(log_softmax(frames * 10))
    assert reading.text == "414" and reading.digit_frames().tolist() == [1, 5, 8]


def test_each_digit_read_is_placed_over_its_own_ink() -> None:
    """30 lines of 3 sample digits 18 columns apart, enlarged and set in a wider image: every digit the reader
    reads, in a line it reads right, is placed (`frame_columns`) over that digit, nearer to it than to the gap's
    middle (a narrow 1 is placed up to 2 columns left of its ink, measured)."""
    placed = read_right = 0
    for start in range(0, 90, 3):
        parts = [np.kron(ink_columns(IMAGES[n]), np.ones((3, 3))) for n in range(start, start + 3)]
        spans, ink, at = [], np.zeros((120, 400)), 37
        for part in parts:
            ink[20:104, at : at + part.shape[1]] = part
            spans.append((at, at + part.shape[1]))
            at += part.shape[1] + 18
        reading = READER.read(line_image(ink))
        if reading.text != "".join(map(str, LABELS[start : start + 3])):
            continue
        read_right += 1
        columns = frame_columns(placement(ink), reading.digit_frames())
        placed += all(left - 9 <= x < right + 9 for x, (left, right) in zip(columns, spans, strict=True))
    assert read_right >= 27 and placed == read_right


def test_a_reader_whose_file_does_not_match_its_card_is_refused(tmp_path: Path) -> None:
    copy = tmp_path / "line_reader.onnx"
    shutil.copy(DEFAULT_FILE.with_suffix(".json"), tmp_path / "line_reader.json")
    copy.write_bytes(DEFAULT_FILE.read_bytes() + b"\0")
    with pytest.raises(ModelLoadError, match="sha256"):
        LineReader(copy)


def test_training_lines_asked_for_ones_hold_a_1_for_about_every_third_digit() -> None:
    """`--ones` (training/line_reader.py): a 1 glued to its neighbour is what the reader misses most, so a share of
    the training lines draws a 1 for about a third of its digits, the rest as any line (a tenth of MNIST is 1s)."""
    from training.line_reader import make_line

    def share_of_ones(ones: float) -> float:
        rng = np.random.default_rng(0)
        text = "".join(make_line(IMAGES, LABELS, rng, ones=ones)[1] for _ in range(200))
        return text.count("1") / len(text)

    assert share_of_ones(0.0) < 0.2 and 0.32 < share_of_ones(1.0) < 0.5


def test_wider_blocks_start_as_identities() -> None:
    """`--wider` (training/line_reader.py): residual dilated blocks added to a reader start as identities, so
    training on from it starts from what it reads, not from a perturbed copy."""
    import torch

    from training.line_reader import LineNet, from_exported

    line = torch.from_numpy(line_image(side_by_side(ink_columns(IMAGES[0]), ink_columns(IMAGES[1]), -2))[None, None])
    torch.manual_seed(0)
    base, wider = LineNet().eval(), LineNet(wider=3).eval()
    missing, _ = wider.load_state_dict(base.state_dict(), strict=False)
    assert len(missing) == 6  # each block's weight and bias
    with torch.no_grad():
        assert torch.allclose(wider(line), base(line))
        shipped = from_exported(DEFAULT_FILE, wider=3)  # the shipped reader has none: three added
        assert len(shipped.wider) == 3
        assert np.abs(shipped(line).numpy() - READER.session.run(None, {READER.input: line.numpy()})[0]).max() < 1e-4
