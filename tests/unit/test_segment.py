"""Reading written numbers (service/segment.py) on cases built by hand from real MNIST test digits (the committed
samples): gaps wide and narrow, a 1 beside a 7, touching pairs, a digit broken in two, a flag apart from its body, a
slanted line, light and dark grounds, and what is refused; and the path search's scoring on candidates made up."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image, ImageDraw

from harness.digits import sample_digits
from harness.numbers import hairline_number, number_image, number_strip
from service import segment
from service.errors import ClientError
from service.line_reader import BLANK, LineReader, LineReading
from service.reading import (
    WEIGHTS,
    best_path,
    best_reading,
    guided_path,
    read_line,
    scores,
    segment_certainty,
    shares,
    weighed_paths,
)
from service.runtime import ModelRuntime
from service.segment import MAX_DIGITS, Candidates, fewest_digits, read_candidates
from tests.conftest import MODEL
from training.outliers import ink_columns, side_by_side

IMAGES, LABELS = sample_digits()
RUNTIME = ModelRuntime(MODEL)
READER = LineReader()


def digit(label: int, nth: int = 0) -> np.ndarray:
    return IMAGES[np.flatnonzero(label == LABELS)[nth]]


def read(data: bytes, guided: bool = True) -> tuple[str, list[tuple[int, int, int, int]]]:
    """The number in `data` and its digits' boxes, as /read reads it (service/pipeline.py: segmented); `guided`:
    with the line reader's reading of touching digits (else the path search alone)."""
    candidates = read_candidates(data, 50_000_000, reader=READER.read if guided else None)
    logits = RUNTIME.logits(RUNTIME.model_input(candidates.pixels))
    probabilities = RUNTIME.confidences(logits)
    chosen, digits, _ = read_line(candidates, probabilities, logits, guide=candidates.guide)
    return "".join(map(str, digits)), [candidates.boxes[i] for i in chosen]


def png(pixels: np.ndarray, scale: int = 6, light: bool = False, angle: float = 0.0) -> bytes:
    """White-on-black pixels, enlarged (and rotated), as a PNG; `light`: dark ink on white instead."""
    image = Image.fromarray(pixels).resize((pixels.shape[1] * scale, pixels.shape[0] * scale), Image.BICUBIC)
    if angle:
        image = image.rotate(angle, Image.BICUBIC, expand=True, fillcolor=0)
    if light:
        image = Image.fromarray(255 - np.asarray(image))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def row(*parts: np.ndarray, gap: int = 6) -> np.ndarray:
    """Digits (28-row arrays) side by side, each cut to its ink's columns, `gap` columns apart, with a margin."""
    cut = [ink_columns(part) for part in parts]
    spacer = np.zeros((28, gap), np.uint8)
    inner = [x for part in cut for x in (part, spacer)][:-1]
    margin = np.zeros((28, 8), np.uint8)
    return np.pad(np.hstack([margin, *inner, margin]), ((4, 4), (0, 0)))


@pytest.mark.parametrize("light", [False, True], ids=["white on black", "dark on light"])
@pytest.mark.parametrize("gap", [2, 8, 40])
def test_digits_apart_are_read_left_to_right_whatever_the_gap(gap: int, light: bool) -> None:
    text, boxes = read(png(row(digit(2), digit(0), digit(2), digit(6), gap=gap), light=light))
    assert text == "2026"
    lefts = [box[0] for box in boxes]
    assert (
        lefts == sorted(lefts) and boxes[-1][2] <= (row(digit(2), digit(0), digit(2), digit(6), gap=gap).shape[1]) * 6
    )


def test_a_one_beside_a_seven_stays_two_digits() -> None:
    assert read(png(row(digit(1), digit(7), gap=2)))[0] == "17"
    assert read(png(row(digit(7), digit(1), gap=2)))[0] == "71"


def touching(first: np.ndarray, second: np.ndarray, overlap: int) -> np.ndarray:
    """Two digits cut to their ink's columns, the second overlapping the first by `overlap` columns, the ink adding
    up, with a margin."""
    pair = side_by_side(ink_columns(first), ink_columns(second), -overlap)
    return np.pad(pair, ((4, 4), (8, 8))).astype(np.uint8)


