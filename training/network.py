"""A trained network in torch: its weights loaded (a training checkpoint, or an exported ONNX model's), its
predictions on MNIST-format images, and the device it runs on. Training, export and the soup use it; serving never
does (ONNX Runtime: training/inference.py for the exported model)."""

from __future__ import annotations

import os
import platform
from pathlib import Path

import numpy as np
import onnx
import torch
from onnx import numpy_helper

from service.contract import standardise
from training import data
from training.model import MnistCNN


def to_unit_tensor(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """uint8 [N, 28, 28] -> float [N, 1, 28, 28] in [0, 1]."""
    return torch.tensor(images, device=device).float().div_(255).unsqueeze(1)  # copies: IDX arrays are read-only


@torch.inference_mode()
def logits_of(model: torch.nn.Module, images: np.ndarray, device: torch.device, batch: int = 1000) -> torch.Tensor:
    model.eval()
    return torch.cat(
        [
            model(standardise(to_unit_tensor(images[i : i + batch], device), data.MEAN, data.STD))
            for i in range(0, len(images), batch)
        ]
    )


def predict(model: torch.nn.Module, images: np.ndarray, device: torch.device, batch: int = 1000) -> np.ndarray:
    return logits_of(model, images, device, batch).argmax(1).cpu().numpy()


def load_checkpoint(path: str | Path) -> tuple[MnistCNN, dict]:
    """The trained model (eval mode) and the checkpoint's config and metrics."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    config = checkpoint["config"]
    if isinstance(config.get("augment"), bool):  # checkpoints from before the recipes: --augment was a flag for affine
        config["augment"] = "affine" if config["augment"] else "none"
    model = MnistCNN(dropout=checkpoint["config"]["dropout"], reference_init=False)
    model.load_state_dict(checkpoint["state_dict"])
    return model.eval(), checkpoint


def initial_weights(path: str | Path) -> dict[str, torch.Tensor]:
    """The network's weights from a training checkpoint or from an exported ONNX model (its initializers carry the
    state_dict's names: the exporter keeps them)."""
    if str(path).endswith(".onnx"):
        names = MnistCNN(reference_init=False).state_dict().keys()
        found = {i.name: i for i in onnx.load(str(path)).graph.initializer}
        missing = [name for name in names if name not in found]
        if missing:
            raise ValueError(f"{path}: no weights named {', '.join(missing)} (not this network's export?)")
        return {name: torch.from_numpy(numpy_helper.to_array(found[name]).copy()) for name in names}
    return load_checkpoint(path)[1]["state_dict"]


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def hardware(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} CPU threads ({os.cpu_count()} cores)"
    )
