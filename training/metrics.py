"""Accuracy figures from labels and predictions, shared by training, export and evaluation."""

from __future__ import annotations

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int = 10) -> np.ndarray:
    """[true, predicted] counts."""
    matrix = np.zeros((classes, classes), dtype=np.int64)
    np.add.at(matrix, (labels.astype(np.int64), predictions.astype(np.int64)), 1)
    return matrix


def accuracy_report(labels: np.ndarray, predictions: np.ndarray) -> dict:
    """Overall and per-class accuracy, with the counts behind them so that figures reproduce exactly."""
    matrix = confusion_matrix(labels, predictions)
    per_class = matrix.diagonal() / matrix.sum(axis=1)
    return {
        "accuracy": float(matrix.trace() / matrix.sum()),
        "correct": int(matrix.trace()),
        "total": int(matrix.sum()),
        "per_class_accuracy": {str(d): round(float(a), 6) for d, a in enumerate(per_class)},
        "confusion_matrix": matrix.tolist(),
    }


def format_report(report: dict) -> str:
    lines = [f"accuracy {100 * report['accuracy']:.2f}% ({report['correct']}/{report['total']})"]
    lines += [f"  digit {d}: {100 * a:.2f}%" for d, a in report["per_class_accuracy"].items()]
    return "\n".join(lines)