@pytest.mark.parametrize(("overlap", "at_least"), [(2, 23), (3, 22)])
def test_touching_pairs_are_cut_apart(overlap: int, at_least: int) -> None:
    """30 pairs of sample digits overlapping by 2 or 3 px (at 28 px): most are read as the two digits they are
    (26 and 24 today, with the line reader; 17 and 17 by the path search alone, which read most of the rest as one
    digit; 13 and 9 before the seams started every tenth of the line and the path search weighed the top logit)."""
    right = sum(
        read(png(touching(IMAGES[n], IMAGES[n + 1], overlap=overlap)))[0] == f"{LABELS[n]}{LABELS[n + 1]}"
        for n in range(0, 60, 2)
    )
    assert right >= at_least


def test_touching_digits_are_cut_only_where_they_may_be_read() -> None:
    """/read cuts a piece of touching digits into candidates, and reads the line whole with the line reader;
    /classify's count (`touching=False`), which never counts a reading with a cut in it, reads the piece whole and
    spends nothing on cutting it or reading it whole."""
    data = png(touching(digit(4), digit(0), overlap=3))
    cut = read_candidates(data, 50_000_000, reader=READER.read)
    assert cut.pieces >= 2 and cut.guide.text == "40"
    whole = read_candidates(data, 50_000_000, touching=False, reader=READER.read)
    assert whole.pieces == 1 and whole.guide is None
    apart = read_candidates(png(row(digit(2), digit(0), gap=8)), 50_000_000, reader=READER.read)
    assert apart.pieces == 2 and apart.guide.text == "20"  # apart: nothing cut, and the line read whole still


def test_in_a_line_of_touching_digits_narrow_pieces_are_cut_too() -> None:
    """A 1 touching a 7 is no wider than one digit: alone it is read whole (a wide digit is one digit more often
    than a pair that narrow is two), but in a line where other digits touch it is cut and read as 17."""
    narrow = side_by_side(ink_columns(digit(1)), ink_columns(digit(7)), -2).astype(np.uint8)
    wide = side_by_side(ink_columns(digit(4)), ink_columns(digit(0)), -3).astype(np.uint8)
    assert read_candidates(png(row(narrow)), 50_000_000).pieces == 1
    assert read(png(row(wide, narrow, gap=8)))[0] == "4017"  # "407" when only pieces wider than a digit were cut


def test_a_1_glued_to_a_digit_is_read_though_the_pair_is_no_wider_than_one_digit() -> None:
    """Two digits overlapping by 3 px (at 28 px), one of them a 1: no wider than a wide digit, so not cut for
    their width; the line reader reads two digits in one piece, and that is enough to cut it. Each was read as one
    digit (7, 9, 4, 4) while only pairs wider than 0.8 line heights were cut so."""
    for first, second, nth in ((7, 1, 0), (7, 1, 1), (1, 9, 0), (4, 1, 1), (1, 4, 1)):
        pair = side_by_side(ink_columns(digit(first, nth)), ink_columns(digit(second, nth)), -3).astype(np.uint8)
        assert read(png(row(pair)))[0] == f"{first}{second}"


@pytest.mark.parametrize(
    ("seed", "start", "was"),
    [(0, 120, "806"), (2, 180, "1689")],
    ids=["a 7 read as its second digit", "a 6 read as its second digit"],
)
def test_touching_numbers_the_weighing_once_misread(seed: int, start: int, was: str) -> None:
    """Four sample digits drawn touching, as `make bench-read` draws them, that the two models weighed together
    read wrong before a reading could read a candidate as its second likeliest digit (service/reading.py, RELAX)."""
    strip = number_strip(IMAGES[start : start + 4], np.random.default_rng([seed, start]), touching=True)
    text, boxes = read(number_image(strip, "canvas", seed))
    assert text == "".join(map(str, LABELS[start : start + 4])) != was
    assert [box[0] for box in boxes] == sorted(box[0] for box in boxes)


def candidates(top_logits: list[float], low_second: bool = False) -> tuple[Candidates, np.ndarray, np.ndarray]:
    """Two pieces meeting at a cut that crosses half a stroke, and the three ways to read them (the first, the second,
    both as one digit), each read as a 3 with certainty and the given top logit; none squat. `low_second`: the
    second piece a third of the line's height, as a fragment cut off a digit is."""
    second = (8, 0, 12, 7) if low_second else (8, 0, 16, 20)
    boxes = [(0, 0, 8, 20), second, (0, 0, second[2], 20)]
    made = Candidates([(0, 1), (1, 2), (0, 2)], [0, 0, 0], np.zeros((3, 28, 28), np.uint8), boxes, [0.5], 2)
    probabilities = np.full((3, 10), 1e-6)
    probabilities[:, 3] = 1.0
    logits = np.zeros((3, 10))
    logits[:, 3] = top_logits
    return made, probabilities, logits


