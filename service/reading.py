"""Which reading of a written number's candidate digits (service/segment.py) is likeliest: the path through its
pieces whose digits score highest together, found by dynamic programming over the model's answers for every
candidate.

A digit broken in two joins up because the whole is read more surely than its parts; two touching digits come
apart because each reads surely and their union does not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from service.segment import Candidates


@dataclass(frozen=True)
class Scoring:
    """How `best_reading` scores a candidate digit: its log-probability, plus `digit` (each log-probability is
    <= 0: without it, fewer digits always score higher), less `weak` per unit its top logit falls below
    `weak_logit`, `low` per unit its height falls below `low_height` of the tallest candidate's, `squat` per unit
    of aspect ratio (width / height) beyond `squat_aspect` and `gap` for each gap it bridges between pieces that do
    not overlap; a cut it ends at costs `cut`, and `cross` per stroke the cut crosses (touching digits meet in
    about one). Chosen on numbers and single digits of MNIST *training* digits by accuracy/tune_read.py, for this
    model's logits."""

    digit: float = 1.0
    weak_logit: float = 8.0
    weak: float = 0.5
    low_height: float = 0.8
    low: float = 3.0
    squat_aspect: float = 0.8
    squat: float = 1.0
    gap: float = 1.0
    cut: float = 0.0
    cross: float = 0.5


def best_reading(
    candidates: Candidates, probabilities: np.ndarray, logits: np.ndarray, scoring: Scoring = Scoring()
) -> list[int]:
    """The candidates (indices) that make the likeliest reading, left to right: the path through the pieces whose
    digits score highest together (`Scoring`), found by dynamic programming.

    The model reads two touching digits squeezed into one frame, or a fragment of one, about as surely as a digit
    (its probabilities saturate), so log-probabilities alone prefer merging. Its top logit does not saturate and is
    lower for both, in touching numbers of MNIST training digits, than for the digits; and a fragment is often
    lower than the line."""
    n = candidates.pieces
    boxes = np.array(candidates.boxes, np.float64).reshape(-1, 4)
    heights = np.maximum(1.0, boxes[:, 3] - boxes[:, 1])
    aspect = (boxes[:, 2] - boxes[:, 0]) / heights
    score = (
        np.log(np.maximum(probabilities.max(axis=1), 1e-12))
        + scoring.digit
        - scoring.weak * np.maximum(0.0, scoring.weak_logit - logits.max(axis=1))
        - scoring.low * np.maximum(0.0, scoring.low_height - heights / heights.max())
        - scoring.squat * np.maximum(0.0, aspect - scoring.squat_aspect)
        - scoring.gap * np.asarray(candidates.bridged, np.float64)
    )
    best = np.full(n + 1, -np.inf)
    best[0] = 0.0
    back = [-1] * (n + 1)
    for index, (first, last) in enumerate(candidates.spans):
        value = score[index]
        if last < n and candidates.cuts[last - 1] is not None:
            value -= scoring.cut + scoring.cross * candidates.cuts[last - 1]
        if best[first] + value > best[last]:
            best[last], back[last] = best[first] + value, index
    chosen, at = [], n
    while at > 0:
        index = back[at]
        chosen.append(index)
        at = candidates.spans[index][0]
    return chosen[::-1]
