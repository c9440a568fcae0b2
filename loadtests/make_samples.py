"""Write the load tests' request bodies: real MNIST test digits as clients send them (committed in samples/).

    python loadtests/make_samples.py        # needs the MNIST files ($MNIST_DIR or data/mnist)

PNGs of the 28x28 digits themselves (the first 24 test digits the shipped model reads right: the load test
requires those answers, and MNIST has a few digits that even a good model reads otherwise), more digits as dark
ink on light paper (280x280 JPEG) and as a large photo-sized JPEG, strokes on a transparent canvas, a raw
uint8 block of 256 digits for /classify_pixels, and written numbers for /read (harness/numbers.py: phone photos
and canvas drawings; their labels are the numbers, as strings).
"""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
from PIL import Image

from harness.digits import as_png, encode, on_canvas, on_paper
from harness.numbers import number_image, number_strip
from harness.photos import CONDITIONS
from service.config import DEFAULT_MODEL
from service.runtime import ModelRuntime
from training.data import load_split

ROOT = Path(__file__).resolve().parent.parent

OUT = Path(__file__).with_name("samples")


def main() -> None:
    test = load_split("test")
    rng = np.random.default_rng(0)
    labels: dict[str, int | str | list[int]] = {}

    def save(name: str, data: bytes, label: int) -> None:
        (OUT / name).write_bytes(data)
        labels[name] = int(label)

    OUT.mkdir(exist_ok=True)
    right = ModelRuntime(DEFAULT_MODEL, "cpu").probabilities(test.images[:100]).argmax(1) == test.labels[:100]
    for i in np.flatnonzero(right)[:24]:
        save(f"mnist_{i:02d}.png", as_png(test.images[i]), test.labels[i])
    for i in range(24, 28):
        save(f"paper_{i:02d}.jpg", on_paper(test.images[i], rng), test.labels[i])
    for i in range(28, 30):
        save(f"canvas_{i:02d}.png", on_canvas(test.images[i]), test.labels[i])
    for i in range(30, 32):  # a phone photo's size: the decode and resize dominate
        page = Image.open(io.BytesIO(on_paper(test.images[i], rng))).resize((1600, 1600), Image.Resampling.BICUBIC)
        save(f"large_{i:02d}.jpg", encode(page, "JPEG", quality=85), test.labels[i])

    for n, (rendering, digits) in enumerate([("plain", 4), ("ruled", 6), ("canvas", 3), ("transparent", 5)]):
        start = 2000 + 10 * n
        strip = number_strip(test.images[start : start + digits], np.random.default_rng(n))
        name = f"number_{n:02d}.{'jpg' if rendering in CONDITIONS else 'png'}"
        (OUT / name).write_bytes(number_image(strip, rendering, n))
        labels[name] = "".join(str(v) for v in test.labels[start : start + digits])

    pixels = test.images[1000:1256]
    (OUT / "pixels.bin").write_bytes(np.ascontiguousarray(pixels, dtype=np.uint8).tobytes())
    labels["pixels.bin"] = [int(v) for v in test.labels[1000:1256]]
    (OUT / "labels.json").write_text(json.dumps(labels, indent=1) + "\n")
    print(f"wrote {len(labels)} files to {OUT}")


if __name__ == "__main__":
    main()
