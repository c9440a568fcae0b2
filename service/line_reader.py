"""A line of written digits read whole by a small sequence model (models/line_reader.onnx, trained with CTC by
training/line_reader.py), which tells /read how many digits a line of touching digits holds and what they say.

The digit classifier reads one framed digit at a time, and two touching digits framed together often read as one
sure digit (a glued "41" as a 4): nothing in one candidate tells it that it holds two. A model that sees the whole
line, trained on lines of touching and spaced digits, does; service/reading.py then prefers the cut path whose
digits spell what it read, so the classifier still reads each digit and gives its probabilities and box.

    ink (white on black, any size) -> line_image: 32 rows, the writing 28 tall -> the model -> greedy CTC text
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from service.contract import read_card

HEIGHT = 32  # rows of the model's input
WRITING = 28  # ...of which the writing's box takes this many, 2 above and below
MARGIN = 4  # blank columns on either side
STRIDE = 2  # input columns per output frame
BLANK = 10  # the CTC blank's class; 0-9 are the digits
# At most this many columns: 32 wide digits with room to spare. Marks far wider than tall (a dash, a line no
# ruling check took out) are squeezed to it, not read for a second at a width of tens of thousands.
MAX_COLUMNS = 4096
DEFAULT_FILE = Path(__file__).resolve().parent.parent / "models" / "line_reader.onnx"


def line_image(ink: np.ndarray) -> np.ndarray:
    """White-on-black ink (float or uint8 [H, W], 0-255) -> float32 [HEIGHT, W'] in 0-1: cropped to the ink, scaled
    so that it is WRITING rows tall (its aspect kept up to MAX_COLUMNS), MARGIN blank columns either side, W' a
    multiple of STRIDE."""
    ink = np.asarray(ink, np.float32)
    rows, cols = np.flatnonzero(ink.max(axis=1) > 0), np.flatnonzero(ink.max(axis=0) > 0)
    if not len(rows):
        return np.zeros((HEIGHT, 2 * MARGIN), np.float32)
    crop = ink[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    scale = WRITING / crop.shape[0]
    width = min(max(1, round(crop.shape[1] * scale)), MAX_COLUMNS - 2 * MARGIN)
    scaled = np.asarray(Image.fromarray(crop, mode="F").resize((width, WRITING), Image.Resampling.BILINEAR))
    total = -(-(width + 2 * MARGIN) // STRIDE) * STRIDE
    out = np.zeros((HEIGHT, total), np.float32)
    out[(HEIGHT - WRITING) // 2 : (HEIGHT + WRITING) // 2, MARGIN : MARGIN + width] = scaled
    return np.clip(out / 255.0, 0.0, 1.0)


def greedy_text(frames: np.ndarray) -> str:
    """Per-frame class scores [T, 11] -> the text: the best class per frame, repeats merged, blanks dropped."""
    best = frames.argmax(axis=1)
    keep = (best != BLANK) & np.r_[True, best[1:] != best[:-1]]
    return "".join(str(int(d)) for d in best[keep])


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

    def read(self, line: np.ndarray) -> str:
        """The digits the model reads in a line (`line_image`'s)."""
        frames = self.session.run(None, {self.input: line[None, None]})[0][0]
        return greedy_text(frames)
