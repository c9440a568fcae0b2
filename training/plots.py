"""The pictures of a training run (learning curves, the test-set confusion matrix) and of an evaluation
(accuracy under each corruption, reliability diagrams)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np

from service.runtime import softmax
from training.calibration import expected_calibration_error, reliability


def plot_curves(history: list[dict], path: Path) -> None:
    steps = [h["step"] for h in history]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ax.plot(steps, [100 * h["train_accuracy"] for h in history], marker="o", label="train (batches, dropout on)")
    ax.plot(steps, [100 * h["validation_accuracy"] for h in history], marker="o", label="validation (5,000 images)")
    ax.set(xlabel="step", ylabel="accuracy (%)", title="MNIST CNN training")
    ax.grid(alpha=0.3)
    ax.legend()
    if history:
        low = min(min(h["train_accuracy"], h["validation_accuracy"]) for h in history[len(history) // 3 :])
        ax.set_ylim(max(0, 100 * low - 1), 100.2)
    loss_ax = ax.twinx()
    loss_ax.plot(steps, [h["train_loss"] for h in history], color="grey", linestyle="--", label="train loss")
    loss_ax.set_ylabel("train loss", color="grey")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_confusion(confusion: np.ndarray, path: Path, title: str) -> None:
    fig, ax = plt.subplots(figsize=(6.5, 6))
    ax.imshow(np.log1p(confusion), cmap="Blues")  # log scale so that the off-diagonal errors show
    for (true, pred), count in np.ndenumerate(confusion):
        if count:
            colour = "white" if true == pred else "black"
            ax.text(pred, true, str(count), ha="center", va="center", fontsize=8, color=colour)
    ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true", title=title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_corruptions(report: dict, baseline: dict | None, name: str, baseline_name: str | None, path: Path) -> None:
    """Accuracy under each corruption, horizontal bars, the baseline model's beside."""
    names = [*report["accuracy"], "mean"]
    values = [*report["accuracy"].values(), report["mean_accuracy"]]
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    height = 0.4 if baseline else 0.7
    if baseline:
        before = [*baseline["accuracy"].values(), baseline["mean_accuracy"]]
        ax.barh(y + height / 2, [100 * v for v in before], height, color="lightgrey", label=baseline_name)
    ax.barh(y - (height / 2 if baseline else 0), [100 * v for v in values], height, color="tab:blue", label=name)
    for i, v in enumerate(values):
        ax.text(100 * v + 0.5, i - (height / 2 if baseline else 0), f"{100 * v:.1f}", va="center", fontsize=7)
    ax.set(yticks=y, yticklabels=names, xlim=(0, 108), xlabel="accuracy (%)", title="MNIST test set, corrupted")
    ax.invert_yaxis()
    ax.grid(axis="x", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_reliability(panels: dict[str, tuple[np.ndarray, np.ndarray]], temperature: float, path: Path) -> None:
    """One reliability diagram per (logits, labels) set: accuracy against confidence in 15 bins, before and after
    temperature scaling; the diagonal is perfect calibration."""

    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 5), squeeze=False)
    for ax, (title, (logits, labels)) in zip(axes[0], panels.items(), strict=True):
        ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
        for label, t, colour in (("softmax", 1.0, "tab:orange"), (f"T = {temperature:g}", temperature, "tab:blue")):
            probabilities = softmax(logits / t)
            bars = [b for b in reliability(probabilities, labels) if b["count"]]
            ece = expected_calibration_error(probabilities, labels)
            ax.plot(
                [b["confidence"] for b in bars],
                [b["accuracy"] for b in bars],
                marker="o",
                color=colour,
                label=f"{label}: ECE {100 * ece:.2f}%",
            )
        ax.set(xlabel="confidence", ylabel="accuracy", title=title, xlim=(0, 1.02), ylim=(0, 1.02))
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
