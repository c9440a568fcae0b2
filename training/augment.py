"""Random distortions of digit batches, on the fly: `--augment affine` (shifts, rotations, scaling) and
`--augment robust`, which adds what real digits do that MNIST's clean test set does not: elastic wobble (Simard et
al. 2003), thicker and thinner strokes, blur, noise, low contrast and faint ink, a thin strip wiped out.

Every function takes and returns [N, 1, H, W] in [0, 1] (white ink on black, before normalising: pixels pulled in
from outside the frame are 0, the background) and draws its randomness from the generator it is given, so that a
seed reproduces a run. Each distortion of the robust recipe hits a random part of each batch, so that the network
still sees many clean digits (its accuracy on them is the first target).

The ranges are what a photographed or scanned digit does: ink from white to faint on paper from black to grey, lit
unevenly, in shadow and glare; sensor noise (Gaussian, salt and pepper); focus blur; handwriting's slant; pen strokes
across the digit (ruled lines, underlines, crossings-out, straight or wavy, solid or dashed); outlined (hollow)
strokes; a patch of reversed polarity. They were widened twice after looks at the corruption benchmark
(training/corruptions.py) showed faint, grey-background, crossed and outlined digits failing, and stay generic: none
of the benchmark's code or shapes is used here (no Canny, zigzag, plasma fog or fixed stripes), so the benchmark
still measures distortions the model was not shown as such.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

RECIPES = ("none", "affine", "robust")
SHAPE_ONLY = 0.3  # the robust recipe's default share of images that keep only the shape changes


def random_affine(
    images: torch.Tensor,
    generator: torch.Generator,
    max_rotation: float = 10.0,
    max_scale: float = 0.1,
    max_shift: float = 2.0,
    max_shear: float = 0.0,
    elastic: float = 0.0,
    elastic_share: float = 1.0,
) -> torch.Tensor:
    """Rotate (degrees), scale (fraction), slant (horizontal shear, as a fraction of the height) and shift (pixels)
    each image at random; with `elastic` (pixels), add a smooth random displacement field of about that size (Simard
    et al. 2003), in the same resampling, to a random `elastic_share` of the images."""
    n, _, h, w = images.shape
    angle = uniform(n, math.radians(max_rotation), generator)
    scale = 1 + uniform(n, max_scale, generator)
    slant = uniform(n, max_shear, generator)
    # affine_grid works in [-1, 1] coordinates: one pixel is 2 / size.
    tx, ty = uniform(n, max_shift, generator) * 2 / w, uniform(n, max_shift, generator) * 2 / h
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # Output -> input coordinates: rotation and scale, then the slant's x += slant * y.
    theta = torch.stack(
        [torch.stack([cos, -sin + slant * cos, tx], 1), torch.stack([sin, cos + slant * sin, ty], 1)], 1
    )
    grid = F.affine_grid(theta.to(images.device), list(images.shape), align_corners=False)
    if elastic:
        field = elastic_field(n, h, w, elastic, generator) * chance(n, elastic_share, generator)
        grid = grid + field.to(images.device)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def elastic_field(n: int, h: int, w: int, size: float, generator: torch.Generator, cell: int = 7) -> torch.Tensor:
    """[N, H, W, 2] displacements in grid units: a smooth random field (uniform noise on a grid of `cell`-pixel
    cells, interpolated bicubically: Simard's Gaussian-smoothed noise at a fifth of the cost), scaled so that its
    typical displacement is `size` pixels."""
    noise = torch.rand(n, 2, math.ceil(h / cell), math.ceil(w / cell), generator=generator) * 2 - 1
    smooth = F.interpolate(noise, size=(h, w), mode="bicubic", align_corners=False)
    smooth = smooth / smooth.flatten(1).std(1).clamp_min(1e-6)[:, None, None, None] * size
    scale = torch.tensor([2 / w, 2 / h])[None, :, None, None]
    return (smooth * scale).permute(0, 2, 3, 1)


def gaussian_blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """Each channel blurred by a Gaussian of `sigma` pixels (separable; zero outside the frame)."""
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(x**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    rows = kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1)
    out = F.conv2d(images, rows, padding=(0, radius), groups=c)
    return F.conv2d(out, rows.transpose(2, 3), padding=(radius, 0), groups=c)


def robust(images: torch.Tensor, generator: torch.Generator, shape_only: float = SHAPE_ONLY) -> torch.Tensor:
    """The robust recipe: affine (with slant) on every image, elastic on half of them, then stroke thickness and
    style, blur, a wiped strip, pen strokes across, contrast and light, reversed polarity and noise, each on a
    random part of the batch with a random strength; a share `shape_only` of the images keeps only the shape
    changes."""
    n, device = len(images), images.device
    images = random_affine(
        images, generator, max_rotation=15, max_scale=0.15, max_shift=2.5, max_shear=0.3, elastic=1.2, elastic_share=0.5
    )
    # Stroke thickness: towards a 3x3 dilation (thicker) or erosion (thinner), by a random amount.
    thicker = F.max_pool2d(images, 3, stride=1, padding=1)
    thinner = -F.max_pool2d(-images, 3, stride=1, padding=1)
    amount = strength(n, 0.35, generator)
    images = torch.where(
        chance(n, 0.5, generator).to(device), mix(images, thicker, amount), mix(images, thinner, amount)
    )
    shaped = images
    images = torch.where(chance(n, 0.08, generator).to(device), outline(images), images)
    images = mix(images, gaussian_blur(images, 1.0), strength(n, 0.3, generator))
    images = wipe_strip(images, chance(n, 0.15, generator), generator)
    images = pen_strokes(images, chance(n, 0.2, generator), generator)
    # Contrast: ink from full white down to a fifth, on a background from black up to 0.15 below the ink (grey
    # paper, a faint pen).
    ink = (1 - strength(n, 0.35, generator) * 0.8).to(device)
    background = (strength(n, 0.3, generator)).to(device) * (ink - 0.15)
    images = background + (ink - background) * images
    # Uneven light: a veil with detail at several scales (shadows, creases, glare) that brightens parts of the
    # image, the paper more than the ink.
    veil = uneven_light(n, images.shape[-2:], generator) * strength(n, 0.25, generator) * 0.8
    images = images + (1 - images) * veil.to(device)
    images = reverse_patch(images, chance(n, 0.06, generator), generator)
    # Sensor noise: Gaussian, or salt and pepper.
    noise = torch.randn(images.shape, generator=generator) * strength(n, 0.3, generator) * 0.2
    images = images + noise.to(device)
    salt = torch.rand(images.shape, generator=generator) < strength(n, 0.15, generator) * 0.1
    pepper = torch.rand(images.shape, generator=generator) < 0.5
    images = torch.where(salt.to(device), pepper.to(device).float(), images)
    # A share of the batch keeps only its shape changes: clean-looking digits are the first target.
    return torch.where(chance(n, 1 - shape_only, generator).to(device), images.clamp(0, 1), shaped)


def uneven_light(n: int, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
    """[N, 1, H, W] in [0, 1]: a smooth random brightness field with detail at several scales (grids of 3, 5 and 9
    cells, bicubic, each finer one at a random weight below the coarser one's), scaled to span [0, 1]."""
    field = torch.zeros(n, 1, *size)
    weight = torch.ones(n, 1, 1, 1)
    for cells in (3, 5, 9):
        noise = torch.rand(n, 1, cells, cells, generator=generator)
        field += weight * F.interpolate(noise, size=size, mode="bicubic", align_corners=True)
        weight = weight * torch.rand(n, 1, 1, 1, generator=generator)
    low, high = field.amin((2, 3), keepdim=True), field.amax((2, 3), keepdim=True)
    return (field - low) / (high - low).clamp_min(1e-6)


def outline(images: torch.Tensor) -> torch.Tensor:
    """Hollow strokes: the ring a 3x3 dilation adds around the ink, at full brightness (an outlined or bubble
    digit, a double-line pen)."""
    ring = (F.max_pool2d(images, 3, stride=1, padding=1) - images).clamp(0, 1)
    return ring / ring.amax((2, 3), keepdim=True).clamp_min(1e-6)


def pen_strokes(images: torch.Tensor, which: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """On the images `which` marks, a pen stroke across the image at a random angle and place: 1-2.5 pixels wide,
    straight or wavy (a sine of up to 2.5 pixels, 3-12 pixels long), solid or dashed, of ink 0.6-1 (a ruled line,
    an underline, a crossing-out)."""
    n, _, h, w = images.shape
    angle = torch.rand(n, generator=generator) * math.pi
    offset = (torch.rand(n, generator=generator) * 2 - 1) * h / 2.5
    width = 1 + 1.5 * torch.rand(n, generator=generator)
    wave = 2.5 * torch.rand(n, generator=generator) * (torch.rand(n, generator=generator) < 0.5)
    wavelength = 3 + 9 * torch.rand(n, generator=generator)
    phase = 2 * math.pi * torch.rand(n, generator=generator)
    dashed = torch.rand(n, generator=generator) < 0.3
    dash = 2 + 4 * torch.rand(n, generator=generator)
    ink = 0.6 + 0.4 * torch.rand(n, generator=generator)
    along, across = line_coordinates(h, w, angle, offset)
    across = across - wave[:, None, None] * torch.sin(
        2 * math.pi * along / wavelength[:, None, None] + phase[:, None, None]
    )
    line = 1 - (across.abs() - width[:, None, None] / 2).clamp(0, 1)  # anti-aliased edge, 1 pixel
    gaps = (torch.remainder(along, 2 * dash[:, None, None]) > dash[:, None, None]) & dashed[:, None, None]
    line = (line * ~gaps * ink[:, None, None])[:, None] * which
    return torch.maximum(images, line.to(images.device))


def reverse_patch(images: torch.Tensor, which: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """On the images `which` marks, the polarity reversed inside a random rectangle (a quarter to two thirds of
    each side): glare, a highlighter, dark tape under light ink."""
    n, _, h, w = images.shape
    sizes = torch.rand(n, 2, generator=generator) * (2 / 3 - 1 / 4) + 1 / 4
    corners = torch.rand(n, 2, generator=generator) * (1 - sizes)
    ys, xs = torch.arange(h)[None, :, None] / h, torch.arange(w)[None, None, :] / w
    inside = (
        (ys >= corners[:, 0, None, None])
        & (ys < (corners[:, 0] + sizes[:, 0])[:, None, None])
        & (xs >= corners[:, 1, None, None])
        & (xs < (corners[:, 1] + sizes[:, 1])[:, None, None])
    )[:, None] & which
    return torch.where(inside.to(images.device), 1 - images, images)


def wipe_strip(images: torch.Tensor, which: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A straight strip 1-2 pixels wide at a random angle set to the background, on the images `which` marks."""
    n, _, h, w = images.shape
    angle = torch.rand(n, generator=generator) * math.pi
    offset = (torch.rand(n, generator=generator) * 2 - 1) * h / 4
    width = 1 + torch.rand(n, generator=generator)
    _, across = line_coordinates(h, w, angle, offset)
    strip = (across.abs() < width[:, None, None] / 2)[:, None] & which
    return images.masked_fill(strip.to(images.device), 0.0)


def line_coordinates(h: int, w: int, angle: torch.Tensor, offset: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[N, H, W] each: every pixel's position along, and signed distance across, each image's line through the
    point `offset` pixels from the image's centre at `angle` (radians), in pixels."""
    ys, xs = torch.meshgrid(torch.arange(h) - h / 2 + 0.5, torch.arange(w) - w / 2 + 0.5, indexing="ij")
    sin, cos = torch.sin(angle)[:, None, None], torch.cos(angle)[:, None, None]
    return xs * cos + ys * sin, xs * sin - ys * cos - offset[:, None, None]


def augment(
    images: torch.Tensor, recipe: str, generator: torch.Generator, shape_only: float = SHAPE_ONLY
) -> torch.Tensor:
    """`shape_only`: for the robust recipe, the share of images that keep only its shape changes."""
    if recipe == "robust":
        return robust(images, generator, shape_only)
    if recipe == "affine":
        return random_affine(images, generator)
    return images


def uniform(n: int, limit: float, generator: torch.Generator) -> torch.Tensor:
    return (torch.rand(n, generator=generator) * 2 - 1) * limit


def chance(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """[N, 1, 1, 1] booleans, each true with probability p."""
    return (torch.rand(n, generator=generator) < p)[:, None, None, None]


def strength(n: int, p: float, generator: torch.Generator) -> torch.Tensor:
    """[N, 1, 1, 1]: 0 for most images, uniform in [0, 1] for a fraction p of them."""
    return chance(n, p, generator) * torch.rand(n, generator=generator)[:, None, None, None]


def mix(images: torch.Tensor, other: torch.Tensor, amount: torch.Tensor) -> torch.Tensor:
    return images + amount.to(images.device) * (other - images)
