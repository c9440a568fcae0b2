"""Two models on the same real-world inputs: is one really better? Both read the same images, through the service's
own reading (service/preprocess.py: decode, find and frame the digit), so that only the model differs: the photo
suite (harness/photos.py), MNIST PNGs, dark ink on light paper and canvas strokes, made from the first DIGITS
MNIST test digits. Per set: each model's accuracy, the images only one of them reads right, and McNemar's exact
test on those (the chance of a split at least that uneven if both models were equally good). In process; the
HTTP path adds nothing to what the model sees.

    python accuracy/compare_models.py models/mnist_cnn.onnx OLD.onnx --digits 2000 [--out docs/benchmarks.md]
    (OLD.onnx: an earlier model with its card beside it, e.g. from `git show REV:models/mnist_cnn.onnx`)
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import numpy as np

from harness.photos import accuracy_sets
from harness.report import write_section
from service.config import Settings
from service.preprocess import read_digit
from service.runtime import ModelRuntime
from training.data import load_split

START, END = "<!-- compare_models:start -->", "<!-- compare_models:end -->"


def mcnemar_p(only_first: int, only_second: int) -> float:
    """Two-sided exact McNemar test: under 'equally good', each discordant image is a fair coin."""
    n = only_first + only_second
    if n == 0:
        return 1.0
    tail = sum(math.comb(n, k) for k in range(min(only_first, only_second) + 1)) / 2**n
    return min(1.0, 2 * tail)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", type=Path)
    parser.add_argument("baseline", type=Path)
    parser.add_argument("--digits", type=int, default=1000, help="MNIST test digits per set (the first N)")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR)")
    parser.add_argument("--out", type=Path, help="also write the table into this document (docs/benchmarks.md)")
    args = parser.parse_args()

    test = load_split("test", args.data_dir)
    images, labels = test.images[: args.digits], test.labels[: args.digits]
    models = [ModelRuntime(path) for path in (args.model, args.baseline)]
    names = [f"{m.card['name']} {m.card['version']}" for m in models]
    only = " | ".join(f"right only with {name}" for name in names)
    rows = [f"| set | images | {names[0]} | {names[1]} | {only} | McNemar p |", "|---|---:|---:|---:|---:|---:|---:|"]
    print("\n".join(rows), flush=True)
    max_pixels = Settings.from_env({}).max_pixels  # the service's default limit
    for name, bodies in accuracy_sets(images):
        pixels = np.stack([read_digit(body, max_pixels).pixels for body in bodies])
        right = [m.logits(m.model_input(pixels)).argmax(1) == labels for m in models]
        first, second = int((right[0] & ~right[1]).sum()), int((right[1] & ~right[0]).sum())
        accuracies = " | ".join(f"{r.mean():.2%}" for r in right)
        rows.append(f"| {name} | {len(bodies)} | {accuracies} | {first} | {second} | {mcnemar_p(first, second):.2f} |")
        print(rows[-1], flush=True)
    if args.out:
        section = "\n".join(
            [
                f"Measured {time.strftime('%Y-%m-%d')}: {names[0]} ({args.model.name}) against {names[1]}, the first "
                f"{args.digits} MNIST test digits in each set, read as the service reads them, in process. McNemar p: "
                "the chance of a split of the images only one model reads right at least this uneven if both models "
                "were equally good.",
                "",
                *rows,
                "",
                f"Command: `python accuracy/compare_models.py {args.model} BASELINE.onnx --digits {args.digits} "
                f"--out {args.out}` (BASELINE: {names[1]}'s file and card).",
            ]
        )
        write_section(args.out, f"{START}\n{section}\n{END}", START, END, "## Model against model on photos")


if __name__ == "__main__":
    main()
