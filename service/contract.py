"""The model contract, in one place: how a model's files are named, what its card holds, how pixels become its
input. Training writes by it and the service reads by it (training imports this module; the service never
imports training), so that neither can drift from the other.

    models/<name>.onnx            the fp32 graph: float32 `image` [N, 1, 28, 28] -> `logits` [N, 10]
    models/<name>_<variant>.onnx  its int8 and fp16 variants (same input and output)
    models/<name>[_<variant>].json  each file's card: sha256, version, accuracy, and the normalisation
"""

from __future__ import annotations

import hashlib
import json
from functools import cache
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np

Variant = Literal["fp32", "int8", "fp16"]
VARIANTS: tuple[Variant, ...] = ("fp32", "int8", "fp16")
INPUT, OUTPUT = "image", "logits"

Array = TypeVar("Array")  # a numpy array or a torch tensor: the formula is the same arithmetic


class ModelLoadError(RuntimeError):
    """The model cannot be served: missing, unreadable, not what its card says, or its provider is absent."""


def variant_path(model: Path, variant: Variant) -> Path:
    """The file of a variant: <name>_<variant>.onnx beside the fp32 <name>.onnx."""
    return model if variant == "fp32" else model.with_name(f"{model.stem}_{variant}{model.suffix}")


def card_path(model: Path) -> Path:
    return model.with_suffix(".json")


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def read_card(model: Path) -> dict:
    """The card of `model`, once the model file's sha256 matches the card's."""
    path = card_path(model)
    if not model.is_file():
        raise ModelLoadError(f"model file {model} not found (set DIGITSERVE_MODEL to an exported .onnx)")
    try:
        card = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model card {path} missing or unreadable: {exc}") from None
    digest = file_sha256(model)
    if digest != card.get("sha256"):
        raise ModelLoadError(
            f"{model} has sha256 {digest}, its card {path} says {card.get('sha256')}: "
            "the file was changed or does not belong to this card"
        )
    return card


def read_normalisation(card: dict) -> tuple[float, float]:
    """The mean and std the model was trained with (the card's "preprocessing")."""
    return float(card["preprocessing"]["mean"]), float(card["preprocessing"]["std"])


def read_temperature(card: dict) -> float:
    """The card's calibration temperature (training/calibration.py); 1, plain softmax, for a card without one."""
    return float(card.get("calibration", {}).get("temperature", 1.0))


def standardise(unit: Array, mean: float, std: float) -> Array:
    """Intensities in [0, 1] -> the model's scale. Training applies it to augmented tensors, the service (through
    `to_model_input`) to pixels: one formula."""
    return (unit - mean) / std


def pixel_values(pixels: np.ndarray, mean: float, std: float) -> np.ndarray:
    """Pixel values 0-255 (any shape) -> the model's float32 values: the formula above."""
    return standardise(np.asarray(pixels, dtype=np.float32) / 255.0, mean, std)


@cache
def input_table(mean: float, std: float) -> np.ndarray:
    """`pixel_values` of each byte 0-255, computed once."""
    return pixel_values(np.arange(256), mean, std)


def to_model_input(pixels: np.ndarray, mean: float, std: float) -> np.ndarray:
    """uint8 [N, 28, 28] (white ink on black) -> float32 [N, 1, 28, 28], the model's input. Bytes are looked up in
    `input_table` (the same values), a third of the time of computing them per pixel (docs/benchmarks.md,
    "Measured by hand")."""
    pixels = np.asarray(pixels)
    if pixels.dtype != np.uint8:  # not bytes: no table covers it
        return pixel_values(pixels, mean, std)[:, None, :, :]
    return np.take(input_table(mean, std), pixels)[:, None, :, :]
