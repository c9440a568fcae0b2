"""Which reading of a written number's candidate digits (service/segment.py) is likeliest: the path through its
pieces whose digits score highest together, found by dynamic programming over the model's answers for every
candidate.

A candidate's score is a weighted sum of what is known of it (`features`: how surely and how strongly the model
reads it, per digit it is read as; its shape against the line; the gaps it bridges and the strokes the cut it ends
at crosses). The weights are learned, not set by hand: a structured perceptron (accuracy/tune_read.py) on written
numbers and single digits of MNIST *training* digits moves them until the best path is the true reading, and
writes them to service/read_weights.json, for this model's logits. Per-digit features matter because the model's
top logit has a scale of its own for each digit (a sure 1 reads lower than a sure 3), and two touching digits
framed together, or a fragment of one, read confidently but with a lower logit than a digit of that kind.
Where the line reader read the line whole, the two models are weighed together (`guided_reading`): of the paths
that spell one of the line reader's likeliest texts (a candidate may be read as its second likeliest digit, at a
cost: RELAX where pieces were cut, RELAX_APART where the digits stand apart), and the best path, the one whose score
plus LINE_WEIGHT times the line reader's log likelihood of its text is highest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import NamedTuple

import numpy as np

from service.line_reader import LineReading
from service.segment import BLANK, Candidates

WEIGHTS_FILE = Path(__file__).with_name("read_weights.json")
SHARED = (
    "bias",  # each digit read: without it, fewer digits would always score higher
    "log_probability",
    "top_logit",  # / 10, at most 2
    "margin",  # top logit less the second's, / 10, at most 2
    "low",  # how far its height falls below 0.8 of the tallest candidate's (x 5)
    "aspect",  # width / height
    "squat",  # aspect beyond 0.8
    "very_squat",  # aspect beyond 1.2
    "gaps_bridged",  # gaps between pieces that do not overlap, joined into it (at most 5)
    "cut_strokes",  # the strokes the cut it ends at crosses (0: it ends at a gap or the line's end)
    "ends_at_cut",
)
PER_DIGIT = ("is", "top_logit_if", "aspect_if")  # each x 10: one per digit it is read as
FEATURES = SHARED + tuple(f"{name}_{digit}" for name in PER_DIGIT for digit in range(10))


def features(candidates: Candidates, probabilities: np.ndarray, logits: np.ndarray) -> np.ndarray:
    """What the score weighs, per candidate: float [N, len(FEATURES)]."""
    boxes = np.array(candidates.boxes, np.float64).reshape(-1, 4)
    heights = np.maximum(1.0, boxes[:, 3] - boxes[:, 1])
    aspect = (boxes[:, 2] - boxes[:, 0]) / heights
    ranked = np.sort(logits, axis=1)
    top = np.minimum(ranked[:, -1], 20.0) / 10
    margin = np.minimum(ranked[:, -1] - ranked[:, -2], 20.0) / 10
    ends = [last for _, last in candidates.spans]
    cut = [candidates.cuts[last - 1] if last < candidates.pieces else None for last in ends]
    shared = [
        np.ones(len(boxes)),
        np.log(np.maximum(probabilities.max(axis=1), 1e-12)),
        top,
        margin,
        np.maximum(0.0, 0.8 - heights / heights.max()) * 5,
        aspect,
        np.maximum(0.0, aspect - 0.8),
        np.maximum(0.0, aspect - 1.2),
        np.clip(np.asarray(candidates.bridged, np.float64), 0, 5),
        np.array([c or 0.0 for c in cut]),
        np.array([c is not None for c in cut], np.float64),
    ]
    digit = np.eye(10)[logits.argmax(axis=1)]
    return np.hstack([np.column_stack(shared), digit, digit * top[:, None], digit * aspect[:, None]])


def load_scorer(path: Path = WEIGHTS_FILE) -> tuple[np.ndarray, float]:
    """The learned weights, in the order of FEATURES (a file written for other features is refused), and the
    temperature fitted with them, that turns path scores into the posterior of `segment_certainty`."""
    found = json.loads(path.read_text())
    if tuple(found["features"]) != FEATURES:
        raise ValueError(f"{path} holds weights for other features: run accuracy/tune_read.py --write")
    return np.array(found["weights"], np.float64), float(found["temperature"])


WEIGHTS, TEMPERATURE = load_scorer()


def best_path(candidates: Candidates, scores: np.ndarray) -> list[int]:
    """The candidates (indices), left to right, of the path through all the pieces with the highest total score."""
    n = candidates.pieces
    best = np.full(n + 1, -np.inf)
    best[0] = 0.0
    back = [-1] * (n + 1)
    for index, (first, last) in enumerate(candidates.spans):  # spans come ordered by their first piece
        if best[first] + scores[index] > best[last]:
            best[last], back[last] = best[first] + scores[index], index
    chosen, at = [], n
    while at > 0:
        index = back[at]
        chosen.append(index)
        at = candidates.spans[index][0]
    return chosen[::-1]


def path_of(candidates: Candidates, length: int, value: Callable[[int, int], float | None]) -> list[int] | None:
    """The best path of exactly `length` candidates, each scored `value(index, k)` as the k-th digit (None: it
    cannot be the k-th), or None where the candidates hold no such path (dynamic programming over piece
    boundaries and digits so far)."""
    # At each piece boundary, for each count of digits that can reach it: the best total and its last candidate.
    best: list[dict[int, tuple[float, int]]] = [{} for _ in range(candidates.pieces + 1)]
    best[0][0] = (0.0, -1)
    for index, (first, last) in enumerate(candidates.spans):  # ordered by their first piece
        for k, (total, _) in best[first].items():
            worth = value(index, k) if k < length else None
            if worth is not None and total + worth > best[last].get(k + 1, (-np.inf,))[0]:
                best[last][k + 1] = (total + worth, index)
    if length not in best[-1]:
        return None
    chosen, at, k = [], candidates.pieces, length
    while at > 0:
        index = best[at][k][1]
        chosen.append(index)
        at, k = candidates.spans[index][0], k - 1
    return chosen[::-1]


def shortfall(probabilities: np.ndarray) -> np.ndarray:
    """How much less likely the model finds each digit than its likeliest, per candidate: log p(top) - log p(d),
    float [N, 10]."""
    log_p = np.log(np.maximum(probabilities, 1e-12))
    return log_p.max(axis=1, keepdims=True) - log_p


def spellings(
    candidates: Candidates, probabilities: np.ndarray, score: np.ndarray, texts: list[str], relax: float | None = None
) -> list[list[int] | None]:
    """For each text, the best-scoring path whose digits, as the model reads each, spell it; None where there is
    none. With `relax`, a candidate may be read as its second likeliest digit too, its score less `relax` times
    that digit's `shortfall`."""
    values = score.tolist()
    # Stable: of tied digits, the first, as argmax takes it.
    readable = np.argsort(-probabilities, axis=1, kind="stable")[:, : 1 if relax is None else 2].tolist()
    cost = ((relax or 0.0) * shortfall(probabilities)).tolist()

    def spell(text: str) -> list[int] | None:
        return path_of(
            candidates,
            len(text),
            lambda index, k: values[index] - cost[index][d] if (d := int(text[k])) in readable[index] else None,
        )

    return [spell(text) for text in texts]


