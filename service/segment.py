"""A written number -> candidate digits, and the reading the model likes best among them.

    gray image -> ink and its marks -> pieces, left to right -> candidate digits (runs of 1-3 pieces), each 28x28
    the model's probabilities for every candidate -> the best path through them: the digits

The ink is found as for one digit (service/photo.py on a light sheet, whatever the light, ruled lines taken out,
strokes thinner than a pixel in the image enlarged; the bright part on a dark ground), and split into marks
(connected components); specks and the sheet's edges are left out. Marks stacked one over another (a 5's flag, a
dotted stroke) are one piece (service/pieces.py). A piece much wider than the line is tall holds touching digits:
it is cut along seams, paths of least ink from top to bottom started every tenth of the line's height, each a
candidate cut; in a line where some digits touch so, every piece wider than a narrow digit is cut too (a 1
touching a 7 is no wider than a 0). The line is also read whole by service/line_reader.py's model: where it
reads more digits than there are pieces, or two digits over one piece, two glued digits no wider than a wide one
are cut as well, and its reading goes with the candidates to guide the choice. Which pieces make a digit is then
not guessed from shapes but decided by the classifier (recognition-based segmentation): every run of neighbouring
pieces that could be one digit is read, all together, and service/reading.py chooses the path of runs whose
digits score highest together.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from service.decode import LINE_SIDES, decode_image
from service.errors import ClientError
from service.line_reader import LineReading, frame_columns, line_image, placement
from service.morphology import dilate, label_marks, shrink
from service.photo import (
    KEEP_MASS,
    LINE_FAINT,
    NO_DIGIT,
    STRONG,
    THIN_ENLARGE,
    WEAK,
    ThinStrokes,
    cut_out_close,
    edge_to_edge,
    enlarged_for_thin_strokes,
    ink_on_paper,
    measure_marks,
)
from service.pieces import JOIN_GAP, Piece, group_marks, writing
from service.preprocess import INK_FRACTION, fit_and_centre, light_background, require_ink, to_gray

MAX_DIGITS = 32
MAX_PIECES = 3  # a digit is made of at most this many pieces
MAX_WIDTH = 2.0  # no digit is wider than this many line heights...
CUT_WIDTH = 1.2  # ...and none made of some of a piece's cut parts wider than this many
WIDE = 1.1  # a piece wider than this many line heights may hold touching digits: cut candidates in it...
NARROW = 0.6  # ...and, in a line where some piece is that wide (its digits touch), one this wide
STEP = 0.1  # try a cut every this many line heights...
SAME = 0.04  # ...and keep one of seams that run within this many line heights of each other
MIN_PART = 0.07  # a cut leaves at least this many line heights of the piece on either side
STROKE = 0.12  # a stroke is about this fraction of the line's height wide
BLANK = 100  # a run with no ink (seams can leave one) costs as many gaps: never read unless nothing else is
Reader = Callable[[np.ndarray], LineReading]  # a line image (line_reader.line_image) -> what is read in it
LINE_PX = 32  # touching digits in a line taller than twice this many pixels are cut at about this height


@dataclass
class Candidates:
    """What the model is asked to read: each run of pieces that could be one digit, as MNIST images."""

    spans: list[tuple[int, int]]  # (first piece, last piece + 1)
    bridged: list[int]  # for each, the gaps between its pieces (not overlapping, not cut) that it bridges
    pixels: np.ndarray  # uint8 [N, 28, 28]
    boxes: list[tuple[int, int, int, int]]  # (left, top, right, bottom) in the image
    cuts: list[float | None]  # for each piece boundary 1..n-1: the strokes a cut there crosses (None: a gap)
    pieces: int
    guide: LineReading | None = None  # the line reader's reading of the line (None: not read, `touching` off)

    @property
    def cut(self) -> bool:
        """Whether any piece was cut (digits touch), not only split at gaps."""
        return any(cut is not None for cut in self.cuts)


def find_ink(gray: np.ndarray, thin: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The ink as float [H, W] 0-255 (white on black), its marks labelled (0: none), the marks' boxes (top, left,
    bottom, right; mark i is label i + 1) and the marks that are writing (specks, the sheet's edges and lines
    left out). `thin`: on paper, the strokes are thinner than a pixel (service/photo.py, ThinStrokes)."""
    light = light_background(gray)
    if light:
        ink, strokes = ink_on_paper(gray, LINE_FAINT, thin)
        labels, boxes, mass, peak = find_marks(ink, WEAK * strokes)
        surely = np.flatnonzero(peak > STRONG * strokes)
        heaviest = surely[np.argmax(mass[surely])] if len(surely) else None
        # The writing cut out close (as for one digit, service/preprocess.py to_mnist): its heaviest mark runs
        # from edge to edge and is no ruled line. (A number may span the frame: that alone is no sign.)
        if heaviest is not None and cut_out_close(boxes[heaviest], ink.shape):
            light, gray = False, 255 - gray
    if not light:
        ink = np.clip(gray - require_ink(gray), 0, None)
        labels, boxes, mass, peak = find_marks(ink, INK_FRACTION * float(ink.max()))
    keep = mass >= KEEP_MASS * mass.max()
    if light:
        keep &= peak > STRONG * strokes  # hysteresis, as for one digit
        # A mark from edge to edge is the sheet's edge or a line, not writing.
        keep &= ~np.array([edge_to_edge(box, ink.shape) for box in boxes], bool)
    if not keep.any():
        raise ClientError(422, NO_DIGIT)
    level = float(np.percentile(ink[np.isin(labels, np.flatnonzero(keep) + 1)], 90)) or 1.0
    return np.clip(ink / level, 0, 1) * 255, labels, boxes, keep


