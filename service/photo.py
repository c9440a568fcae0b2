"""Ink on paper: find the digit in a photo or scan of a light sheet, whatever the light.

    gray image (dark ink on light paper) -> ink [H, W] in 0-255, zero off the digit, and the digit's box

The paper's brightness is estimated locally (it falls off across a photographed sheet: vignetting, a shadow, a
gradient), and ink is darkness *relative to the paper under it*, so uneven light does not count as ink. Faint
marks (paper texture, noise, light ruled lines) fall below a threshold set by the digit's own strokes; of the marks
left, those that belong to the digit are kept: the heaviest one, and the ones near it.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from service.errors import ClientError
from service.morphology import box_mean_3x3, column_opening, dilate, grey_closing, label_marks

NO_DIGIT = "no digit found: the image has no ink that stands out from its background"
MIN_DARKNESS = 0.18  # the digit's strokes must be at least this much darker than the paper under them (0-1)
WEAK, STRONG = 0.35, 0.6  # hysteresis, as fractions of the strokes' darkness: what is ink, what surely is
# A number's ruled and margin lines are looked for among marks this faint too (service/segment.py): a line fainter
# than WEAK breaks into pieces too short to be found as a line, and a piece that touches digits glues them to one
# another and to the sheet's edge (one wide piece, cut into a dozen) or stands beside them as a "1". One digit's
# reading keeps WEAK: what make bench-photos measured.
LINE_FAINT = 0.25
KEEP_MASS = 0.03  # a mark this light relative to the digit's heaviest part is a speck, not part of it
REACH = 0.25  # a mark this close (fraction of the digit's size) to the digit belongs to it
LINE_SPAN = 0.6  # a straight row or column of marks longer than this fraction of the image is a ruled line...
LINE_THICKNESS = 0.02  # ...if it is no thicker than this fraction of the image (a stroke is thicker)
FILL_THIN = 0.1  # a mark thinner than this fraction of the image across it is a line, not a close-cut digit
FILL = 0.7  # a digit this large one way, touching the image's edge, was cut out close (a photographed one is smaller)
OTHER_MASS, OTHER_HEIGHT = 0.25, 0.5  # a mark left out this heavy and tall (against the digit's) may be a digit
THIN_ENLARGE = 3  # strokes thinner than a pixel are looked for again in the image enlarged this many times...
THIN_MAX_PIXELS = 1 << 20  # ...where it stays this small (a label or a small image, not a photo's working size)
SLOPES = np.tan(np.radians(np.arange(-5, 5.5, 1.0)))  # photos are seldom straighter than this


def estimate_paper_level(gray: np.ndarray) -> np.ndarray:
    """The paper's brightness under every pixel: a grey closing (max then min filter) with a window wider than
    any stroke removes the ink and keeps light that varies over larger distances (a closing keeps monotone
    ramps and step edges exactly, so shadow edges stay paper). Done at about 64-128 pixels across, where it is
    cheap and averaging has already quietened the sensor noise, then enlarged."""
    height, width = gray.shape
    k = max(1, max(height, width) // 64)
    image = Image.fromarray(gray, mode="F")
    small = np.asarray(image.resize((max(1, width // k), max(1, height // k)), Image.Resampling.BOX))
    window = max(5, max(small.shape) // 5)
    # Extended past the border by odd reflection, which continues the light's slope: with a plain edge mode a
    # page that darkens towards its border would look like a valley there, and the closing would fill it.
    padded = np.pad(small, window, mode="reflect", reflect_type="odd")
    closed = grey_closing(padded, window)
    level = closed[window:-window, window:-window]
    return np.asarray(Image.fromarray(level, mode="F").resize((width, height), Image.Resampling.BILINEAR))


def measure_darkness(gray: np.ndarray) -> np.ndarray:
    """How much darker than the paper under it each pixel is: 0 (paper) to 1 (black), float32 [H, W]."""
    gray = np.asarray(gray, np.float32)
    level = np.maximum(estimate_paper_level(gray), 1.0)
    return np.clip(1 - gray / level, 0, 1)


def shear(ys: np.ndarray, xs: np.ndarray, slope: float, length: int) -> np.ndarray:
    """The row each point (ys, xs) falls on once the image is sheared by `slope`, counted from 0."""
    return np.rint(ys + xs * slope).astype(np.int64) + int(np.ceil(abs(slope) * length))


def measure_band_widths(rows: np.ndarray) -> np.ndarray:
    """For a boolean 1-D array, how long the run of True each element is in (0 where False)."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], rows, [False])).astype(np.int8)))
    starts, stops = edges[::2], edges[1::2]
    widths = np.zeros(len(rows), np.int64)
    for start, stop in zip(starts, stops, strict=True):  # a few ruled lines at most
        widths[start:stop] = stop - start
    return widths


