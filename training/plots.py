"""The two pictures of a training run: learning curves and the test-set confusion matrix."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # no display on servers and CI
import matplotlib.pyplot as plt
import numpy as np


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