def spelling(
    candidates: Candidates, probabilities: np.ndarray, score: np.ndarray, text: str, relax: float | None = None
) -> list[int] | None:
    """`spellings` of one text."""
    return spellings(candidates, probabilities, score, [text], relax)[0]


# How much the line reader's log likelihood of a text counts beside the path score. Chosen on touching numbers of
# validation digits (seeds 0 and 7, 150 numbers each, right: 133 and 136 following its greedy reading where a
# path spells it; 135 and 136 at 4, 136 and 139 at 8, 136 and 138 at 16, 135 and 137 at 1,000).
LINE_WEIGHT = 8.0
# Texts this much less likely than the likeliest (in nats) are not spelled: one would need LINE_WEIGHT times as
# much more score to win. On the same numbers: the same readings at 3 and 5, one fewer right at 2.
LINE_MARGIN = 3.0
# A text is also spelled with a candidate read as its second likeliest digit (a touching digit's crop holds a
# neighbour's strokes and can read a little wrong), its score less RELAX times how much less likely the model finds
# that digit. Chosen on 900 touching numbers (validation digits from 1,600 and 3,200, training digits from 30,000):
# right 832 without, 845 at 8 (a third digit too: no more). On held-out touching numbers (validation digits from 0,
# seeds 0 and 7; test digits from 2,000 and 3,500; 150 each): 541 -> 548.
# Tried and not shipped: a bonus per digit up to as many as the line reader's greedy reading counts (a glued 1
# often vanishes into its neighbour): 851 and 555 at 20 per digit, but where the line reader sees a digit that is
# not there, the reading follows it, and surely ("454" drawn touching read "4154" at 0.73).
RELAX = 8.0
# Where no piece was cut (the digits stand apart), each candidate is a whole digit, framed clean, and the classifier
# needs stronger evidence to be overruled. On numbers written with gaps (canvas, transparent, plain, shadowed;
# validation digits from 0 and test digits from 2,000, 150 each: 1,149 of 1,200 right unguided): at 8, 18 more right
# and 5 fewer (the line reader's wrong digit taken where the classifier was right); at 24, 12 and 1; at 32 and 48,
# 11 and 1. Spelled strictly (each candidate its likeliest digit only), 4 more right, none fewer.
RELAX_APART = 32.0