def widen(rows: np.ndarray, by: int) -> np.ndarray:
    """A boolean 1-D array with every True run grown by `by` elements on each side."""
    counts = np.convolve(rows.astype(np.int32), np.ones(2 * by + 1, np.int32), mode="same")
    return counts > 0


def remove_lines(ink: np.ndarray, marks: np.ndarray) -> np.ndarray:
    """`ink` with long straight lines taken out (ruled lines, a margin line), horizontal or vertical within a
    few degrees. A line is a row (or column), sheared by the best of a few small angles, marked over more than
    LINE_SPAN of the image's width (height) and thinner than a stroke of a digit that large. On and beside a
    line, ink is opened across it (a min then max filter a little longer than the line is thick), which
    erases the line and keeps whatever crosses it or runs along it thicker than it: the digit's strokes."""
    ink = ink.copy()
    marked_y, marked_x = np.nonzero(marks)
    # Rows, then columns (ink_t is a view: it writes ink).
    for ink_t, ys, xs in ((ink, marked_y, marked_x), (ink.T, marked_x, marked_y)):
        if len(ys) == 0:
            break
        height, length = ink_t.shape
        # The angle at which marks pile up most on one row, found on a quarter of them (cheaper, same answer).
        slope = max(SLOPES, key=lambda s: np.bincount(shear(ys[::4], xs[::4], s, length)).max())
        rows = shear(ys, xs, slope, length)
        counts = np.bincount(rows)
        # How many pixels each sheared row has inside the image (near the corners a tilted line is cut short):
        # column x holds the sheared rows from shear(0, x) on, one per image row.
        starts = shear(np.zeros(length, np.int64), np.arange(length), slope, length)
        steps = np.zeros(max(len(counts), int(starts.max()) + 1) + height, np.int64)
        np.add.at(steps, starts, 1)
        np.add.at(steps, starts + height, -1)
        room = np.cumsum(steps)[: len(counts)]
        line_rows = (counts > LINE_SPAN * room) & (room > LINE_SPAN * length / 2)
        if not line_rows.any():
            continue
        widths = measure_band_widths(line_rows)
        # A printed line is thin; a band as thick as a stroke is a stroke (a tall "1" close up): never erased.
        line_rows &= widths <= LINE_THICKNESS * height
        if not line_rows.any():
            continue
        thickness = int(widths[line_rows].max())
        on_line = widen(line_rows, thickness)[rows]  # its faint edges too
        ys, xs = ys[on_line], xs[on_line]
        opened = column_opening(ink_t, 2 * thickness + 3)
        ink_t[ys, xs] = opened[ys, xs]
    return ink


class ThinStrokes(ClientError):
    """No 3x3 patch is dark enough to be ink, but a run of three pixels is: strokes thinner than a pixel (a
    printed digit in a Thin or Hairline weight, a fine pen in a small image), which a 3x3 patch averages with
    the paper beside them. Raised as the 422 it would otherwise be, for callers that do not look again
    (`service.preprocess.to_mnist` does, on the image enlarged)."""

    def __init__(self) -> None:
        super().__init__(422, NO_DIGIT)


def enlarged_for_thin_strokes(gray: np.ndarray) -> np.ndarray:
    """`gray` enlarged THIN_ENLARGE times (bicubic), for a second look where ThinStrokes was raised: there a
    stroke's diagonal steps stay joined as marks; ThinStrokes again where that would pass THIN_MAX_PIXELS."""
    height, width = gray.shape
    if height * width * THIN_ENLARGE**2 > THIN_MAX_PIXELS:
        raise ThinStrokes()
    size = (width * THIN_ENLARGE, height * THIN_ENLARGE)
    return np.asarray(Image.fromarray(gray, mode="F").resize(size, Image.Resampling.BICUBIC))


