"""The ONNX Runtime session: model checks against its card, execution provider choice, inference."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import numpy as np
import onnxruntime as ort

logger = logging.getLogger("bentoml.digitserve")  # under "bentoml": BentoML's log handlers show it

CUDA, CPU = "CUDAExecutionProvider", "CPUExecutionProvider"


class ModelLoadError(RuntimeError):
    """The model cannot be served: missing, unreadable, not what its card says, or its provider is absent."""


def load_card(model_path: Path) -> dict:
    card_path = model_path.with_suffix(".json")
    if not model_path.is_file():
        raise ModelLoadError(f"model file {model_path} not found (set DIGITSERVE_MODEL to an exported .onnx)")
    try:
        card = json.loads(card_path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"model card {card_path} missing or unreadable: {exc}") from None
    digest = hashlib.sha256(model_path.read_bytes()).hexdigest()
    if digest != card.get("sha256"):
        raise ModelLoadError(
            f"{model_path} has sha256 {digest}, its card {card_path} says {card.get('sha256')}: "
            "the file was changed or does not belong to this card"
        )
    return card


def choose_providers(requested: str, available: list[str]) -> list[str]:
    if requested == "cpu":
        return [CPU]
    if requested == "cuda" and CUDA not in available:
        raise ModelLoadError(f"DIGITSERVE_PROVIDER=cuda but this onnxruntime offers only {available}")
    return [CUDA, CPU] if CUDA in available else [CPU]


class ModelRuntime:
    def __init__(self, model_path: Path, provider: str = "auto", threads: int = 1) -> None:
        self.card = load_card(model_path)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        available = ort.get_available_providers()
        providers = choose_providers(provider, available)
        if CUDA in providers and hasattr(ort, "preload_dlls"):
            # CUDA and cuDNN from the nvidia-* pip wheels (onnxruntime-gpu[cuda,cudnn]) are not on the
            # library path: load them first, or the CUDA provider fails to start and ORT falls back to CPU.
            ort.preload_dlls()
        try:
            self.session = ort.InferenceSession(str(model_path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own types for unreadable graphs
            raise ModelLoadError(f"ONNX Runtime cannot load {model_path}: {exc}") from None
        # onnxruntime-gpu falls back to CPU silently when CUDA cannot start: trust the session, not the list.
        self.provider = self.session.get_providers()[0]
        if provider == "cuda" and self.provider != CUDA:
            raise ModelLoadError("DIGITSERVE_PROVIDER=cuda but the CUDA execution provider did not start (no GPU?)")
        if provider == "auto" and CUDA in available and self.provider != CUDA:
            logger.warning("CUDA execution provider unavailable at run time (no GPU?): falling back to CPU")
        logger.info("serving %s v%s from %s on %s", self.card["name"], self.card["version"], model_path, self.provider)
        preprocessing = self.card["preprocessing"]
        self.mean, self.std = float(preprocessing["mean"]), float(preprocessing["std"])

    def probabilities(self, inputs: np.ndarray) -> np.ndarray:
        """Normalised float32 [N, 1, 28, 28] -> softmax probabilities [N, 10]."""
        logits = self.session.run(["logits"], {"image": inputs})[0]
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)

    def info(self) -> dict:
        card = self.card
        return {
            "name": card["name"],
            "version": card["version"],
            "sha256": card["sha256"],
            "test_accuracy": card["test_accuracy"],
            "parameters": card["parameters"],
            "provider": self.provider,
            "input": card["input"],
            "preprocessing": card["preprocessing"],
        }
