"""Average the weights of runs fine-tuned from one start into one network (a greedy model soup, Wortsman et al.
2022): the same network, as fast as any one of them, often a little better than the best.

Runs that start from the same weights (`--init`) stay in one basin of the loss, where the average of their weights
is itself a good network. The candidates are tried best first (validation accuracy, then validation loss); each
joins the soup if the average with it scores better on the validation split (a higher accuracy, or the same with a
lower loss). The test set is used once, on the result. Writes checkpoint.pt, metrics.json and confusion.png as a
training run does, for `python -m training export`.

    python -m training soup runs/cycle3/checkpoint.pt runs/cycle4/checkpoint.pt --out runs/soup
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from training import data
from training.metrics import accuracy_report, format_report
from training.model import MnistCNN, count_parameters
from training.network import hardware, load_checkpoint, logits_of, predict
from training.plots import plot_confusion
from training.train import first

SOUP = "python -m training soup"  # how a card's `reproduce` line that makes a soup begins


def is_soup(config: dict) -> bool:
    """A checkpoint's (or a card line's) config: a soup's, not a training run's."""
    return "ingredients" in config


class SoupError(ValueError):
    """Checkpoints that cannot be averaged."""


@dataclass(frozen=True)
class Score:
    """A network's figures on the validation split."""

    correct: int
    total: int
    loss: float  # mean cross-entropy

    @property
    def accuracy(self) -> float:
        return self.correct / self.total

    def beats(self, other: Score) -> bool:
        return self.correct > other.correct or (self.correct == other.correct and self.loss < other.loss)

    def figures(self) -> dict:
        return {"validation_accuracy": self.accuracy, "validation_loss": round(self.loss, 6)}


def average(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The element-wise mean of several state_dicts of one network."""
    return {name: torch.stack([state[name] for state in states]).mean(0) for name in states[0]}


def greedy(states: dict[str, dict], score: Callable[[dict], Score]) -> tuple[list[str], list[dict]]:
    """Which of the named weights to average, and one record per candidate in the order tried."""
    alone = {name: score(state) for name, state in states.items()}
    order = sorted(states, key=lambda name: (-alone[name].correct, alone[name].loss))
    kept, best = [order[0]], alone[order[0]]
    trials = [{"ingredient": order[0], **best.figures(), "kept": True}]
    for name in order[1:]:
        trial = score(average([states[n] for n in (*kept, name)]))
        joins = trial.beats(best)
        trials.append({"ingredient": name, "alone": alone[name].figures(), **trial.figures(), "kept": joins})
        print(
            f"+ {name}: validation accuracy {100 * trial.accuracy:.2f}%, loss {trial.loss:.4f} "
            f"({'kept' if joins else 'left out'}; best so far {100 * best.accuracy:.2f}%, {best.loss:.4f})"
        )
        if joins:
            kept, best = [*kept, name], trial
    return kept, trials


def soup(checkpoints: list[Path], out_dir: Path, data_dir: str | None = None, eval_subset: int = 0) -> dict:
    """Make the greedy soup of the checkpoints into out_dir (checkpoint.pt, metrics.json); return its metrics."""
    started = time.perf_counter()
    missing = [str(path) for path in checkpoints if not Path(path).is_file()]
    if missing:
        raise SoupError(f"no checkpoint at {', '.join(missing)}")
    loaded = {str(path): load_checkpoint(path)[1] for path in checkpoints}
    starts = {checkpoint["config"].get("init", "") for checkpoint in loaded.values()}
    if len(loaded) < 2 or len(starts) != 1 or not next(iter(starts)):
        raise SoupError(
            "a soup needs two or more runs fine-tuned from the same weights (--init); "
            f"these started from {sorted(starts)}"
        )
    dropout = next(iter(loaded.values()))["config"]["dropout"]
    model = MnistCNN(dropout=dropout, reference_init=False)
    device = torch.device("cpu")
    validation = first(data.load_split("validation", data_dir), eval_subset)
    labels = torch.from_numpy(validation.labels.astype("int64"))

    def score(state: dict) -> Score:
        model.load_state_dict(state)
        logits = logits_of(model, validation.images, device)
        loss = float(F.cross_entropy(logits, labels))
        return Score(int((logits.argmax(1) == labels).sum()), len(labels), loss)

    kept, trials = greedy({name: checkpoint["state_dict"] for name, checkpoint in loaded.items()}, score)
    state = average([loaded[name]["state_dict"] for name in kept])
    last_kept = next(trial for trial in reversed(trials) if trial["kept"])  # the soup's own validation figures
    model.load_state_dict(state)
    test = first(data.load_split("test", data_dir), eval_subset)
    report = accuracy_report(test.labels, predict(model, test.images, device))
    print(f"test set, the soup of {', '.join(kept)}: {format_report(report)}")
    config = {"ingredients": list(loaded), "dropout": dropout, "eval_subset": eval_subset}
    metrics = {
        "config": config,
        "parameters": count_parameters(model),
        "kept": kept,
        "trials": trials,
        "validation_accuracy": last_kept["validation_accuracy"],
        "validation_loss": last_kept["validation_loss"],
        "test": report,
        # The soup's own minute, and the runs it averages: what it cost, all told.
        "seconds": round(time.perf_counter() - started, 1),
        "training_seconds": round(sum(c.get("metrics", {}).get("training_seconds", 0) for c in loaded.values()), 1),
        "hardware": hardware(device),
        "torch_version": str(torch.__version__),
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": state, "config": config, "metrics": metrics}, out_dir / "checkpoint.pt")
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    title = f"MNIST test set: {100 * report['accuracy']:.2f}% correct"
    plot_confusion(np.array(report["confusion_matrix"]), out_dir / "confusion.png", title)
    return metrics


def soup_command(config: dict, out_dir: Path) -> str:
    """The `python -m training soup` line that repeats a soup of this config into out_dir."""
    subset = f" --eval-subset {config['eval_subset']}" if config.get("eval_subset") else ""
    return f"{SOUP} {' '.join(config['ingredients'])}{subset} --out {out_dir}"


def config_from_command(line: str) -> tuple[dict, Path]:
    """A `python -m training soup ...` line (a card's `reproduce`) -> the soup's config and its --out."""
    parser = argparse.ArgumentParser(prog=SOUP)
    add_arguments(parser)
    args = parser.parse_args(shlex.split(line)[4:])
    return {"ingredients": [str(p) for p in args.checkpoints], "eval_subset": args.eval_subset}, args.out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoints", type=Path, nargs="+", help="checkpoint.pt files of runs from the same --init")
    parser.add_argument("--out", type=Path, default=Path("runs/soup"), help="output folder")
    parser.add_argument("--eval-subset", type=int, default=0, help="judge on the first N validation and test images")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR, else data/mnist, downloaded)")


def main(args: argparse.Namespace) -> None:
    try:
        metrics = soup(args.checkpoints, args.out, args.data_dir, args.eval_subset)
    except SoupError as exc:
        raise SystemExit(f"soup refused: {exc}") from None
    print(f"wrote {args.out}/checkpoint.pt and metrics.json: {len(metrics['kept'])} of {len(args.checkpoints)} runs")