def search(made: Candidates, probabilities: np.ndarray, logits: np.ndarray) -> list[int]:
    """The path search alone (best_reading less its rule for one sure piece)."""
    return best_path(made, scores(made, probabilities, logits, WEIGHTS))


def test_the_path_search_splits_where_only_the_parts_read_strongly() -> None:
    # All three read as sure 3s: the top logits decide. Two digits each read strongly, their union weakly: split.
    assert search(*candidates([9.0, 9.0, 2.0])) == [0, 1]
    # The union reads strongly and the parts weakly (halves of one digit): one digit.
    assert search(*candidates([3.0, 3.0, 9.0])) == [2]
    # All three strong: the cut crosses little, two digits.
    assert search(*candidates([9.0, 9.0, 8.0])) == [0, 1]
    # The same, but the second part far lower than the line (a fragment): one digit.
    assert search(*candidates([9.0, 9.0, 8.0], low_second=True)) == [2]


def sure(text: str, others: float = 1e-5) -> LineReading:
    """What a line reader sure of `text` gives: a blank, then each digit and a blank, each frame's class at
    1 - 10 x `others`."""
    classes = [BLANK] + [c for d in text for c in (int(d), BLANK)]
    frames = np.full((len(classes), BLANK + 1), others)
    frames[np.arange(len(classes)), classes] = 1 - BLANK * others
    return LineReading(np.log(frames))


def test_the_line_readers_reading_picks_the_path_that_spells_it() -> None:
    made, probabilities, logits = candidates([9.0, 9.0, 2.0])
    probabilities[2] = np.eye(10)[8]  # the union reads as an 8, each part as a 3
    score = scores(made, probabilities, logits, WEIGHTS)
    assert best_path(made, score) == [0, 1]  # alone, the search splits it: "33"
    assert guided_path(made, probabilities, score, sure("8")) == [2]  # the line read "8": the path that spells it
    assert guided_path(made, probabilities, score, sure("33")) == [0, 1]
    assert guided_path(made, probabilities, score, sure("5")) == [0, 1]  # no path spells "5": the best path


def test_where_the_line_reader_is_unsure_the_classifier_decides() -> None:
    """The two models weighed together: a line reader sure of "8" carries a weak split into "33"; one that finds
    "8" barely likelier than "33" does not, and the path search's split stands."""
    made, probabilities, logits = candidates([9.0, 9.0, 2.0])
    probabilities[2] = np.eye(10)[8]
    score = scores(made, probabilities, logits, WEIGHTS)
    torn = np.log(np.full((5, BLANK + 1), 1e-6))  # frames: blank, 8 or 3, blank, 3 or blank, blank
    torn[[0, 2, 4], BLANK] = 0.0
    torn[1, [8, 3]] = np.log([0.55, 0.45])
    torn[3, [BLANK, 3]] = np.log([0.55, 0.45])
    unsure = LineReading(torn)
    texts = [text for text, _ in unsure.likeliest()]
    assert unsure.text == texts[0] == "8" and "33" in texts
    assert np.exp(unsure.log_likelihood("8")) == pytest.approx(0.55 * 0.55, rel=1e-3)
    assert np.exp(unsure.log_likelihood("33")) == pytest.approx(0.45 * 0.45, rel=1e-3)
    assert guided_path(made, probabilities, score, unsure) == [0, 1]
    # In read_line too, once the piece is too wide for its one-sure-piece rule (below) to read it whole:
    wide = Candidates(made.spans, made.bridged, made.pixels, [*made.boxes[:2], (0, 0, 27, 20)], made.cuts, 2)
    assert read_line(wide, probabilities, logits)[0] == [0, 1]
    assert read_line(wide, probabilities, logits, guide=sure("8"))[0] == [2]