def darkest_run(ink: np.ndarray) -> float:
    """The darkest run of three pixels in a row, a column or a diagonal: a stroke one pixel wide has one at its
    darkness; a lone speck does not."""
    padded = np.pad(ink, 1)
    height, width = ink.shape
    best = 0.0
    for (y0, x0), (y1, x1) in (((1, 0), (1, 2)), ((0, 1), (2, 1)), ((0, 0), (2, 2)), ((0, 2), (2, 0))):
        run = ink + padded[y0 : y0 + height, x0 : x0 + width] + padded[y1 : y1 + height, x1 : x1 + width]
        best = max(best, float(run.max()) / 3)
    return best


def measure_stroke_darkness(ink: np.ndarray, thin: bool = False) -> float:
    """How dark the digit's strokes are: the darkest 3x3 patch (lone noisy pixels do not count); 422 when even
    that is too faint to be ink (ThinStrokes where a run of three pixels is dark enough: the strokes are thin).
    `thin`: the strokes are known to be thin (ThinStrokes was raised): the darkest run is their darkness."""
    strokes = float(box_mean_3x3(ink).max())
    if thin and strokes < MIN_DARKNESS:
        strokes = darkest_run(ink)
    elif strokes < MIN_DARKNESS and darkest_run(ink) >= MIN_DARKNESS:
        raise ThinStrokes()
    if strokes < MIN_DARKNESS:
        raise ClientError(422, NO_DIGIT)
    return strokes


def measure_marks(labels: np.ndarray, ink: np.ndarray) -> tuple[list[list[int]], np.ndarray, np.ndarray]:
    """For marks 1..N labelled in `labels` (0: none): each one's box [top, left, bottom, right] (exclusive), its
    mass (its ink summed) and its darkest pixel, in label order. Sorted once by label, the marked pixels (a few
    % of the image) give all three as runs; cheaper than OpenCV's own statistics here."""
    marked = np.flatnonzero(labels)
    marked_labels = labels.ravel()[marked]
    order = np.argsort(marked_labels, kind="stable")
    marked = marked[order]
    starts = np.flatnonzero(np.diff(marked_labels[order], prepend=0))  # where each label's run begins
    rows, cols = np.divmod(marked, labels.shape[1])
    values = ink.ravel()[marked]
    boxes = np.stack(
        [
            np.minimum.reduceat(rows, starts),
            np.minimum.reduceat(cols, starts),
            np.maximum.reduceat(rows, starts) + 1,
            np.maximum.reduceat(cols, starts) + 1,
        ],
        axis=1,
    )
    return boxes.tolist(), np.add.reduceat(values, starts, dtype=np.float64), np.maximum.reduceat(values, starts)


def fills_frame(box: list[int], height: int, width: int) -> bool:
    """A mark's box (top, left, bottom, right) touches the image's edge and spans FILL of it one way at least: a
    digit cut out close; a photographed one is smaller."""
    top, left, bottom, right = box
    at_edge = min(top, left) == 0 or bottom == height or right == width
    return at_edge and (bottom - top >= FILL * height or right - left >= FILL * width)


def edge_to_edge(box: list[int], shape: tuple[int, int]) -> bool:
    """A mark's box (top, left, bottom, right) runs from one edge of the image to the other: a ruled line, a
    margin line or the sheet's edge, not a digit's stroke."""
    top, left, bottom, right = box
    return (top == 0 and bottom == shape[0]) or (left == 0 and right == shape[1])


def line_like(box: list[int], height: int, width: int) -> bool:
    """A mark's box (top, left, bottom, right) is as thin as a ruled or margin line across the image (a close-cut
    digit's strokes, even a "1"'s, are thicker)."""
    top, left, bottom, right = box
    return bottom - top < FILL_THIN * height or right - left < FILL_THIN * width


def cut_out_close(box: list[int], shape: tuple[int, int]) -> bool:
    """The heaviest mark's box says the image is writing cut out close, not a sheet: it runs edge to edge and is
    no ruled or margin line."""
    return edge_to_edge(box, shape) and not line_like(box, *shape)


class FillsFrame(Exception):
    """Not a digit on a sheet but a digit cut out close: the heaviest ink runs from one edge of the image to the
    other (or a dark desk does, beside the sheet), or the digit's marks fill the frame."""


