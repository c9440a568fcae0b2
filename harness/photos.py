"""Phone photos of handwritten digits, generated from MNIST test digits: deterministic for a seed, fast to make.

Each photo is a sheet of paper (white, grey or cream, with a faint texture) photographed under uneven light
(vignetting and a gradient across the sheet), with a white-balance shift, sensor noise and JPEG compression; the
digit is an MNIST test digit drawn on it in ink, a few degrees off straight, slightly out of focus. The conditions
add what makes photos hard:

    plain      the above, 640x480 to 1600x1200
    shadowed   a soft-edged shadow across part of the sheet, often across the digit
    ruled      notebook paper: light-blue lines every few millimetres, crossing the digit, and a red margin line
    blue_ink   blue ballpoint ink instead of black
    12mp       a 4032x3024 (12-megapixel) phone JPEG, with everything above at random

`photo(pixels, condition, seed)` returns the JPEG bytes, `photo_and_box` also where the digit is, `photo_set`
makes many in parallel, `accuracy_sets` the photo suite and the clean sets that accuracy is measured on. Only ever
feed it MNIST *test* digits: the model never saw them. `classify_latency` and `photo_load` measure the service
with them (the tests and `make bench-photos`).
"""

from __future__ import annotations

import http.client
import io
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

import httpx
import numpy as np
from PIL import Image, ImageChops, ImageFilter

from harness.digits import as_png, on_canvas, on_paper, rendered

CONDITIONS = ("plain", "shadowed", "ruled", "blue_ink", "12mp")
SIZES = ((640, 480), (1024, 768), (1280, 960), (1600, 1200))
RENDER_MAX = 1024  # larger photos are composed at this size and enlarged (generating them stays fast)

PAPERS = {"white": (0.92, 0.92, 0.91), "grey": (0.78, 0.78, 0.78), "cream": (0.94, 0.89, 0.76)}
BLACK_INK, BLUE_INK = (0.09, 0.09, 0.11), (0.13, 0.18, 0.52)
RULE, MARGIN = (0.62, 0.76, 0.90), (0.90, 0.50, 0.55)


