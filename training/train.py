"""Train the MNIST CNN: the reference recipe by default, a better one with --augment and --schedule cosine."""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn
from tqdm import tqdm

from service.contract import standardise
from training import data, outliers, printed
from training.augment import RECIPES, SHAPE_ONLY, augment
from training.metrics import accuracy_report, format_report
from training.model import MnistCNN, count_parameters
from training.network import hardware, initial_weights, pick_device, predict, to_unit_tensor
from training.plots import plot_confusion, plot_curves

PRINTED_PER_DIGIT = 8  # renderings of each digit per font: ~13,000 printed digits from Debian's fonts
OUTLIER = -1  # the label of an outlier: no digit (training/outliers.py)
OUTLIER_BANK = 30_000
OUTLIER_WEIGHT = 0.5  # as in outlier exposure's paper


@dataclass
class TrainConfig:
    steps: int = 20000
    batch_size: int = 50
    lr: float = 1e-4
    schedule: str = "constant"  # or "cosine": decay to 0 over the run
    dropout: float = 0.5
    seed: int = 0
    augment: str = "none"  # training/augment.py: "affine" or "robust"
    shape_only: float = SHAPE_ONLY  # robust: the share of images that keep only the shape changes (clean-looking)
    ema: float = 0.0  # > 0: evaluate and keep an exponential moving average of the weights with this decay
    printed: float = 0.0  # > 0: this share of each batch is printed digits (training/printed.py)
    outliers: float = 0.0  # > 0: this share of each batch is wrong cuts of numbers, taught as no digit
    eval_every: int = 1000
    init: str = ""  # a checkpoint (.pt) or exported model (.onnx) whose weights start the run: fine-tuning
    train_subset: int = 0  # 0: all 55,000 training images; else the first N (quick runs and tests)
    eval_subset: int = 0  # 0: all validation and test images; else the first N of each (quick runs and tests)
    device: str = "auto"


