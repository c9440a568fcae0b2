"""Accuracy of an ONNX model on the MNIST test set through ONNX Runtime, overall and per class."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.contract import INPUT, OUTPUT, read_card, read_normalisation, to_model_input
from training import data
from training.metrics import accuracy_report, format_report


def cpu_session(model_path: str | Path) -> ort.InferenceSession:
    """A plain session on the CPU: evaluation needs no cache or provider choice (service/runtime.py has those)."""
    return ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])


def run_logits(session: ort.InferenceSession, inputs: np.ndarray, batch: int = 1000) -> np.ndarray:
    """float32 [N, 1, 28, 28] -> logits [N, 10], in chunks to bound memory."""
    return np.concatenate(
        [session.run([OUTPUT], {INPUT: inputs[i : i + batch]})[0] for i in range(0, len(inputs), batch)]
    )


def predict_test_set(
    model_path: Path, data_dir: str | None = None, scale: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The model's predicted digits for the 10,000 test images, and the true labels. `scale`: the (mean, std) of
    its card unless given (the export evaluates a model before it writes the card)."""
    mean, std = scale or read_normalisation(read_card(Path(model_path)))
    test = data.load_split("test", data_dir)
    return run_logits(cpu_session(model_path), to_model_input(test.images, mean, std)).argmax(1), test.labels


def evaluate(model_path: Path, data_dir: str | None = None, scale: tuple[float, float] | None = None) -> dict:
    predictions, labels = predict_test_set(model_path, data_dir, scale)
    return accuracy_report(labels, predictions)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", type=Path, help="an ONNX file, e.g. models/mnist_cnn.onnx")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR, else data/mnist, downloaded)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")


def main(args: argparse.Namespace) -> None:
    report = evaluate(args.model, args.data_dir)
    print(json.dumps(report, indent=2) if args.json else f"{args.model}: {format_report(report)}")