def select_digit_marks(
    ink: np.ndarray, strokes: float, close_crops: bool = False
) -> tuple[np.ndarray, tuple[int, int, int, int], bool]:
    """The marks that make the digit: their box (top, left, bottom, right), exclusive, a boolean mask of them
    over that box, and whether marks as large as a digit were left out (the image may hold several digits).
    `close_crops`: raise FillsFrame where the heaviest mark runs edge to edge (and is no line), or where the
    digit's marks fill the frame."""
    count, labels = label_marks(ink > WEAK * strokes, connectivity=4)
    if count == 1:  # background only (the lines taken out were all there was)
        raise ClientError(422, NO_DIGIT)
    boxes, mass, peak = measure_marks(labels, ink)
    surely = peak > STRONG * strokes  # hysteresis: marks with a pixel above the strong threshold
    height, width = ink.shape

    # Heaviest first; a mark under KEEP_MASS of the heaviest is a speck and is never looked at.
    order = np.argsort(mass)[::-1]
    heaviest = next((i for i in order if surely[i]), None)
    if close_crops and heaviest is not None and cut_out_close(boxes[heaviest], ink.shape):
        raise FillsFrame
    candidates = [i for i in order if surely[i] and not edge_to_edge(boxes[i], ink.shape)]
    if not candidates:
        raise ClientError(422, NO_DIGIT)
    seed = candidates[0]
    candidates = [i for i in candidates if mass[i] >= KEEP_MASS * mass[seed]]
    kept = {seed}
    top, left, bottom, right = boxes[seed]
    grown = True
    while grown:  # take in the marks near the digit, the box growing as it does
        grown = False
        reach = REACH * max(bottom - top, right - left)
        for i in candidates:
            mark_top, mark_left, mark_bottom, mark_right = boxes[i]
            near = mark_top < bottom + reach and mark_bottom > top - reach
            if i not in kept and near and mark_left < right + reach and mark_right > left - reach:
                kept.add(i)
                top, left = min(top, mark_top), min(left, mark_left)
                bottom, right = max(bottom, mark_bottom), max(right, mark_right)
                grown = True
    if close_crops and fills_frame([top, left, bottom, right], height, width):
        raise FillsFrame
    keep = np.zeros(count + 1, bool)
    keep[[i + 1 for i in kept]] = True
    digit_height = bottom - top
    others = any(
        mass[i] >= OTHER_MASS * mass[seed] and boxes[i][2] - boxes[i][0] >= OTHER_HEIGHT * digit_height
        for i in candidates
        if i not in kept
    )
    return keep[labels[top:bottom, left:right]], (top, left, bottom, right), others


def ink_on_paper(gray: np.ndarray, line_marks: float = WEAK, thin: bool = False) -> tuple[np.ndarray, float]:
    """Dark ink on light paper, float [H, W] 0-255 -> each pixel's darkness against the paper under it (0-1),
    ruled and margin lines taken out, and the strokes' darkness (what WEAK and STRONG are fractions of). One
    digit (`find_digit`) and a number (service/segment.py, with `line_marks` LINE_FAINT) start from it; lines
    are found among the marks darker than `line_marks` of the strokes' darkness."""
    ink = measure_darkness(gray)
    strokes = measure_stroke_darkness(ink, thin)
    return remove_lines(ink, ink > line_marks * strokes), strokes


def find_digit(
    gray: np.ndarray, close_crops: bool = False, thin: bool = False
) -> tuple[np.ndarray, tuple[int, int, int, int], bool]:
    """Dark ink on light paper, float [H, W] 0-255 -> the digit's ink as white on black 0-255 (zero elsewhere),
    cropped to its box, that box (left, top, right, bottom) in `gray`'s pixels, and whether marks as large as a
    digit were left out. `close_crops`: raise FillsFrame where the image is a digit cut out close
    (select_digit_marks), instead of taking its strokes for the sheet's edge."""
    ink, strokes = ink_on_paper(gray, thin=thin)
    mask, (top, left, bottom, right), others = select_digit_marks(ink, strokes, close_crops)
    ink = ink[top:bottom, left:right]
    level = float(np.percentile(ink[mask], 90))
    # The strokes' cores full white, as in MNIST; their soft edges kept (a pixel around the marks).
    mask = dilate(mask, cross=True)
    return np.clip(ink / level, 0, 1) * 255 * mask, (left, top, right, bottom), others


def edge_pixels(image: np.ndarray) -> np.ndarray:
    """The pixels along the image's four edges (the corners twice), as one array."""
    return np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
