"""Real MNIST test digits rendered the ways clients send them: PNG files, photos of paper, canvas strokes."""

from __future__ import annotations

import io
import json
import multiprocessing
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import TypeVar

import numpy as np
import pillow_heif
from PIL import Image

Made = TypeVar("Made")
pillow_heif.register_heif_opener()  # encode() writes HEIC/HEIF too, as phones do


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def as_png(pixels: np.ndarray) -> bytes:
    """The 28x28 MNIST digit itself, as a grayscale PNG."""
    return encode(Image.fromarray(pixels, mode="L"))


def on_paper(pixels: np.ndarray, rng: np.random.Generator | int, size: int = 280) -> bytes:
    """Dark ink on light, slightly noisy paper, the digit 4-6x larger and off-centre, as JPEG (`rng`: a generator,
    or a seed for one)."""
    rng = np.random.default_rng(rng) if isinstance(rng, int) else rng
    scale = int(rng.integers(4, 7))
    digit = np.asarray(Image.fromarray(pixels).resize((28 * scale, 28 * scale), Image.Resampling.BICUBIC), float)
    paper = rng.normal(225, 6, (size, size))
    top, left = (int(v) for v in rng.integers(0, size - 28 * scale, 2))
    ink = np.zeros((size, size))
    ink[top : top + 28 * scale, left : left + 28 * scale] = digit / 255
    page = paper * (1 - ink) + 30 * ink
    return encode(Image.fromarray(np.clip(page, 0, 255).astype(np.uint8)).convert("RGB"), "JPEG", quality=90)


def on_canvas(pixels: np.ndarray, size: int = 280) -> bytes:
    """Black strokes on a transparent RGBA canvas, as a browser's canvas.toBlob() gives them."""
    alpha = Image.fromarray(pixels).resize((size, size), Image.Resampling.BICUBIC)
    canvas = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    canvas.putalpha(alpha)
    return encode(canvas, compress_level=1)  # the pixels are what matter: fast to make


SAMPLES = Path(__file__).resolve().parent.parent / "loadtests" / "samples"


def sample_digits() -> tuple[np.ndarray, np.ndarray]:
    """256 real MNIST test digits (uint8 [256, 28, 28]) and their labels, from the committed load-test samples
    (loadtests/make_samples.py): for the tests that need real digits but not the MNIST files."""
    images = np.frombuffer((SAMPLES / "pixels.bin").read_bytes(), np.uint8).reshape(-1, 28, 28)
    labels = np.array(json.loads((SAMPLES / "labels.json").read_text())["pixels.bin"])
    return images, labels


def rendered(render: Callable[..., Made], *columns: Iterable, workers: int = 2, chunksize: int = 16) -> Iterator[Made]:
    """`render(*row)` for each row of `columns`, in `workers` spawned processes (spawned: the caller may hold
    threads, a server client or ONNX Runtime), in order, each as soon as it is made: whoever sends them works
    meanwhile (`render` must be a module-level function, to be sent to them). `workers` <= 1: here, in turn."""
    if workers <= 1:
        yield from map(render, *columns)
        return
    with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        yield from pool.map(render, *columns, chunksize=chunksize)
