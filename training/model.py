"""The classic MNIST CNN of the TensorFlow 'Deep MNIST for Experts' tutorial."""

from __future__ import annotations

import torch
from torch import nn


class MnistCNN(nn.Module):
    """conv5x5x32 -> pool -> conv5x5x64 -> pool -> fc1024 -> dropout -> fc10: 3,274,634 parameters."""

    def __init__(self, dropout: float = 0.5, reference_init: bool = True) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 32, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, kernel_size=5, padding=2),
            nn.ReLU(),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(7 * 7 * 64, 1024),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(1024, 10),
        )
        if reference_init:
            self.apply(_reference_init)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image: float32 [N, 1, 28, 28], normalised -> logits [N, 10]."""
        return self.classifier(self.features(image))


def _reference_init(module: nn.Module) -> None:
    # tf.truncated_normal(stddev=0.1) redraws beyond two standard deviations; tf.constant(0.1) for biases.
    if isinstance(module, (nn.Conv2d, nn.Linear)):
        nn.init.trunc_normal_(module.weight, std=0.1, a=-0.2, b=0.2)
        nn.init.constant_(module.bias, 0.1)


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
