"""A line of written digits read whole by a small sequence model (models/line_reader.onnx, trained with CTC by
training/line_reader.py), which tells /read how many digits a line holds, touching or apart, and what they say.

The digit classifier reads one framed digit at a time, and two touching digits framed together often read as one
sure digit (a glued "41" as a 4): nothing in one candidate tells it that it holds two. A model that sees the whole
line, trained on lines of touching and spaced digits, does, and it reads a digit its crop alone misleads the
classifier on; service/reading.py then weighs the paths whose digits spell its likeliest readings against the
classifier's own best, so the classifier still reads each digit and gives its probabilities and box.

    ink (white on black, any size) -> line_image: 32 rows, the writing 28 tall -> the model -> a LineReading:
    its greedy text, its likeliest texts (a CTC prefix beam search), how likely it finds any text

The likelihoods let the two models be weighed against each other where they disagree, rather than the line
reader's first reading taken as given.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from service.contract import read_card

HEIGHT = 32  # rows of the model's input
WRITING = 28  # ...of which the writing's box takes this many, 2 above and below
MARGIN = 4  # blank columns on either side
STRIDE = 2  # input columns per output frame
BLANK = 10  # the CTC blank's class; 0-9 are the digits
BEAM = 8  # texts kept by the beam search...
UNLIKELY = -8.0  # ...which extends them by the classes a frame gives at least this log probability
# At most this many columns: 32 wide digits with room to spare. Marks far wider than tall (a dash, a line no
# ruling check took out) are squeezed to it, not read for a second at a width of tens of thousands.
MAX_COLUMNS = 4096
DEFAULT_FILE = Path(__file__).resolve().parent.parent / "models" / "line_reader.onnx"


Placement = tuple[tuple[int, int], tuple[int, int], int]  # `placement`'s: (top, bottom), (left, right), width


def line_image(ink: np.ndarray, found: Placement | None = None) -> np.ndarray:
    """White-on-black ink (float or uint8 [H, W], 0-255) -> float32 [HEIGHT, W'] in 0-1: cropped to the ink, scaled
    so that it is WRITING rows tall (its aspect kept up to MAX_COLUMNS), MARGIN blank columns either side, W' a
    multiple of STRIDE. `found`: the ink's `placement`, where the caller has it already."""
    ink = np.asarray(ink, np.float32)
    found = found or placement(ink)
    if found is None:
        return np.zeros((HEIGHT, 2 * MARGIN), np.float32)
    (top, bottom), (left, right), width = found
    scaled = Image.fromarray(ink[top:bottom, left:right], mode="F").resize((width, WRITING), Image.Resampling.BILINEAR)
    total = -(-(width + 2 * MARGIN) // STRIDE) * STRIDE
    out = np.zeros((HEIGHT, total), np.float32)
    out[(HEIGHT - WRITING) // 2 : (HEIGHT + WRITING) // 2, MARGIN : MARGIN + width] = np.asarray(scaled)
    return np.clip(out / 255.0, 0.0, 1.0)


def placement(ink: np.ndarray) -> Placement | None:
    """Where `line_image` takes the ink from and how wide it makes it: (top, bottom), (left, right) of the ink's
    box in `ink`, and its width in the line image's columns; None where there is no ink."""
    rows, cols = np.flatnonzero(ink.max(axis=1) > 0), np.flatnonzero(ink.max(axis=0) > 0)
    if not len(rows):
        return None
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    width = min(max(1, round((right - left) * (WRITING / (bottom - top)))), MAX_COLUMNS - 2 * MARGIN)
    return (top, bottom), (left, right), width


def frame_columns(found: Placement | None, frames: np.ndarray) -> np.ndarray:
    """The columns of the ink that the line reader's output frames are centred on, the ink placed in the line
    image as `found` says (its `placement`)."""
    if found is None:
        return np.zeros(len(frames))
    _, (left, right), width = found
    centres = np.asarray(frames, np.float64) * STRIDE + STRIDE / 2 - MARGIN  # in the scaled ink's columns
    return left + centres * (right - left) / width


def greedy_text(frames: np.ndarray) -> str:
    """Per-frame class scores [T, 11] -> the text: the best class per frame, repeats merged, blanks dropped."""
    best = frames.argmax(axis=1)
    keep = (best != BLANK) & np.r_[True, best[1:] != best[:-1]]
    return "".join(str(int(d)) for d in best[keep])


def log_softmax(scores: np.ndarray) -> np.ndarray:
    """Per-frame scores [T, C] -> log probabilities (the model's outputs are not normalised)."""
    shifted = scores - scores.max(axis=1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


@dataclass(frozen=True)
class LineReading:
    """What the line model makes of a line: per-frame log probabilities of 0-9 and the blank, float [T, 11]."""

    log_probs: np.ndarray

    @property
    def text(self) -> str:
        """The greedy reading: the best class per frame."""
        return greedy_text(self.log_probs)

    def log_likelihood(self, text: str) -> float:
        """log P(text | the line): CTC's forward sum over every alignment of `text` with the frames."""
        states = np.full(2 * len(text) + 1, BLANK)  # blank, digit, blank, digit, ..., blank
        states[1::2] = [int(d) for d in text]
        skip = np.zeros(len(states), bool)  # a digit may follow the digit before it directly, unless the same
        skip[3::2] = states[3::2] != states[1:-2:2]
        no_skip = ~skip
        emissions = self.log_probs[:, states]
        alpha = np.full(len(states), -np.inf)
        alpha[:2] = emissions[0, :2]
        step, jump = np.full(len(states), -np.inf), np.full(len(states), -np.inf)  # from the state before, two before
        for frame in emissions[1:]:
            step[1:] = alpha[:-1]
            jump[2:] = alpha[:-2]
            jump[no_skip] = -np.inf
            alpha = np.logaddexp(np.logaddexp(alpha, step), jump) + frame
        return float(np.logaddexp(alpha[-1], alpha[-2]) if text else alpha[-1])

    def digit_frames(self) -> np.ndarray:
        """For each digit of `text`, the middle frame of the run of frames that reads it."""
        best = self.log_probs.argmax(axis=1)
        starts = np.flatnonzero(np.r_[True, best[1:] != best[:-1]])
        ends = np.r_[starts[1:], len(best)]
        digit = best[starts] != BLANK
        return (starts[digit] + ends[digit] - 1) // 2

    def several(self) -> float:
        """P(the line holds two digits or more | the line): 1 less the likelihood of each text of one digit or none."""
        return 1.0 - sum(math.exp(self.log_likelihood(text)) for text in ["", *"0123456789"])

    def likeliest(self, width: int = BEAM) -> list[tuple[str, float]]:
        """The `width` likeliest texts, likeliest first, by a CTC prefix beam search, each with its log likelihood
        over the alignments the search kept (at most `log_likelihood`'s)."""
        beams = {"": (0.0, -math.inf)}  # text -> log P of the frames so far, ending in a blank / in its last digit
        # Most frames of a line are surely blank: each text then only ends in a blank, and their order stays.
        blank_only = (self.log_probs[:, :BLANK] <= UNLIKELY).all(axis=1) & (self.log_probs[:, BLANK] > UNLIKELY)
        for frame, blank in zip(self.log_probs, blank_only, strict=True):
            if blank:
                log_p = float(frame[BLANK])
                beams = {text: (add_logs(*ends) + log_p, -math.inf) for text, ends in beams.items()}
                continue
            found = extend(beams, frame)
            beams = dict(sorted(found.items(), key=lambda item: -add_logs(*item[1]))[:width])
        return [(text, add_logs(*ends)) for text, ends in beams.items()]


def add_logs(a: float, b: float) -> float:
    """log(e^a + e^b) for floats, as np.logaddexp, at a fraction of its cost for one pair."""
    high, low = (a, b) if a > b else (b, a)
    return high if low == -math.inf else high + math.log1p(math.exp(low - high))


def extend(beams: dict[str, tuple[float, float]], frame: np.ndarray) -> dict[str, tuple[float, float]]:
    """The beam search's texts one frame on: each kept (a blank, or its last digit again) or one digit longer."""
    found: dict[str, tuple[float, float]] = {}

    def add(text: str, blank: float, digit: float) -> None:
        was = found.get(text, (-math.inf, -math.inf))
        found[text] = (add_logs(was[0], blank), add_logs(was[1], digit))

    classes = [(int(c), str(c), float(frame[c])) for c in np.flatnonzero(frame > UNLIKELY)]
    for text, (blank, digit) in beams.items():
        either = add_logs(blank, digit)
        for c, name, log_p in classes:
            if c == BLANK:
                add(text, either + log_p, -math.inf)
            elif text.endswith(name):  # the same digit again only after a blank; without one, the same text
                add(text, -math.inf, digit + log_p)
                add(text + name, -math.inf, blank + log_p)
            else:
                add(text + name, -math.inf, either + log_p)
    return found


class LineReader:
    """The line model in an ONNX Runtime session of its own (CPU, one thread: a few ms a line), once its card's
    sha256 matches the file (service/contract.py)."""

    def __init__(self, path: Path = DEFAULT_FILE) -> None:
        import onnxruntime as ort

        self.card = read_card(path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.input = self.session.get_inputs()[0].name

    def read(self, line: np.ndarray) -> LineReading:
        """What the model reads in a line (`line_image`'s)."""
        frames = self.session.run(None, {self.input: line[None, None]})[0][0]
        return LineReading(log_softmax(frames.astype(np.float64)))