# How surely a guided reading's digits are each one digit: the share, among the weighed paths, of those that hold
# it, each weighted by exp(its weighed score / LINE_TEMPERATURE). Chosen on the same numbers (mean negative log
# likelihood of the number being right under its confidence: 3.42 with the path search's own share, 0.27 here at 4
# and 0.28 at 8, 0.32 at 16; at 8, min_confidence=0.9 tells of as many wrong readings as before, 76 %, and keeps
# 75 % of the right ones, not 57 %).
LINE_TEMPERATURE = 8.0


def weighed_paths(
    candidates: Candidates,
    probabilities: np.ndarray,
    score: np.ndarray,
    guide: LineReading,
    best: tuple[list[int], str] | None = None,
) -> tuple[list[tuple[list[int], str]], np.ndarray]:
    """The readings the two models are weighed on, each once: a path and its text, for the paths that spell one
    of the line reader's likeliest texts (service/line_reader.py; RELAX) and the best path (`best`, with its text,
    where the caller found it already); and each one's score plus LINE_WEIGHT times the line reader's log
    likelihood of its text, less RELAX (RELAX_APART where no piece was cut) times the `shortfall` of any digit read
    as its candidate's second."""
    relax = RELAX if candidates.cut else RELAX_APART
    texts = guide.likeliest()
    likely = [text for text, likelihood in texts if text and likelihood >= texts[0][1] - LINE_MARGIN]
    spelled = spellings(candidates, probabilities, score, likely, relax)
    found = [(tuple(path), text) for path, text in zip(spelled, likely, strict=True) if path]
    if best is None:
        path = best_path(candidates, score)
        best = path, "".join(str(d) for d in probabilities[path].argmax(axis=1))
    readings = [(list(path), text) for path, text in dict.fromkeys([*found, (tuple(best[0]), best[1])])]
    cost = shortfall(probabilities)
    weighed = [
        score[path].sum() - relax * cost[path, [int(d) for d in text]].sum() + LINE_WEIGHT * guide.log_likelihood(text)
        for path, text in readings
    ]
    return readings, np.array(weighed)


def guided_reading(
    candidates: Candidates, probabilities: np.ndarray, score: np.ndarray, guide: LineReading
) -> tuple[list[int], str]:
    """The path and its text that the two models, weighed together, like best (`weighed_paths`)."""
    readings, weighed = weighed_paths(candidates, probabilities, score, guide)
    return readings[int(weighed.argmax())]


def guided_path(candidates: Candidates, probabilities: np.ndarray, score: np.ndarray, guide: LineReading) -> list[int]:
    """The path of `guided_reading`."""
    return guided_reading(candidates, probabilities, score, guide)[0]


def shares(paths: list[list[int]], weighed: np.ndarray, chosen: list[int], temperature: float) -> np.ndarray:
    """For each chosen candidate, the share of the paths that hold it, each weighted by exp(weighed / temperature)."""
    weights = np.exp((weighed - weighed.max()) / temperature)
    holds = np.array([[index in path for path in paths] for index in chosen], np.float64).reshape(len(chosen), -1)
    return holds @ weights / weights.sum()


def unread(candidates: Candidates) -> np.ndarray:
    """What each candidate's score loses beside the weighed features: 1000 for one with no ink (seams can leave
    one), which is so never read unless nothing else can be; 0 for the rest."""
    return 1000.0 * (np.asarray(candidates.bridged) >= BLANK)


