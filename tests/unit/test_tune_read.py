"""accuracy/tune_read.py's learning of /read's scorer: the path that reads right, and a perceptron that moves the
weights until the best path is it, on candidates made up (two pieces: read apart, or as one digit)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from accuracy.tune_read import accuracy, learn, true_path
from service.reading import FEATURES, WEIGHTS_FILE, load_scorer
from service.segment import Candidates


def two_pieces(apart: str, whole: str, top_logits: list[float]) -> tuple[Candidates, np.ndarray, np.ndarray]:
    """Two pieces meeting at a cut, read as digits `apart` (each piece) or `whole` (both together)."""
    boxes = [(0, 0, 8, 20), (8, 0, 16, 20), (0, 0, 16, 20)]
    candidates = Candidates([(0, 1), (1, 2), (0, 2)], [0, 0, 0], np.zeros((3, 28, 28), np.uint8), boxes, [1.0], 2)
    logits = np.zeros((3, 10))
    for n, digit in enumerate([int(apart[0]), int(apart[1]), int(whole)]):
        logits[n, digit] = top_logits[n]
    probabilities = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return candidates, probabilities, logits


def test_the_true_path_reads_the_truth_or_is_none():
    candidates, probabilities, _ = two_pieces("17", "4", [5.0, 9.0, 9.0])
    score = np.zeros(3)
    assert true_path(candidates, probabilities, score, "17") == [0, 1]
    assert true_path(candidates, probabilities, score, "4") == [2]
    assert true_path(candidates, probabilities, score, "71") is None


def test_the_perceptron_learns_when_parts_read_surely_but_belong_together():
    """A 1 touching a 7 is cut into two sure parts and its union reads as a weak 4; a real 4 cut in two also gives
    two sure parts (0s), but its union reads strongly. From log-probability plus one per digit, where learning
    starts, both split; taught on both, the learned weights split the pair and keep the 4 whole."""
    pairs = [two_pieces("17", "4", [6.0 + k / 10, 9.0, 8.0]) for k in range(10)]
    fours = [two_pieces("00", "4", [6.0, 6.0 + k / 10, 14.0]) for k in range(10)]
    sets = {"pairs": [(*pair, "17") for pair in pairs], "fours": [(*four, "4") for four in fours]}
    start = np.zeros(len(FEATURES))
    start[[FEATURES.index("bias"), FEATURES.index("log_probability")]] = 1.0
    assert accuracy(sets["pairs"], start) == 1.0 and accuracy(sets["fours"], start) == 0.0
    learned = learn(sets, epochs=5)
    assert accuracy(sets["pairs"], learned) == 1.0 and accuracy(sets["fours"], learned) == 1.0


def test_weights_for_other_features_are_refused(tmp_path):
    """service/read_weights.json names the features its weights are for: a file written for others (features
    added, removed or reordered since) stops the service at import rather than scoring with the wrong weights."""
    shipped = json.loads(WEIGHTS_FILE.read_text())
    assert shipped["features"] == list(FEATURES) and len(shipped["weights"]) == len(FEATURES)
    other = tmp_path / "weights.json"
    other.write_text(json.dumps({"features": list(FEATURES[1:]), "weights": shipped["weights"][1:]}))
    with pytest.raises(ValueError, match="tune_read"):
        load_scorer(other)