def test_a_guided_reading_may_read_a_candidate_as_its_second_likeliest_digit() -> None:
    """A touching digit's crop holds a neighbour's strokes and can read a little wrong: where the line reader reads
    "35" and the second part reads 3 but 5 next, the reading is "35" (RELAX); where 5 is only its third, no path
    spells "35" and the classifier's own reading stands."""
    made, probabilities, logits = candidates([9.0, 9.0, 2.0])
    wide = Candidates(made.spans, made.bridged, made.pixels, [*made.boxes[:2], (0, 0, 27, 20)], made.cuts, 2)
    probabilities[1] = np.full(10, 1e-6)
    probabilities[1, [3, 5]] = [0.6, 0.4]
    assert read_line(wide, probabilities, logits, guide=sure("35"))[:2] == ([0, 1], [3, 5])
    assert read_line(wide, probabilities, logits, guide=sure("33"))[:2] == ([0, 1], [3, 3])
    probabilities[1, [3, 8, 5]] = [0.6, 0.3, 0.1]
    assert read_line(wide, probabilities, logits, guide=sure("35"))[:2] == ([0, 1], [3, 3])


def test_where_the_digits_stand_apart_the_line_reader_overrules_the_classifier_only_on_stronger_evidence() -> None:
    """Each digit written apart is framed whole and clean: for the line reader's "35" to read the second as its
    second likeliest digit, its lead over "33" must outweigh four times the cost it takes where pieces were cut
    (RELAX_APART against RELAX)."""
    made, probabilities, logits = candidates([9.0, 9.0, 2.0])
    probabilities[1] = np.full(10, 1e-6)
    probabilities[1, [3, 5]] = [0.9, 0.1]
    guide = sure("35", others=0.002)  # "33" about 6 nats less likely: more than 2.2 x RELAX / LINE_WEIGHT
    assert read_line(made, probabilities, logits, guide=guide)[:2] == ([0, 1], [3, 5])
    apart = Candidates(made.spans, [0, 0, 1], made.pixels, made.boxes, [None], 2)
    assert read_line(apart, probabilities, logits, guide=guide)[:2] == ([0, 1], [3, 3])
    assert read_line(apart, probabilities, logits, guide=sure("35"))[:2] == ([0, 1], [3, 5])  # 11.5 nats: it does


