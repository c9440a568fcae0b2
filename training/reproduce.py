"""Repeat the training runs behind a shipped model, from its card's `reproduce` commands, first to last.

A model trained in cycles (each run starting from the last one's weights, `--init`) has one `python -m training
train` line per run; this runs them in order, in this Python, and skips a run whose checkpoint is already there
(a chain of runs takes hours: an interrupted one resumes at the run it stopped in). The export is left to `make
export`, which writes the shipped files."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from training import soup, train
from training.export import run_from_command, train_lines


def training_lines(card: Path) -> list[str]:
    lines = train_lines(json.loads(card.read_text()))
    if not lines:
        raise SystemExit(f"{card} names no training run to repeat (no 'reproduce' commands)")
    return lines


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("card", type=Path, nargs="?", default=Path("models/mnist_cnn.json"), help="a model card")
    parser.add_argument("--dry-run", action="store_true", help="print the runs, run none")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR, else data/mnist, downloaded)")


def main(args: argparse.Namespace) -> None:
    lines = training_lines(args.card)
    for n, line in enumerate(lines, 1):
        config, out = run_from_command(line)
        done = (out / "checkpoint.pt").is_file()
        status = "done already, skipped" if done else "dry run" if args.dry_run else "running"
        print(f"run {n} of {len(lines)} ({status}): {line}")
        if done or args.dry_run:
            continue
        if soup.is_soup(config):
            metrics = soup.soup([Path(p) for p in config["ingredients"]], out, args.data_dir, config["eval_subset"])
            print(f"wrote {out}/checkpoint.pt: the soup of {', '.join(metrics['kept'])}")
        else:
            metrics = train.train(train.TrainConfig(**config), out, args.data_dir)
            print(f"wrote {out}/checkpoint.pt ({metrics['training_seconds']} s on {metrics['hardware']})")
