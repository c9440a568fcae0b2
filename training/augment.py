"""Random affine distortions of digit batches: the 'better recipe' of --augment."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    max_rotation: float = 10.0,
    max_scale: float = 0.1,
    max_shift: float = 2.0,
) -> torch.Tensor:
    """Rotate (degrees), scale (fraction) and shift (pixels) each image of [N, 1, H, W] in [0, 1] at random.

    Pixels pulled in from outside the frame are 0, the MNIST background, so augment before normalising.
    """
    n, _, h, w = images.shape

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n, generator=generator) * 2 - 1) * limit

    angle = uniform(math.radians(max_rotation))
    scale = 1 + uniform(max_scale)
    # affine_grid works in [-1, 1] coordinates: one pixel is 2 / size.
    tx, ty = uniform(max_shift) * 2 / w, uniform(max_shift) * 2 / h
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, tx], 1), torch.stack([sin, cos, ty], 1)], 1)
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