def find_marks(ink: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The marks (8-connected) of ink above `threshold`: labels (0: none), boxes (top, left, bottom, right), mass
    and darkest value, mark i being label i + 1; 422 where there are none."""
    count, labels = label_marks(ink > threshold, connectivity=8)
    if count == 1:
        raise ClientError(422, NO_DIGIT)
    boxes, mass, peak = measure_marks(labels, ink)
    return labels, np.array(boxes), mass, peak


def cut_starts(width: int, line: float) -> list[int]:
    """Where to start looking for cuts in a piece of touching digits: every STEP of the line's height, at least
    MIN_PART of it from the piece's ends. Many starts, because the ink's projection has no clear minimum where
    digits overlap or slant; seams from neighbouring starts that settle in the same valley are one cut
    (`distinct_seams`), and the classifier chooses among what is left."""
    margin = max(1, round(MIN_PART * line))
    return list(range(margin, width - margin + 1, max(1, round(STEP * line))))


def seam(cost: np.ndarray, start: int, reach: int) -> np.ndarray:
    """The path from the top row to the bottom that crosses the least ink (`cost` [H, W]), one column per row,
    moving at most one column from row to row and staying within `reach` of column `start`: a cut that can slip
    between digits that overlap, where a straight one would slice through a stroke."""
    low, high = max(0, start - reach), min(cost.shape[1], start + reach + 1)
    window = cost[:, low:high].astype(np.float64)
    total = window[0].copy()
    moves = np.zeros(window.shape, np.int8)
    # From the column to the left, straight above, to the right; off the window's edges: never (inf, not
    # overwritten). Filled in place row by row: one array for the whole seam.
    options = np.full((3, window.shape[1]), np.inf)
    for row in range(1, len(window)):
        options[0, 1:], options[1], options[2, :-1] = total[:-1], total, total[1:]
        moves[row] = options.argmin(axis=0) - 1
        total = window[row] + options.min(axis=0)
    path = np.empty(len(window), np.int64)
    path[-1] = int(total.argmin())
    for row in range(len(window) - 1, 0, -1):
        path[row - 1] = path[row] + moves[row, path[row]]
    return path + low


def find_candidates(
    gray: np.ndarray, touching: bool = True, thin: bool = False, reader: Reader | None = None
) -> Candidates:
    """The candidate digits of a written number in `gray` (float [H, W] 0-255, any polarity); `touching`: whether
    pieces that may hold touching digits are cut (not where only digits standing apart count); `thin`: as
    `find_ink`; `reader`: reads the line whole (service/line_reader.py), with `touching`."""
    ink, labels, boxes, keep = find_ink(gray, thin)
    marks = list(np.flatnonzero(keep))
    heights = boxes[marks, 2] - boxes[marks, 0]
    line = float(np.percentile(heights, 75))
    pieces = writing(group_marks(boxes, marks), boxes, line)
    if not pieces:
        raise ClientError(422, NO_DIGIT)
    if len(pieces) > MAX_PIECES * MAX_DIGITS:
        raise ClientError(422, f"too many marks for a number of at most {MAX_DIGITS} digits")
    # Touching digits make many candidates: cut and read at a working size where there are (the same reading).
    wide = WIDE * line if touching else np.inf
    cutting = any(p.right - p.left > wide for p in pieces)
    guide = None
    if touching and reader is not None:
        # The line read whole: how many digits it holds and what they say. More digits than pieces: some touch,
        # though no piece is WIDE (two glued digits are often no wider than a wide one; a 1 glued to a 4, no wider
        # than a 4). Where the line reader is wrong, the classifier can still outvote it (service/reading.py).
        # As float32, as line_image reads it: the ink placed once, for the line image and the frames' columns.
        written = np.asarray(ink * np.isin(labels, [m + 1 for p in pieces for m in p.labels]), np.float32)
        found = placement(written)
        guide = reader(line_image(written, found))
        # Far more digits than a number may have (a long scribble reads as a row of 1s): said before the cutting
        # and reading of thousands of candidates. The line reader counts one digit too many at most (of 3,500
        # numbers of make bench-read's kinds, from validation and test digits; one too few more often).
        if len(guide.text) > MAX_DIGITS + 1:
            raise too_many_digits(len(guide.text) - 1, at_least=True)
        # Or two digits read within one piece: a stroke drawn apart (a 5's flag) can make the pieces as many as
        # the digits while two others touch.
        at = frame_columns(found, guide.digit_frames())
        crowded = any(np.count_nonzero((at >= p.left) & (at < p.right)) > 1 for p in pieces)
        cutting = cutting or len(guide.text) > len(pieces) or crowded
    if cutting:
        wide = NARROW * line  # this writer's digits touch: a narrow pair may too
    factor = int(line // LINE_PX) if cutting else 1
    if factor >= 2:
        ink, labels = shrink(ink, labels, factor)
        line /= factor
        for piece in pieces:
            piece.left, piece.right = piece.left // factor, -(-piece.right // factor)
        wide /= factor
    pieces = cut_wide_pieces(pieces, labels, ink, line, wide)
    runs = digit_runs(pieces, line)
    if touching and (fewest := fewest_digits(runs, len(pieces))) > MAX_DIGITS:
        raise too_many_digits(fewest, at_least=True)  # before reading thousands of candidates (a scribble)
    spans, bridged, images, found = [], [], [], []
    own = [p.mask(labels, p.left, p.right) for p in pieces]  # each piece's pixels once, not once per run
    for first, last, gaps in runs:
        crop, box = digit_image(pieces[first:last], own[first:last], ink)
        spans.append((first, last))
        bridged.append(gaps if crop is not None else BLANK)
        images.append(fit_and_centre(crop) if crop is not None else np.zeros((28, 28), np.uint8))
        found.append(box)
    cuts = [p.crossed if p.cut_before else None for p in pieces[1:]]
    if factor >= 2:  # back to the image's pixels (the padded last block not past its edge)
        height, width = gray.shape
        found = [(a * factor, b * factor, min(c * factor, width), min(d * factor, height)) for a, b, c, d in found]
    return Candidates(spans, bridged, np.stack(images), found, cuts, len(pieces), guide)


def digit_runs(pieces: list[Piece], line: float) -> list[tuple[int, int, int]]:
    """The runs of neighbouring pieces that could be one digit, ordered by their first piece: (first piece, last
    piece + 1, the gaps it bridges). A run may bridge MAX_PIECES - 1 gaps (none wider than JOIN_GAP) and undo any
    number of cuts, and is no wider than MAX_WIDTH line heights (CUT_WIDTH where it undoes a cut, unless it is a
    whole piece)."""
    runs = []
    for first in range(len(pieces)):
        joined = gaps = 0
        cut = False  # whether it undoes a cut
        for last in range(first + 1, len(pieces) + 1):
            run = pieces[first:last]
            if last - first > 1:
                after = run[-1]
                cut = cut or after.cut_before
                if not after.cut_before:
                    joined += 1
                    gap = after.left - max(p.right for p in run[:-1])
                    if joined >= MAX_PIECES or gap > JOIN_GAP * line:
                        break
                    gaps += gap > 0
                width = max(p.right for p in run) - min(p.left for p in run)
                if width > MAX_WIDTH * line:
                    break
                whole = not run[0].cut_before and (last == len(pieces) or not pieces[last].cut_before)
                if cut and width > CUT_WIDTH * line and not whole:  # a wide piece is read whole, not in wide parts
                    continue
            runs.append((first, last, gaps))
    return runs


def fewest_digits(runs: list[tuple[int, int, int]], pieces: int) -> int:
    """The fewest digits any reading of the pieces can have: the shortest path through `runs`."""
    fewest = [0] + [pieces] * pieces  # a piece alone is always a run: at most one digit each
    for first, last, _ in runs:  # ordered by their first piece
        fewest[last] = min(fewest[last], fewest[first] + 1)
    return fewest[pieces]


def too_many_digits(count: int, at_least: bool = False) -> ClientError:
    """The 422 for an image of more than MAX_DIGITS digits."""
    holds = f"at least {count}" if at_least else str(count)
    return ClientError(422, f"the image holds {holds} digits, more than {MAX_DIGITS}", {"digits": count})


def cut_wide_pieces(pieces: list[Piece], labels: np.ndarray, ink: np.ndarray, line: float, wide: float) -> list[Piece]:
    """Pieces wider than `wide` pixels cut along seams (`seam`) from their candidate columns (`cut_starts`)."""
    out: list[Piece] = []
    height = labels.shape[0]
    for piece in pieces:
        if piece.right - piece.left <= wide:
            out.append(piece)
            continue
        cost = ink[:, piece.left : piece.right] * piece.mask(labels, piece.left, piece.right)
        rows = np.flatnonzero(cost.any(axis=1))
        if not len(rows):
            out.append(piece)
            continue
        top, bottom = int(rows[0]), int(rows[-1]) + 1
        reach = max(1, round(MIN_PART * line / 2))
        stroke = 255.0 * max(1.0, line * STROKE)
        seams = []
        for start in cut_starts(piece.right - piece.left, line):
            path = seam(cost[top:bottom], start, reach)
            crossed = float(cost[top:bottom][np.arange(bottom - top), path].sum()) / stroke
            path += piece.left
            seams.append((np.concatenate([np.full(top, path[0]), path, np.full(height - bottom, path[-1])]), crossed))
        seams = distinct_seams(seams, SAME * line)
        bounds = [(piece.lo, piece.crossed), *seams, (piece.hi, 0.0)]
        parts = []
        for n, ((lo, crossed), (hi, _)) in enumerate(itertools.pairwise(bounds)):
            left = piece.left if lo is None else max(piece.left, int(lo.min()))
            right = piece.right if hi is None else min(piece.right, int(hi.max()))
            part = Piece(piece.labels, left, max(right, left + 1), n > 0 or piece.cut_before, crossed, lo, hi)
            if parts and not part.mask(labels, part.left, part.right).any():  # seams that met: no piece between
                parts[-1].hi, parts[-1].right = part.hi, max(parts[-1].right, part.right)
                continue
            parts.append(part)
        if not parts[0].mask(labels, parts[0].left, parts[0].right).any() and len(parts) > 1:
            parts[1].lo, parts[1].left, parts[1].cut_before = parts[0].lo, parts[0].left, parts[0].cut_before
            parts[1].crossed = parts[0].crossed
            parts.pop(0)
        out += parts
    return out


def distinct_seams(seams: list[tuple[np.ndarray, float]], within: float) -> list[tuple[np.ndarray, float]]:
    """Seams (path, strokes crossed) left to right, one of each group that runs within `within` columns of
    each other on average: the one crossing least ink."""
    kept: list[tuple[np.ndarray, float]] = []
    for path, crossed in sorted(seams, key=lambda found: float(np.mean(found[0]))):
        if kept and float(np.mean(np.abs(path - kept[-1][0]))) <= within:
            if crossed < kept[-1][1]:
                kept[-1] = (path, crossed)
            continue
        kept.append((path, crossed))
    return kept


def digit_image(
    run: list[Piece], masks: list[np.ndarray], ink: np.ndarray
) -> tuple[np.ndarray | None, tuple[int, ...]]:
    """The ink of a run of pieces (`masks`: each one's pixels over its own columns), cropped to it, and its box
    (left, top, right, bottom)."""
    left, right = min(p.left for p in run), max(p.right for p in run)
    mask = np.zeros((ink.shape[0], right - left), bool)
    for piece, own in zip(run, masks, strict=True):
        mask[:, piece.left - left : piece.right - left] |= own
    rows = np.flatnonzero(mask.any(axis=1))
    if not len(rows):  # seams that left a piece no ink
        return None, (left, 0, right, 1)
    top, bottom = int(rows[0]), int(rows[-1]) + 1
    mask = dilate(mask[top:bottom])  # soft edges
    cols = np.flatnonzero(mask.any(axis=0))
    crop = ink[top:bottom, left:right] * mask
    return crop[:, cols[0] : cols[-1] + 1], (left + int(cols[0]), top, left + int(cols[-1]) + 1, bottom)


def read_candidates(data: bytes, max_pixels: int, touching: bool = True, reader: Reader | None = None) -> Candidates:
    """Image bytes -> the candidate digits of the number in it, boxes in the full image's displayed pixels;
    `touching`, `reader`: as `find_candidates`."""
    decoded = decode_image(data, max_pixels, LINE_SIDES)
    gray = to_gray(decoded.image)
    sx, sy = decoded.scale
    try:
        candidates = find_candidates(gray, touching, reader=reader)
    except ThinStrokes:  # printed in a Thin or Hairline weight: looked for again enlarged, as for one digit
        candidates = find_candidates(enlarged_for_thin_strokes(gray), touching, thin=True, reader=reader)
        sx, sy = sx / THIN_ENLARGE, sy / THIN_ENLARGE
    candidates.boxes = [(round(a * sx), round(b * sy), round(c * sx), round(d * sy)) for a, b, c, d in candidates.boxes]
    return candidates
