"""Marks -> pieces: the marks of a written number grouped into pieces (marks stacked one over another are one, a
5's flag, a dotted stroke), and the pieces that are writing told from specks and what is left of ruled lines.
service/segment.py cuts pieces of touching digits and makes the candidate digits of runs of pieces."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STACKED = 0.5  # marks overlapping by this much of the narrower one's width, side by side, are one piece
JOIN_GAP = 0.2  # pieces further apart than this fraction of the line's height are different digits
THIN, FAR = 0.1, 1.5  # a piece thinner than this (line heights) and further than this from the rest is a stray line
MIN_HEIGHT = 0.35  # a mark lower than this fraction of the line's height, on its own, is a speck or a stray,
# unless it stands beside a digit's upper half (`part_of_a_digit`)


@dataclass
class Piece:
    labels: list[int]  # the marks it is made of
    left: int  # columns [left, right) it spans
    right: int
    cut_before: bool = False  # its left edge is a cut, not a gap
    crossed: float = 0.0  # strokes that cut crosses (ink along it, in units of a stroke's width)
    # Where a cut divides marks: per image row, the first column that is the piece's (lo) and the first that is
    # not (hi); None: no cut on that side.
    lo: np.ndarray | None = None
    hi: np.ndarray | None = None

    def mask(self, labels: np.ndarray, left: int, right: int) -> np.ndarray:
        """The piece's pixels in columns [left, right) of the image, as a boolean [H, right - left]."""
        mask = np.isin(labels[:, left:right], [m + 1 for m in self.labels])
        columns = np.arange(left, right)
        if self.lo is not None:
            mask &= columns >= self.lo[:, None]
        if self.hi is not None:
            mask &= columns < self.hi[:, None]
        return mask


def group_marks(boxes: np.ndarray, marks: list[int]) -> list[Piece]:
    """Marks -> pieces, left to right: marks stacked over one another (overlapping by STACKED of the narrower's
    width) are one piece."""
    pieces: list[Piece] = []
    for mark in sorted(marks, key=lambda m: (boxes[m, 1] + boxes[m, 3]) / 2):
        left, right = int(boxes[mark, 1]), int(boxes[mark, 3])
        for piece in pieces[::-1][:3]:  # the last few pieces are the only ones it can overlap much
            overlap = min(right, piece.right) - max(left, piece.left)
            if overlap >= STACKED * min(right - left, piece.right - piece.left):
                piece.labels.append(mark)
                piece.left, piece.right = min(piece.left, left), max(piece.right, right)
                break
        else:
            pieces.append(Piece([mark], left, right))
    return sorted(pieces, key=lambda p: (p.left + p.right) / 2)


def writing(pieces: list[Piece], boxes: np.ndarray, line: float) -> list[Piece]:
    """The pieces that are writing: not a speck (too low, and no part of the digit beside it), not a stray line."""
    low = [piece_height(boxes, p) < MIN_HEIGHT * line for p in pieces]
    tall = [p for p, is_low in zip(pieces, low, strict=True) if not is_low]
    pieces = [
        p
        for p, is_low in zip(pieces, low, strict=True)
        if not is_low or len(pieces) == 1 or part_of_a_digit(p, tall, boxes, line)
    ]
    return [p for n, p in enumerate(pieces) if not stray_line(pieces, n, line)]


def stray_line(pieces: list[Piece], n: int, line: float) -> bool:
    """Whether piece `n` is what is left of a ruled or margin line beside the number rather than a digit: thinner
    than any stroke of a digit the line's height and far from every other piece."""
    piece = pieces[n]
    if len(pieces) == 1 or piece.right - piece.left >= THIN * line:
        return False
    gaps = [max(other.left - piece.right, piece.left - other.right) for other in pieces if other is not piece]
    return min(gaps) > FAR * line


def part_of_a_digit(piece: Piece, tall: list[Piece], boxes: np.ndarray, line: float) -> bool:
    """Whether a low piece is a stroke of the digit beside it drawn apart (a 5's flag, a 7's bar) rather than a
    speck: within JOIN_GAP of a tall piece, and no lower than that piece's upper half."""
    bottom = boxes[piece.labels, 2].max()
    for other in tall:
        gap = max(other.left - piece.right, piece.left - other.right)
        middle = (boxes[other.labels, 0].min() + boxes[other.labels, 2].max()) / 2
        if gap <= JOIN_GAP * line and bottom <= middle:
            return True
    return False


def piece_height(boxes: np.ndarray, piece: Piece) -> int:
    return int(boxes[piece.labels, 2].max() - boxes[piece.labels, 0].min())
