"""Temperature scaling and the expected calibration error (training/calibration.py) on logits whose calibration is
known."""

from __future__ import annotations

import numpy as np
import pytest

from service.runtime import softmax
from training.calibration import expected_calibration_error, fit_temperature, reliability


def sampled(temperature: float, n: int = 20_000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Logits and labels drawn from softmax(logits / temperature): the right temperature is known."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 4, (n, 10))
    p = softmax(logits / temperature)
    labels = (p.cumsum(1) > rng.random((n, 1))).argmax(1)
    return logits, labels


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_fit_recovers_the_temperature_the_labels_were_drawn_with(true_temperature):
    logits, labels = sampled(true_temperature)
    assert fit_temperature(logits, labels) == pytest.approx(true_temperature, rel=0.05)


def test_ece_is_small_when_calibrated_and_large_when_not():
    logits, labels = sampled(2.0)
    assert expected_calibration_error(softmax(logits / 2.0), labels) < 0.02
    assert expected_calibration_error(softmax(logits), labels) > 0.1  # overconfident: T = 1 instead of 2


def test_ece_by_hand():
    # Two bins used: 0.95 confidence, right once of twice (gap 0.45); 0.55 confidence, right (gap 0.45).
    p = np.array([[0.95, 0.05], [0.95, 0.05], [0.45, 0.55]])
    labels = np.array([0, 1, 1])
    assert expected_calibration_error(p, labels) == pytest.approx(0.45)
    bars = [b for b in reliability(p, labels) if b["count"]]
    assert [(b["count"], b["accuracy"]) for b in bars] == [(1, 1.0), (2, 0.5)]
