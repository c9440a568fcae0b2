"""The trained model through ONNX Runtime on the CPU, for evaluation, calibration and the variants: a session,
logits in chunks, a split's logits and predictions, and the test-set accuracy report. The bottom of training/'s
imports: it imports nothing else of training/ but the data."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnxruntime as ort

from service.contract import INPUT, OUTPUT, read_card, read_normalisation, to_model_input
from training import data
from training.metrics import accuracy_report


def cpu_session(model_path: str | Path) -> ort.InferenceSession:
    """A plain session on the CPU: evaluation needs no cache or provider choice (service/runtime.py has those)."""
    return ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])


def run_logits(session: ort.InferenceSession, inputs: np.ndarray, batch: int = 1000) -> np.ndarray:
    """float32 [N, 1, 28, 28] -> logits [N, 10], in chunks to bound memory."""
    return np.concatenate(
        [session.run([OUTPUT], {INPUT: inputs[i : i + batch]})[0] for i in range(0, len(inputs), batch)]
    )


def split_logits(
    model_path: Path, split: str, data_dir: str | None = None, scale: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The model's logits for a whole MNIST split through ONNX Runtime, and the labels. `scale`: the (mean, std) of
    its card unless given (the export evaluates a model before it writes the card)."""
    mean, std = scale or read_normalisation(read_card(Path(model_path)))
    images = data.load_split(split, data_dir)
    return run_logits(cpu_session(model_path), to_model_input(images.images, mean, std)), images.labels


def predict_test_set(
    model_path: Path, data_dir: str | None = None, scale: tuple[float, float] | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """The model's predicted digits for the 10,000 test images, and the true labels."""
    logits, labels = split_logits(model_path, "test", data_dir, scale)
    return logits.argmax(1), labels


def evaluate(model_path: Path, data_dir: str | None = None, scale: tuple[float, float] | None = None) -> dict:
    predictions, labels = predict_test_set(model_path, data_dir, scale)
    return accuracy_report(labels, predictions)
