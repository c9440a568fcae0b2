"""Temperature scaling (Guo et al. 2017): one number T, fitted on the validation split, so that softmax(logits / T)
says how often the model is right. It changes no prediction, only the confidence the service reports.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from service.runtime import softmax
from training.inference import split_logits

BINS = 15


def negative_log_likelihood(logits: np.ndarray, labels: np.ndarray, temperature: float) -> float:
    # In float64: in float32 the loss is flat to its own rounding within about 5e-4 of the best T, so where the fit
    # lands there depended on the CPU's summation order (1.0526 on one machine; the card, fitted on another: 1.053).
    scaled = np.asarray(logits, np.float64) / temperature
    top = scaled.max(1, keepdims=True)
    log_sum = np.log(np.exp(scaled - top).sum(1)) + top[:, 0]
    return float(np.mean(log_sum - scaled[np.arange(len(labels)), labels]))


def fit_temperature(logits: np.ndarray, labels: np.ndarray) -> float:
    """The T in [0.05, 20] that minimises the negative log-likelihood of `labels` (golden-section search on log T:
    the loss is convex in 1/T, so it has one minimum)."""
    low, high = math.log(0.05), math.log(20.0)
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if negative_log_likelihood(logits, labels, math.exp(a)) < negative_log_likelihood(logits, labels, math.exp(b)):
            high = b
        else:
            low = a
    return round(math.exp((low + high) / 2), 4)


def reliability(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> list[dict]:
    """Per equal-width confidence bin: its range, count, mean confidence and accuracy (the reliability diagram)."""
    confidence = probabilities.max(1)
    correct = probabilities.argmax(1) == labels
    which = np.minimum((confidence * bins).astype(int), bins - 1)
    found = []
    for b in range(bins):
        inside = which == b
        found.append(
            {
                "low": b / bins,
                "high": (b + 1) / bins,
                "count": int(inside.sum()),
                "confidence": float(confidence[inside].mean()) if inside.any() else None,
                "accuracy": float(correct[inside].mean()) if inside.any() else None,
            }
        )
    return found


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray, bins: int = BINS) -> float:
    """Over `bins` equal-width confidence bins: the mean |accuracy - confidence|, weighted by the bin's share."""
    total = len(labels)
    return float(
        sum(
            b["count"] / total * abs(b["accuracy"] - b["confidence"])
            for b in reliability(probabilities, labels, bins)
            if b["count"]
        )
    )


def errors_before_and_after(logits: np.ndarray, labels: np.ndarray, temperature: float) -> tuple[float, float]:
    """The expected calibration error of softmax(logits), and of softmax(logits / temperature), rounded as cards
    keep them."""
    return tuple(round(expected_calibration_error(softmax(logits / t), labels), 5) for t in (1.0, temperature))


def calibrate(
    model_path: Path, data_dir: str | None = None, scale=None, test: tuple[np.ndarray, np.ndarray] | None = None
) -> dict:
    """T fitted on the validation split; the test set's ECE before and after: the card's "calibration". `test`:
    the test set's logits and labels, where the caller has them already (the export)."""
    temperature = fit_temperature(*split_logits(model_path, "validation", data_dir, scale))
    before, after = errors_before_and_after(*(test or split_logits(model_path, "test", data_dir, scale)), temperature)
    return {
        "temperature": temperature,
        "fitted_on": "the validation split (5,000 training images held out), negative log-likelihood",
        "ece_bins": BINS,
        "test_ece_before": before,
        "test_ece_after": after,
    }
