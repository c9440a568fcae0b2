"""Accuracy of an ONNX model on the MNIST test set through ONNX Runtime, overall and per class; with --corruptions,
under the 15 corruptions of MNIST-C too (training/corruptions.py), written into the model's card."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from tqdm import tqdm

from harness.report import write_section
from service.contract import card_path, read_card, read_normalisation, read_temperature, to_model_input
from training import data
from training.calibration import errors_before_and_after
from training.corruptions import CORRUPTIONS, corrupt
from training.inference import cpu_session, run_logits, split_logits
from training.metrics import accuracy_report, format_report
from training.plots import plot_corruptions, plot_reliability


def corrupted_sets(
    data_dir: str | None = None, seed: int = 0, images: int = 0
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The test set (its first `images`; 0: all 10,000) under each corruption (uint8 [N, 28, 28] each, the same for
    the same seed), and its labels."""
    test = data.load_split("test", data_dir)
    if images:
        test = data.Split(test.images[:images], test.labels[:images])
    names = tqdm(CORRUPTIONS, desc="corrupting", unit="corruption", leave=False)
    return {name: corrupt(test.images, name, seed) for name in names}, test.labels


def corruption_report(model_path: Path, sets: dict[str, np.ndarray], labels: np.ndarray) -> tuple[dict, np.ndarray]:
    """Accuracy per corruption, their mean and worst, and the expected calibration error over all of them before
    and after the card's temperature (training/calibration.py); and the logits of all of them, in order."""
    card = read_card(Path(model_path))
    mean, std = read_normalisation(card)
    temperature = read_temperature(card)
    session = cpu_session(model_path)
    logits = {name: run_logits(session, to_model_input(images, mean, std)) for name, images in sets.items()}
    accuracy = {name: round(float((z.argmax(1) == labels).mean()), 4) for name, z in logits.items()}
    every = np.concatenate(list(logits.values()))
    before, after = errors_before_and_after(every, np.tile(labels, len(logits)), temperature)
    return {
        "temperature": temperature,
        "benchmark": "MNIST-C's 15 corruptions of the MNIST test set, written here (training/corruptions.py), seed 0",
        "images": len(labels),
        "accuracy": accuracy,
        "mean_accuracy": round(float(np.mean(list(accuracy.values()))), 4),
        "worst": min(accuracy, key=accuracy.get),
        "worst_accuracy": min(accuracy.values()),
        "ece_before": before,
        "ece_after": after,
    }, every


def format_corruptions(report: dict, baseline: dict | None = None, names: tuple[str, str] = ("accuracy", "")) -> str:
    """The markdown table: accuracy per corruption and the mean, `baseline`'s beside; `names` head the columns."""
    head = f"| corruption | {names[0]} |" + (f" {names[1]} |" if baseline else "")
    lines = [head, "|---|---:|" + ("---:|" if baseline else "")]
    for name, value in [*report["accuracy"].items(), ("**mean**", report["mean_accuracy"])]:
        other = baseline["accuracy"].get(name, baseline["mean_accuracy"]) if baseline else None
        lines.append(f"| {name} | {100 * value:.2f}% |" + (f" {100 * other:.2f}% |" if baseline else ""))
    lines.append(
        f"\nworst: {report['worst']} {100 * report['worst_accuracy']:.2f}%; expected calibration error over all of "
        f"them {100 * report['ece_before']:.2f}% before temperature scaling, {100 * report['ece_after']:.2f}% after"
    )
    return "\n".join(lines)


RECORD = ("<!-- corruptions:start -->", "<!-- corruptions:end -->")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="an ONNX file, e.g. models/mnist_cnn.onnx")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR, else data/mnist, downloaded)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    parser.add_argument(
        "--corruptions", action="store_true", help="also the 15 MNIST-C corruptions: printed and written into the card"
    )
    parser.add_argument("--images", type=int, default=0, help="with --corruptions: the first N test images only")
    parser.add_argument("--baseline", type=Path, help="with --corruptions: another ONNX model to compare and plot")
    parser.add_argument(
        "--plots", type=Path, help="with --corruptions: write corruptions.png and reliability.png into this folder"
    )
    parser.add_argument(
        "--record", type=Path, help="with --corruptions: write the table into this document (README.md)"
    )


def main(args: argparse.Namespace) -> None:
    # The test set's logits once: the accuracy, and the reliability plot's first panel.
    test_logits, test_labels = split_logits(args.model, "test", args.data_dir)
    report = accuracy_report(test_labels, test_logits.argmax(1))
    print(json.dumps(report, indent=2) if args.json else f"{args.model}: {format_report(report)}")
    if not args.corruptions:
        return
    sets, labels = corrupted_sets(args.data_dir, images=args.images)
    found, logits = corruption_report(args.model, sets, labels)
    baseline = corruption_report(args.baseline, sets, labels)[0] if args.baseline else None
    columns = (args.model.stem, args.baseline.stem if args.baseline else "")
    print(json.dumps(found, indent=2) if args.json else format_corruptions(found, baseline, columns))
    card = read_card(args.model)
    card["corruptions"] = found
    card_path(args.model).write_text(json.dumps(card, indent=2) + "\n")
    print(f"wrote the corruption figures into {card_path(args.model)}")
    if args.record:
        against = f", beside {args.baseline.name} (the model it replaced)" if args.baseline else ""
        table = format_corruptions(found, baseline, columns)
        section = (
            f"{RECORD[0]}\n{args.model.name} v{card['version']}{against}, on {len(labels):,} test images under each "
            f"corruption:\n\n{table}\n\nCommand: `make corruptions`.\n{RECORD[1]}"
        )
        write_section(args.record, section, *RECORD, "### Corruptions", "# digitserve")
    if args.plots:
        args.plots.mkdir(parents=True, exist_ok=True)
        legend = (args.model.name, args.baseline.name if args.baseline else None)
        plot_corruptions(found, baseline, *legend, args.plots / "corruptions.png")
        panels = {
            "MNIST test set": (test_logits, test_labels),
            "the 15 corruptions": (logits, np.tile(labels, len(sets))),
        }
        plot_reliability(panels, found["temperature"], args.plots / "reliability.png")
        print(f"wrote {args.plots / 'corruptions.png'} and {args.plots / 'reliability.png'}")