def test_digits_apart_that_both_models_read_alike_are_not_weighed_again(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where no piece was cut and the line reader's greedy text is the path search's reading, that is the reading
    (the weighing, whose search of the line reader's likeliest texts is the dearest step, would find it too), and
    how surely each digit is one digit is the path posterior, as with no line reader at all."""
    import service.reading

    weighed = []
    monkeypatch.setattr(service.reading, "weighed_paths", lambda *a: weighed.append(1) or weighed_paths(*a))
    made, probabilities, logits = candidates([9.0, 9.0, 2.0])
    apart = Candidates(made.spans, [0, 0, 1], made.pixels, made.boxes, [None], 2)
    alone = read_line(apart, probabilities, logits)
    agreed = read_line(apart, probabilities, logits, guide=sure("33"))
    assert agreed[:2] == alone[:2] == ([0, 1], [3, 3]) and np.array_equal(agreed.certainty, alone.certainty)
    assert not weighed
    assert read_line(made, probabilities, logits, guide=sure("33"))[:2] == alone[:2] and weighed  # cut: weighed
    assert read_line(apart, probabilities, logits, guide=sure("38"))[:2] == alone[:2] and len(weighed) == 2


def test_how_surely_a_candidate_is_one_digit_is_its_share_of_the_paths() -> None:
    made, _, _ = candidates([9.0, 9.0, 8.0])  # spans (0, 1), (1, 2) and their union (0, 2)
    # Two paths: the parts (scores 1 + 1) and the union (2): even, at any temperature.
    for temperature in (0.35, 1.0, 3.0):
        np.testing.assert_allclose(segment_certainty(made, np.array([1.0, 1.0, 2.0]), [0, 1], temperature), 0.5)
    # The parts ahead by 1: e / (e + 1) at temperature 1, surer as it falls; the union's share is the rest.
    ahead = np.array([1.0, 1.0, 1.0])
    np.testing.assert_allclose(segment_certainty(made, ahead, [0, 1], 1.0), np.e / (np.e + 1))
    np.testing.assert_allclose(segment_certainty(made, ahead, [2], 1.0), 1 / (np.e + 1))
    assert segment_certainty(made, ahead, [0], 0.35)[0] > 0.94
    # One way to cut the ink (no union to choose): sure, whatever the scores.
    alone = Candidates(made.spans[:2], made.bridged[:2], made.pixels[:2], made.boxes[:2], [None], 2)
    np.testing.assert_allclose(segment_certainty(alone, np.array([-5.0, 0.5]), [0, 1], 0.35), 1.0)


def test_a_guided_readings_certainty_is_its_share_of_the_weighed_paths() -> None:
    # Two paths, weighed alike: a candidate on both is sure, one on either holds half; 8 ahead at 8: e / (e + 1).
    paths = [[0, 1], [0, 2]]
    np.testing.assert_allclose(shares(paths, np.array([3.0, 3.0]), [0, 1], 8.0), [1.0, 0.5])
    np.testing.assert_allclose(shares(paths, np.array([8.0, 0.0]), [0, 1], 8.0), [1.0, np.e / (np.e + 1)])
    # In read_line: both models sure of "8" (the union) leave nothing to contest it; the path search alone would
    # give it a small share, the split scoring far higher.
    made, probabilities, logits = candidates([9.0, 9.0, 2.0])
    probabilities[2] = np.eye(10)[8]
    wide = Candidates(made.spans, made.bridged, made.pixels, [*made.boxes[:2], (0, 0, 27, 20)], made.cuts, 2)
    chosen, digits, certainty = read_line(wide, probabilities, logits, guide=sure("8"))
    assert chosen == [2] and digits == [8] and certainty[0] > 0.99
    assert segment_certainty(wide, scores(wide, probabilities, logits, WEIGHTS), [2])[0] < 0.01


def test_one_sure_piece_is_read_whole_and_surely_one_digit() -> None:
    made, probabilities, logits = candidates([9.0, 9.0, 8.0])
    assert read_line(made, probabilities, logits) == ([2], [3], pytest.approx([1.0]))


def test_one_sure_piece_gives_way_only_to_a_line_reader_sure_of_several_digits() -> None:
    made, probabilities, logits = candidates([9.0, 9.0, 8.0])  # the whole a sure 3, 16 px by 20
    assert read_line(made, probabilities, logits, guide=sure("33"))[:2] == ([0, 1], [3, 3])  # glued digits
    frames = np.log(np.full((5, BLANK + 1), 1e-6))  # blank, 3, blank, 3 or blank, blank: "33" at 0.8, "3" at 0.2
    frames[[0, 2, 4], BLANK] = 0.0
    frames[1, 3] = 0.0
    frames[3, [3, BLANK]] = np.log([0.8, 0.2])
    unsure = LineReading(frames)
    assert unsure.text == "33" and unsure.several() == pytest.approx(0.8, abs=1e-3)
    assert read_line(made, probabilities, logits, guide=unsure)[:2] == ([2], [3])  # under SEVERAL: one digit
    assert sure("4").several() == pytest.approx(0.0, abs=1e-3) and sure("21").several() == pytest.approx(1.0, abs=1e-3)


def test_one_piece_read_surely_as_one_digit_is_not_cut() -> None:
    made, probabilities, logits = candidates([9.0, 9.0, 8.0])  # the search splits it (above)
    assert best_reading(made, probabilities, logits) == [2]  # but the whole is a sure 3, 16 px by 20: one digit
    unsure = probabilities.copy()
    unsure[2, 3], unsure[2, 5] = 0.99, 0.01
    assert best_reading(made, unsure, logits) == [0, 1]  # the whole less than SURE_WHOLE sure: the search decides
    wide = Candidates(made.spans, made.bridged, made.pixels, [*made.boxes[:2], (0, 0, 27, 20)], made.cuts, 2)
    assert best_reading(wide, probabilities, logits) == [0, 1]  # wider than WHOLE_ASPECT heights: two digits
    apart = Candidates(made.spans, made.bridged, made.pixels, made.boxes, [None], 2)
    assert best_reading(apart, probabilities, logits) == [0, 1]  # a gap, not a cut: two pieces of ink


def test_a_digit_broken_in_two_is_one_digit() -> None:
    four = digit(4).copy()
    rows = np.flatnonzero(four.max(axis=1) > 40)
    four[rows[0] + (rows[-1] - rows[0]) // 2 - 1 : rows[0] + (rows[-1] - rows[0]) // 2 + 2] = 0  # a gap across it
    assert read(png(row(digit(3), four, digit(9))))[0] == "349"


def test_a_five_with_its_flag_apart_is_one_digit() -> None:
    five = digit(5).copy()
    rows = np.flatnonzero(five.max(axis=1) > 40)
    five[rows[0] + 3 : rows[0] + 5] = 0  # the flag lifted off the body
    assert read(png(row(digit(1), five)))[0] == "15"


# MNIST test digit 694, a 5 whose flag stands apart to the right of its stem, lower than a third of the digit:
# read alone, the stem is a 1.
FIVE_WITH_ITS_FLAG_APART = """
...........##+........+####.
..........####.....########.
..........####....#######++.
..........####...+######....
..........####...###........
..........####+.............
..........+###+.............
...........####.............
...........####+............
...........+####............
............####............
............+###............
.............###............
........++...###............
.......#########............
.......########+............
........#######.............
.........####+..............
"""


def drawn(art: str) -> np.ndarray:
    """28 columns of '#' (ink), '+' (half ink) and '.', centred in 28 rows."""
    lines = art.strip().splitlines()
    pixels = np.array([[{"#": 255, "+": 128}.get(c, 0) for c in line] for line in lines], np.uint8)
    top = (28 - len(lines)) // 2
    return np.pad(pixels, ((top, 28 - len(lines) - top), (0, 0)))


def test_a_five_whose_flag_stands_beside_its_stem_is_one_digit() -> None:
    assert read(png(row(digit(3), drawn(FIVE_WITH_ITS_FLAG_APART), digit(8))))[0] == "358"


@pytest.mark.parametrize("pair", [(1, 7), (7, 1)])
@pytest.mark.parametrize("overlap", [2, 3])
def test_two_glued_digits_are_cut_where_a_flag_apart_makes_as_many_pieces_as_digits(pair, overlap) -> None:
    """A 5 whose flag stands apart is two pieces; beside it a 1 and a 7 touch, one piece no wider than a digit:
    three pieces, three digits, so counting pieces finds nothing to cut. The line reader reads two digits within
    the pair's piece, and it is cut."""
    five = np.pad(ink_columns(drawn(FIVE_WITH_ITS_FLAG_APART)), ((0, 0), (0, 6)))
    glued = side_by_side(ink_columns(digit(pair[0])), ink_columns(digit(pair[1])), -overlap)
    line = np.pad(np.hstack([five, glued]), ((4, 4), (8, 8))).astype(np.uint8)
    assert read(png(line))[0] == f"5{pair[0]}{pair[1]}"


def test_a_slanted_line_is_read() -> None:
    assert read(png(row(digit(8), digit(3), digit(5), digit(2)), angle=8))[0] == "8352"


def test_one_digit_is_one_digit_and_its_box_is_where_it_is() -> None:
    text, [(left, top, right, bottom)] = read(png(np.pad(digit(6, 1), 30), scale=4))
    assert text == "6"
    assert left + 12 >= 30 * 4 and right <= (30 + 28) * 4 and top + 12 >= 30 * 4 and bottom <= (30 + 28) * 4


def test_numbers_in_a_phone_photo_and_on_a_canvas() -> None:
    rng = np.random.default_rng(0)
    strip = number_strip(IMAGES[:5], rng)
    want = "".join(map(str, LABELS[:5]))
    assert read(number_image(strip, "ruled", 3))[0] == want
    assert read(number_image(strip, "transparent", 3))[0] == want


@pytest.mark.parametrize(("seed", "condition"), [(7, "ruled"), (19, "12mp")])
def test_a_faint_margin_line_beside_a_number_is_no_digit(seed: int, condition: str) -> None:
    """Lines fainter than the ink are looked for among faint marks too (photo.LINE_FAINT): found only among the
    ink, these margin lines broke into pieces, and the piece beside the number was read as a leading 1."""
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(IMAGES), 5, replace=False)
    strip = number_strip(IMAGES[chosen], rng)
    assert read(number_image(strip, condition, seed))[0] == "".join(map(str, LABELS[chosen]))


def test_more_digits_than_allowed_is_refused_or_read_whole() -> None:
    """MAX_DIGITS are read whole; more, refused before they are framed and read (by the line reader's count, or
    the fewest digits a reading could make of the pieces)."""
    many = [IMAGES[n] for n in range(MAX_DIGITS + 3)]
    text, _ = read(png(row(*many[:MAX_DIGITS], gap=6), scale=3))
    assert len(text) == MAX_DIGITS
    with pytest.raises(ClientError) as raised:
        read(png(row(*many, gap=6), scale=3))
    assert raised.value.status == 422 and f"more than {MAX_DIGITS}" in raised.value.message


def zigzag(width: int) -> bytes:
    """One stroke drawn up and down, `width` line heights long: a scribble, not a number."""
    image = Image.new("L", (width * 40, 60), 0)
    ImageDraw.Draw(image).line([(10 + 13 * i, 10 + 40 * (i % 2)) for i in range(3 * width)], fill=255, width=4)
    return png(np.asarray(image), scale=1)


def refused_before(monkeypatch: pytest.MonkeyPatch, step: str, data: bytes, reader=READER.read) -> ClientError:
    """The 422 reading `data` ends in, `step` of service/segment.py never run."""

    def never(*args, **kwargs):
        raise AssertionError(f"{step} ran")

    monkeypatch.setattr(segment, step, never)
    with pytest.raises(ClientError) as raised:
        read_candidates(data, 50_000_000, reader=reader)
    assert raised.value.status == 422 and f"more than {MAX_DIGITS}" in raised.value.message
    return raised.value


def test_a_scribble_the_line_reader_reads_as_many_digits_is_refused_before_it_is_cut(monkeypatch) -> None:
    """A stroke drawn up and down 60 line heights long: read as 180 1s, once cut and read in 10 s."""
    refused = refused_before(monkeypatch, "cut_wide_pieces", zigzag(60))
    assert refused.details["digits"] > 3 * MAX_DIGITS


def test_ink_no_reading_can_make_few_enough_digits_of_is_refused_before_the_model(monkeypatch) -> None:
    """However it is cut, no run of its pieces is wider than MAX_WIDTH line heights: the fewest digits a reading can
    have is known before a candidate is framed (without the line reader here)."""
    refused = refused_before(monkeypatch, "fit_and_centre", zigzag(60), reader=None)
    assert refused.details["digits"] > MAX_DIGITS


def test_the_fewest_digits_of_a_reading_is_the_shortest_path_through_the_runs() -> None:
    runs = [(0, 1, 0), (0, 2, 0), (1, 2, 0), (1, 3, 0), (2, 3, 0), (3, 4, 0)]
    assert fewest_digits(runs, 4) == 3  # 0-2, 2-3, 3-4 or 0-1, 1-3, 3-4
    assert fewest_digits([(n, n + 1, 0) for n in range(5)], 5) == 5


def test_digits_down_a_steep_slope_are_read_with_a_confidence() -> None:
    """20 digits each 30 px lower than the one before: the line image, as tall as the whole slope, squeezes them
    into fewer frames than the line reader can align 20 digits with, and its likelihood of every reading is 0.
    The classifier's reading stands (it was read with a confidence of NaN, sent as null)."""
    canvas = np.zeros((28 + 30 * 20 + 20, 24 * 20 + 40), np.uint8)
    for k in range(20):
        y, x = 10 + 30 * k, 20 + 24 * k
        canvas[y : y + 28, x : x + 28] = np.maximum(canvas[y : y + 28, x : x + 28], IMAGES[k])
    candidates = read_candidates(png(canvas, scale=1), 50_000_000, reader=READER.read)
    logits = RUNTIME.logits(RUNTIME.model_input(candidates.pixels))
    probabilities = RUNTIME.confidences(logits)
    _, digits, certainty = read_line(candidates, probabilities, logits, guide=candidates.guide)
    assert candidates.guide.log_likelihood("".join(map(str, LABELS[:20]))) == -np.inf
    assert digits == LABELS[:20].tolist()
    assert np.isfinite(certainty).all() and (certainty > 0).all()


def test_a_number_in_strokes_thinner_than_a_pixel_is_read_in_the_image_enlarged() -> None:
    """No 3x3 patch of it is dark enough to be ink (it was "no digit found"), so the number is looked for again
    in the image enlarged 3x, as one digit is; the boxes are in the image's own pixels."""
    image, boxes = hairline_number()
    assert read(image) == ("174", boxes)


def test_no_ink_is_no_number() -> None:
    with pytest.raises(ClientError) as raised:
        read(png(np.zeros((30, 90), np.uint8)))
    assert raised.value.status == 422