def train(config: TrainConfig, out_dir: Path, data_dir: str | None = None, progress: bool = True) -> dict:
    """Train, keep the weights with the best validation accuracy, evaluate them once on the test set, write
    checkpoint.pt, metrics.json, curves.png and confusion.png to out_dir; return the metrics."""
    torch.manual_seed(config.seed)
    generator = torch.Generator().manual_seed(config.seed)  # batch order and augmentation, apart from dropout
    device = pick_device(config.device)
    train_x, train_y = training_tensors(config, data_dir, device)
    extras = extra_tensors(config, data_dir, device)
    validation = first(data.load_split("validation", data_dir), config.eval_subset)
    model = MnistCNN(dropout=config.dropout).to(device)
    if config.init:
        model.load_state_dict(initial_weights(config.init))
    optimizer, scheduler = optimiser(model, config)
    # The averaged weights (when asked for) are the ones evaluated and kept: smoother than the last step's.
    averaged = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(config.ema)) if config.ema else None
    evaluated = averaged.module if averaged else model

    history, best = [], {"validation_accuracy": -1.0}
    window = Window()
    started = time.perf_counter()
    bar = tqdm(range(1, config.steps + 1), desc="train", unit="step", disable=not progress, dynamic_ncols=True)
    for step, (x, y) in zip(bar, batches(train_x, train_y, config, generator, extras), strict=False):
        model.train()
        logits = model(standardise(x, data.MEAN, data.STD))
        loss = loss_of(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler:
            scheduler.step()
        if averaged:
            averaged.update_parameters(model)
        window.add(loss, logits, y)
        if step % config.eval_every == 0 or step == config.steps:
            val_acc = float((predict(evaluated, validation.images, device) == validation.labels).mean())
            record = {"step": step, **window.take(), "validation_accuracy": val_acc}
            record["seconds"] = round(time.perf_counter() - started, 1)
            history.append(record)
            tqdm.write(
                f"step {step}: train accuracy {record['train_accuracy']:.4f}, "
                f"validation accuracy {val_acc:.4f}, loss {record['train_loss']:.4f}"
            )
            if val_acc > best["validation_accuracy"]:
                best = {"validation_accuracy": val_acc, "step": step, "state": copy.deepcopy(evaluated.state_dict())}
                # The best weights so far, readable by load_checkpoint while the run goes on (or after it dies).
                out_dir.mkdir(parents=True, exist_ok=True)
                torch.save({"state_dict": best["state"], "config": asdict(config)}, out_dir / "best_so_far.pt")
    seconds = time.perf_counter() - started

    metrics = final_metrics(config, model, best, history, seconds, device, data_dir)
    save_run(out_dir, best["state"], config, metrics)
    return metrics


def final_metrics(
    config: TrainConfig, model: MnistCNN, best: dict, history: list, seconds: float, device: torch.device, data_dir
) -> dict:
    """The best weights, evaluated once on the test set, and what the run was: its metrics.json."""
    model.load_state_dict(best["state"])
    test = first(data.load_split("test", data_dir), config.eval_subset)
    report = accuracy_report(test.labels, predict(model, test.images, device))
    print(f"test set, weights of step {best['step']}: {format_report(report)}")
    return {
        "config": asdict(config),
        "parameters": count_parameters(model),
        "best_step": best["step"],
        "validation_accuracy": best["validation_accuracy"],
        "test": report,
        "history": history,
        "training_seconds": round(seconds, 1),
        "images_per_second": round(config.steps * config.batch_size / seconds, 1),
        "hardware": hardware(device),
        "torch_version": str(torch.__version__),
    }


def first(split: data.Split, count: int) -> data.Split:
    """The first `count` images of a split (all of it for 0)."""
    return data.Split(split.images[:count], split.labels[:count]) if count else split


def training_tensors(config: TrainConfig, data_dir: str | None, device: torch.device) -> tuple[torch.Tensor, ...]:
    """The training images in [0, 1] and their labels, on the device (the first `train_subset` if set)."""
    split = data.load_split("train", data_dir)
    images, labels = split.images, split.labels
    if config.train_subset:
        images, labels = images[: config.train_subset], labels[: config.train_subset]
    return to_unit_tensor(images, device), torch.from_numpy(labels.astype(np.int64)).to(device)


def optimiser(model: torch.nn.Module, config: TrainConfig) -> tuple[torch.optim.Optimizer, object | None]:
    """Adam, and the cosine decay to 0 over the run when asked for."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    if config.schedule == "cosine":
        return optimizer, torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.steps)
    return optimizer, None


def extra_tensors(config: TrainConfig, data_dir: str | None, device: torch.device) -> list[tuple]:
    """What a run mixes into its batches besides MNIST, each (images in [0, 1], labels, share of a batch): printed
    digits (training/printed.py) and outliers labelled OUTLIER (training/outliers.py), made once at the start
    from the run's seed."""
    extras = []
    if config.printed:
        fonts = printed.font_files(test=False)
        if not fonts:
            raise SystemExit("--printed needs fonts: make install-fonts (Debian's fonts-* packages)")
        images, labels = printed.printed_bank(fonts, PRINTED_PER_DIGIT, config.seed)
        print(f"printed digits: {len(labels)} from {len(fonts)} fonts (the test families held out)")
        extras.append((images, labels, config.printed))
    if config.outliers:
        source = data.load_split("train", data_dir).images
        images = outliers.outlier_bank(source, OUTLIER_BANK, config.seed)
        print(f"outliers: {len(images)} ({', '.join(outliers.KINDS)}) from the training digits")
        extras.append((images, np.full(len(images), OUTLIER, np.int64), config.outliers))
    return [
        (to_unit_tensor(images, device), torch.from_numpy(labels).to(device), share) for images, labels, share in extras
    ]


def loss_of(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Cross-entropy with the labels; for outliers (OUTLIER), with the uniform distribution, weighted by
    OUTLIER_WEIGHT: no digit should be likely."""
    known = y != OUTLIER
    if bool(known.all()):
        return F.cross_entropy(logits, y)
    loss = F.cross_entropy(logits[known], y[known], reduction="sum")
    loss = loss - OUTLIER_WEIGHT * F.log_softmax(logits[~known], 1).mean(1).sum()
    return loss / len(y)


def batches(
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
    generator: torch.Generator,
    extras: list[tuple] = (),
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Batches for ever: each epoch a new random order, its last partial batch dropped; a share of each batch
    replaced by random images of each extra set if asked; augmented if asked."""
    while True:
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(order) - config.batch_size + 1, config.batch_size):
            index = order[start : start + config.batch_size].to(x.device)
            batch, labels = x[index], y[index]
            at = 0
            for images, extra_labels, share in extras:  # the order is random already: the first rows make way
                count = round(share * config.batch_size)
                pick = torch.randint(len(extra_labels), (count,), generator=generator).to(x.device)
                batch[at : at + count], labels[at : at + count] = images[pick], extra_labels[pick]
                at += count
            yield augment(batch, config.augment, generator, config.shape_only), labels


class Window:
    """Training loss and accuracy since the last evaluation."""

    def __init__(self) -> None:
        self.loss, self.correct, self.seen = 0.0, 0, 0

    def add(self, loss: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> None:
        self.loss += loss.item() * len(y)
        known = y != OUTLIER  # an outlier has no right answer
        self.correct += int((logits.argmax(1)[known] == y[known]).sum())
        self.seen += int(known.sum())

    def take(self) -> dict:
        figures = {"train_accuracy": self.correct / self.seen, "train_loss": self.loss / self.seen}
        self.__init__()
        return figures


def save_run(out_dir: Path, state: dict, config: TrainConfig, metrics: dict) -> None:
    """checkpoint.pt, metrics.json and the two figures."""
    out_dir.mkdir(parents=True, exist_ok=True)
    # Plain tensors and primitives only, so that torch.load(..., weights_only=True) reads it back.
    torch.save(
        {"state_dict": state, "config": asdict(config), "metrics": _without(metrics, "history")},
        out_dir / "checkpoint.pt",
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    plot_curves(metrics["history"], out_dir / "curves.png")
    report = metrics["test"]
    plot_confusion(
        np.array(report["confusion_matrix"]),
        out_dir / "confusion.png",
        f"MNIST test set: {100 * report['accuracy']:.2f}% correct",
    )


def _without(d: dict, key: str) -> dict:
    return {k: v for k, v in d.items() if k != key}


def config_from_command(line: str) -> tuple[dict, Path]:
    """A `python -m training train ...` line (a card's `reproduce`) -> the run's config and its --out."""
    parser = argparse.ArgumentParser(prog="python -m training train")
    add_arguments(parser)
    args = parser.parse_args(shlex.split(line)[4:])
    return asdict(config_from_args(args)), args.out


def add_arguments(parser: argparse.ArgumentParser) -> None:
    defaults = TrainConfig()
    parser.add_argument("--steps", type=int, default=defaults.steps, help="optimiser steps (default %(default)s)")
    parser.add_argument("--epochs", type=float, help="train for this many passes over the data instead of --steps")
    parser.add_argument("--batch-size", type=int, default=defaults.batch_size)
    parser.add_argument("--lr", type=float, default=defaults.lr, help="Adam learning rate (default %(default)s)")
    parser.add_argument("--schedule", choices=["constant", "cosine"], default=defaults.schedule)
    parser.add_argument("--dropout", type=float, default=defaults.dropout)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--augment",
        choices=RECIPES,
        nargs="?",
        const="affine",
        default="none",
        help="affine: random shifts, rotations and scaling (also plain --augment); robust: affine plus elastic "
        "distortion, stroke thickness, blur, a wiped strip, contrast and noise (training/augment.py)",
    )
    parser.add_argument(
        "--shape-only",
        type=float,
        default=defaults.shape_only,
        help="robust: the share of images that keep only the shape changes, clean-looking (default %(default)s)",
    )
    parser.add_argument(
        "--ema", type=float, default=0.0, help="keep a moving average of the weights with this decay, e.g. 0.999"
    )
    parser.add_argument(
        "--printed",
        type=float,
        default=0.0,
        help="this share of each batch is printed digits in the machine's fonts, test fonts held out "
        "(training/printed.py; make install-fonts)",
    )
    parser.add_argument(
        "--outliers",
        type=float,
        default=0.0,
        help="this share of each batch is not one digit (two side by side, parts of one: training/outliers.py), "
        "taught to the uniform distribution",
    )
    parser.add_argument("--eval-every", type=int, default=defaults.eval_every)
    parser.add_argument(
        "--init", default="", help="start from these weights (a checkpoint.pt or an exported .onnx): fine-tuning"
    )
    parser.add_argument("--train-subset", type=int, default=0, help="use only the first N training images")
    parser.add_argument("--eval-subset", type=int, default=0, help="evaluate on the first N validation and test images")
    parser.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR, else data/mnist, downloaded)")
    parser.add_argument("--out", type=Path, default=Path("runs/mnist_cnn"), help="output folder")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar (logs only)")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    steps = args.steps
    if args.epochs:
        train_size = args.train_subset or len(data.load_split("train", args.data_dir).labels)
        steps = max(1, round(args.epochs * train_size / args.batch_size))
    return TrainConfig(
        steps=steps,
        batch_size=args.batch_size,
        lr=args.lr,
        schedule=args.schedule,
        dropout=args.dropout,
        seed=args.seed,
        augment=args.augment,
        shape_only=args.shape_only,
        ema=args.ema,
        printed=args.printed,
        outliers=args.outliers,
        eval_every=args.eval_every,
        init=args.init,
        train_subset=args.train_subset,
        eval_subset=args.eval_subset,
        device=args.device,
    )


def main(args: argparse.Namespace) -> None:
    metrics = train(config_from_args(args), args.out, args.data_dir, progress=not args.no_progress)
    print(
        f"wrote {args.out}/checkpoint.pt, metrics.json, curves.png, confusion.png "
        f"({metrics['training_seconds']} s on {metrics['hardware']})"
    )