def scores(candidates: Candidates, probabilities: np.ndarray, logits: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Each candidate's score."""
    return features(candidates, probabilities, logits) @ weights - unread(candidates)


# One piece of ink that the model reads as one digit this surely (calibrated), and no wider than this many times its
# height, is that digit, however the path search would cut it: the answer /classify gives it. A wide digit (a 2 with
# a long tail, a 5 with a long flag) cut in two reads as two sure digits (the tail as a 1). Two glued digits can
# read as one sure digit too (a 76 as 6 at 0.99999...), so the rule gives way where the line reader finds the line
# holds several digits at least SEVERAL likely: of 1,800 touching numbers (validation, training and test digits,
# drawn as make bench-read draws them, its own set among them), the 21 read as one sure piece were all several
# digits, at 0.984 or more; of the 1,300 one-digit photos of make bench-read, the six that were one sure piece and
# read as two digits (a 4 open at the top as 21 in all five renderings, a long-stemmed 6 as 16) at 0.93 or less. At
# aspect 1.2, three of those six were too wide (1.26-1.27: the photos widen a little).
SURE_WHOLE, WHOLE_ASPECT, SEVERAL = 0.999, 1.3, 0.95


def one_sure_piece(candidates: Candidates, probabilities: np.ndarray) -> int | None:
    """The candidate that is the whole of an image of one piece (every boundary between its parts a cut, no gap),
    if it reads as one digit at least SURE_WHOLE and is no wider than WHOLE_ASPECT times its height."""
    if candidates.pieces < 2 or any(cut is None for cut in candidates.cuts):
        return None
    whole = [n for n, span in enumerate(candidates.spans) if span == (0, candidates.pieces)]
    if not whole:
        return None
    left, top, right, bottom = candidates.boxes[whole[0]]
    sure = probabilities[whole[0]].max() >= SURE_WHOLE
    return whole[0] if sure and right - left <= WHOLE_ASPECT * (bottom - top) else None


def best_reading(
    candidates: Candidates, probabilities: np.ndarray, logits: np.ndarray, weights: np.ndarray = WEIGHTS
) -> list[int]:
    """The candidates (indices) that make the likeliest reading, left to right: one sure piece whole
    (`one_sure_piece`), else the best path."""
    return read_line(candidates, probabilities, logits, weights)[0]


def segment_certainty(
    candidates: Candidates, scores: np.ndarray, chosen: list[int], temperature: float = TEMPERATURE
) -> np.ndarray:
    """For each chosen candidate, how surely its pieces make one digit of the number: the probability, over every
    path through the pieces weighted by exp(total score / temperature), that the path holds this candidate (the
    forward-backward sums of a linear-chain model, in logs). Near 1 where the ink can only be cut one way (digits
    apart); lower where another reading scores almost as well (touching digits read as one, a digit that could
    be two). The temperature is fitted on training numbers (accuracy/tune_read.py) so that it says how often the
    reading is right."""
    scaled = scores / temperature
    n = candidates.pieces
    ahead = np.full(n + 1, -np.inf)  # log of the summed weight of the paths from the start to each boundary
    ahead[0] = 0.0
    for index, (first, last) in enumerate(candidates.spans):  # ordered by their first piece
        ahead[last] = np.logaddexp(ahead[last], ahead[first] + scaled[index])
    behind = np.full(n + 1, -np.inf)  # ...and from each boundary to the end
    behind[n] = 0.0
    for index in range(len(candidates.spans) - 1, -1, -1):
        first, last = candidates.spans[index]
        behind[first] = np.logaddexp(behind[first], scaled[index] + behind[last])
    spans = np.array([candidates.spans[i] for i in chosen]).reshape(-1, 2)
    return np.exp(ahead[spans[:, 0]] + scaled[chosen] + behind[spans[:, 1]] - ahead[n])


class Choice(NamedTuple):
    """A reading of the line: its candidates, left to right, the digit each is read as, and how surely each is one
    digit."""

    chosen: list[int]
    digits: list[int]
    certainty: np.ndarray


def read_line(
    candidates: Candidates,
    probabilities: np.ndarray,
    logits: np.ndarray,
    weights: np.ndarray = WEIGHTS,
    temperature: float = TEMPERATURE,
    guide: LineReading | None = None,
) -> Choice:
    """The likeliest reading: one sure piece whole (certainty 1: no other reading contests it); where the
    line was read whole (`guide`), unless its digits stand apart and the line reader reads them as the path search
    does, the reading the two models like best (a digit may be its candidate's second likeliest: RELAX,
    RELAX_APART), and its share of the paths they were weighed on (`shares`); else the best path, each candidate
    its likeliest digit, and its share of every path (`segment_certainty`)."""
    whole = one_sure_piece(candidates, probabilities)
    if whole is not None and guide and guide.several() >= SEVERAL:
        whole = None  # two glued digits, read as one sure digit
    if whole is not None:
        return Choice([whole], [int(probabilities[whole].argmax())], np.ones(1))
    score = scores(candidates, probabilities, logits, weights)
    chosen = best_path(candidates, score)
    digits = probabilities[chosen].argmax(axis=1).tolist()
    # Weighed unless the digits stand apart and the line reader reads them as the path search does: then there is
    # nothing to weigh (the search of its likeliest texts, the dearest step, would find the same), and the path
    # posterior tells how sure each is.
    text = "".join(map(str, digits))
    if guide and (candidates.cut or guide.text != text):
        readings, weighed = weighed_paths(candidates, probabilities, score, guide, (chosen, text))
        # Unless the line reader can align none of them with its frames (a line far taller than wide squeezed
        # into a few: digits written down a steep slope): then it has nothing to say.
        if np.isfinite(weighed).any():
            chosen, text = readings[int(weighed.argmax())]
            paths = [path for path, _ in readings]
            return Choice(chosen, [int(d) for d in text], shares(paths, weighed, chosen, LINE_TEMPERATURE))
    return Choice(chosen, digits, segment_certainty(candidates, score, chosen, temperature))