def _light(shape: tuple[int, int], rng: np.random.Generator, shadow: bool) -> np.ndarray:
    """Illumination [H, W]: vignetting, a linear gradient across the sheet, and maybe a soft-edged shadow.
    Smooth, so computed at 1/8 size and enlarged."""
    height, width = shape
    small = (max(2, height // 8), max(2, width // 8))
    y, x = np.mgrid[0 : small[0], 0 : small[1]].astype(np.float32)
    y, x = y / (small[0] - 1), x / (small[1] - 1)
    cy, cx = rng.uniform(0.3, 0.7, 2)
    r2 = ((y - cy) ** 2 * height**2 + (x - cx) ** 2 * width**2) / (height**2 + width**2)
    light = 1 - rng.uniform(0.2, 0.6) * r2
    angle = rng.uniform(0, 2 * np.pi)
    light *= 1 + rng.uniform(0.1, 0.4) * (np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5))
    if shadow:  # the edge of a hand's or a phone's shadow: a half-plane, blurred over 2-8 % of the image
        angle, offset = rng.uniform(0, 2 * np.pi), rng.uniform(-0.25, 0.25)
        distance = np.cos(angle) * (x - 0.5) + np.sin(angle) * (y - 0.5) - offset
        depth, softness = rng.uniform(0.35, 0.6), rng.uniform(0.02, 0.08)
        light *= 1 - depth / (1 + np.exp(-distance / softness))
    image = Image.fromarray(light.astype(np.float32), mode="F").resize((width, height), Image.Resampling.BILINEAR)
    return np.asarray(image)


def _digit_alpha(pixels: np.ndarray, height: int, rng: np.random.Generator) -> Image.Image:
    """The MNIST digit (or a row of them, harness/numbers.py) as ink coverage (mode L), `height` px for a digit's
    20-px box, rotated a little, slightly soft."""
    side = round(height * 28 / 20)
    size = (round(pixels.shape[1] * side / 28), round(pixels.shape[0] * side / 28))
    alpha = Image.fromarray(pixels).resize(size, Image.Resampling.BICUBIC)
    alpha = alpha.rotate(rng.uniform(-8, 8), resample=Image.Resampling.BICUBIC, expand=True)
    return alpha.filter(ImageFilter.GaussianBlur(rng.uniform(0.3, 1.2) * side / 280))


def _render(
    pixels: np.ndarray, condition: str, size: tuple[int, int], rng: np.random.Generator
) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The photo as float32 [H, W, 3] in 0-1, at `size` (width, height), and the digit's box in it."""
    width, height = size
    paper = np.array(PAPERS[rng.choice(list(PAPERS))], np.float32)
    texture = rng.normal(0, 0.012, (height // 4 + 1, width // 4 + 1)).astype(np.float32)
    texture = np.asarray(Image.fromarray(texture, mode="F").resize((width, height), Image.Resampling.BILINEAR))
    reflect = np.empty((height, width, 3), np.float32)
    reflect[:] = paper
    reflect *= (1 + texture)[..., None]

    digit_height = round(min(size) * rng.uniform(0.22, 0.55))
    digit_height = min(digit_height, int(0.85 * width * 20 / pixels.shape[1]))  # a number fits across the sheet
    alpha = _digit_alpha(pixels, digit_height, rng)
    aw, ah = alpha.size
    left = int(rng.integers(0, max(1, width - aw)))
    top = int(rng.integers(0, max(1, height - ah)))

    ruled = condition == "ruled" or (condition == "12mp" and rng.random() < 0.3)
    if ruled:
        spacing = digit_height * rng.uniform(0.45, 0.8)
        thickness = max(1.0, spacing * rng.uniform(0.025, 0.05))
        phase = rng.uniform(0, spacing)
        rows = np.arange(height, dtype=np.float32)[:, None]
        to_line = np.abs((rows - phase + spacing / 2) % spacing - spacing / 2)
        line = np.clip(thickness / 2 + 0.5 - to_line, 0, 1)[..., None]  # 1 on the line, anti-aliased edges
        reflect *= 1 + line * (np.array(RULE, np.float32) - 1)
        margin_x = left - rng.uniform(0.05, 0.15) * width
        if margin_x > 2:
            cols = np.arange(width, dtype=np.float32)[None, :]
            line = np.clip(thickness + 0.5 - np.abs(cols - margin_x), 0, 1)[..., None]
            reflect *= 1 + line * (np.array(MARGIN, np.float32) - 1)

    blue = condition == "blue_ink" or (condition == "12mp" and rng.random() < 0.3)
    ink = np.array(BLUE_INK if blue else BLACK_INK, np.float32) * rng.uniform(0.8, 1.3)
    coverage = np.asarray(alpha, np.float32)[: height - top, : width - left] / 255 * rng.uniform(0.85, 1.0)
    rows, cols = np.flatnonzero(coverage.max(1) > 0.25), np.flatnonzero(coverage.max(0) > 0.25)
    box = (left + int(cols[0]), top + int(rows[0]), left + int(cols[-1]) + 1, top + int(rows[-1]) + 1)
    patch = reflect[top : top + coverage.shape[0], left : left + coverage.shape[1]]
    patch += coverage[..., None] * (ink - patch)

    shadow = condition == "shadowed" or (condition == "12mp" and rng.random() < 0.4)
    exposure = rng.uniform(0.85, 1.1)
    white_balance = rng.uniform(0.88, 1.12, 3).astype(np.float32)
    reflect *= (_light((height, width), rng, shadow) * exposure)[..., None]
    reflect *= white_balance
    # Sensor noise, after the phone's denoising: per pixel and channel, a little correlated.
    noise = rng.standard_normal(reflect.shape, dtype=np.float32)  # float32 throughout: half the time of float64
    noise *= rng.uniform(0.008, 0.025)
    reflect += noise
    return reflect, box


def photo(pixels: np.ndarray, condition: str, seed: int) -> bytes:
    """A JPEG photo of one 28x28 MNIST digit under `condition` (one of CONDITIONS), the same for the same seed."""
    return photo_and_box(pixels, condition, seed)[0]


def photo_and_box(pixels: np.ndarray, condition: str, seed: int) -> tuple[bytes, tuple[int, int, int, int]]:
    """`photo`, and where the digit is in it: (left, top, right, bottom) in the photo's pixels."""
    if condition not in CONDITIONS:
        raise ValueError(f"condition {condition!r}: one of {', '.join(CONDITIONS)}")
    rng = np.random.default_rng([seed, CONDITIONS.index(condition)])
    size = (4032, 3024) if condition == "12mp" else SIZES[int(rng.integers(len(SIZES)))]
    if rng.random() < 0.25:  # held upright
        size = size[::-1]
    scale = max(1, int(np.ceil(max(size) / RENDER_MAX)))
    render = (size[0] // scale, size[1] // scale)
    rendered, box = _render(pixels, condition, render, rng)
    picture = Image.fromarray(np.clip(rendered * 255, 0, 255).astype(np.uint8))
    if scale > 1:
        picture = picture.resize(size, Image.Resampling.BILINEAR)
        # A real 12 MP photo has grain at full resolution (2-5 MB as a JPEG, and its decoding costs with its
        # size): a tile of noise repeated over it (drawing 36 M normals would dominate the time).
        grain = rng.normal(0, rng.uniform(2, 4), (256, 256, 3)).astype(np.int16)
        reps = (-(-size[1] // 256), -(-size[0] // 256), 1)
        # clip(photo + grain) in Pillow's C: the grain stored shifted by 128 in uint8, and taken off again (the
        # same bytes as in numpy's int16, a quarter of the time).
        shifted = np.tile((grain + 128).astype(np.uint8), reps)[: size[1], : size[0]]
        picture = ImageChops.add(picture, Image.fromarray(shifted), scale=1.0, offset=-128)
    buffer = io.BytesIO()
    quality = int(rng.integers(88, 96)) if scale > 1 else int(rng.integers(70, 93))  # phones save at 90-95
    picture.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue(), tuple(v * scale for v in box)


def photo_set(images: np.ndarray, condition: str, workers: int = 2) -> list[tuple[bytes, tuple[int, int, int, int]]]:
    """Photos (and boxes) of each of `images` under one condition, photo i with seed i, made in `workers`
    processes."""
    return list(photo_stream(images, condition, workers))


def accuracy_sets(images: np.ndarray) -> Iterator[tuple[str, list[bytes]]]:
    """(name, image files) of the sets accuracy is measured on (`make bench-photos`, accuracy/compare_models.py):
    a photo of each of `images` under each condition, then the same digits as 28x28 PNGs, as dark ink on light
    paper and as canvas strokes. One set at a time: 2,000 12 MP photos are 4 GB."""
    for condition in CONDITIONS:
        yield f"photos: {condition}", [data for data, _ in photo_set(images, condition)]
    rng = np.random.default_rng(0)
    yield "MNIST PNG (28×28)", [as_png(p) for p in images]
    yield "dark ink on light paper (280×280 JPEG)", [on_paper(p, rng) for p in images]
    yield "canvas strokes (280×280 RGBA PNG)", [on_canvas(p) for p in images]


def photo_stream(
    images: np.ndarray, condition: str, workers: int = 2
) -> Iterator[tuple[bytes, tuple[int, int, int, int]]]:
    """`photo_set`'s photos in order, each as soon as it is made: a consumer (a client sending them) works while
    the next ones are made."""
    count = len(images)
    return rendered(photo_and_box, images, [condition] * count, range(count), workers=workers, chunksize=4)


def classify_latency(url: str, body: bytes, count: int, content_type: str = "image/png") -> list[float]:
    """Seconds per POST /classify of `body`, one after another on one keep-alive connection. With the standard
    library's HTTP client: httpx costs a few ms of its own per request on a small machine, which is the client's
    time, not the service's."""
    address = urlsplit(url)
    connection = http.client.HTTPConnection(address.hostname, address.port, timeout=30)
    times = []
    try:
        for _ in range(count):
            start = time.perf_counter()
            connection.request("POST", "/classify", body=body, headers={"Content-Type": content_type})
            response = connection.getresponse()
            answer = response.read()
            times.append(time.perf_counter() - start)
            if response.status != 200:
                raise RuntimeError(f"/classify answered {response.status}: {answer[:200]!r}")
    finally:
        connection.close()
    return times


@contextmanager
def photo_load(url: str, photos: list[bytes], path: str = "/classify") -> Iterator[list]:
    """One client per photo sending it to `path` (/classify, or /read for photos of numbers) back to back while
    the block runs; yields the list of the answers so far (digits, or the numbers read; its length: photos
    served)."""
    stop, answered, failed = threading.Event(), [], []

    def send(body: bytes) -> None:
        with httpx.Client(base_url=url, timeout=30) as client:
            while not stop.is_set():
                response = client.post(path, content=body, headers={"content-type": "image/jpeg"})
                if response.status_code != 200:
                    failed.append(response.status_code)
                    return
                answer = response.json()
                answered.append(answer["text"] if path == "/read" else answer["digit"])

    senders = [threading.Thread(target=send, args=(body,), daemon=True) for body in photos]
    for sender in senders:
        sender.start()
    try:
        yield answered
    finally:
        stop.set()
        for sender in senders:
            sender.join()
    if failed:
        raise RuntimeError(f"photo clients got {failed}")
