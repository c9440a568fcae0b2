"""`make bench-unsure`: what `min_confidence` refuses, on images that are not digits and on the MNIST test set;
the table goes into README.md ("Not sure" answers).

Each image takes the service's own path in-process (service/preprocess.py reads the PNG, finds and frames the
mark; service/runtime.py runs the model with the card's temperature). A non-digit is refused when the service
finds no mark in it (422 "no digit found", whatever the threshold) or when its confidence is below the threshold
(422 "not confidently a digit"). For the MNIST test digits the table gives the share refused and the accuracy on
the rest.

    python accuracy/bench_unsure.py [--model models/mnist_cnn.onnx] [--data-dir ../shared/mnist]
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path

import numpy as np

from harness.not_digits import KINDS, not_digits
from harness.report import write_section
from service.config import DEFAULT_MODEL, Settings
from service.errors import ClientError
from service.preprocess import read_digit
from service.runtime import ModelRuntime
from training.data import load_split

ROOT = Path(__file__).resolve().parents[1]
THRESHOLDS = (0.5, 0.8, 0.9, 0.95, 0.99)
START, END = "<!-- bench_unsure:start -->", "<!-- bench_unsure:end -->"


def not_digit_confidences(runtime: ModelRuntime) -> dict[str, list[float]]:
    """Per kind, each image's confidence; 0 for an image in which the service finds no mark."""
    found: dict[str, list[float]] = collections.defaultdict(list)
    max_pixels = Settings.from_env({}).max_pixels  # the service's default limit
    for kind, _, data in not_digits():
        try:
            pixels = read_digit(data, max_pixels).pixels
        except ClientError:
            found[kind].append(0.0)
            continue
        found[kind].append(float(runtime.probabilities(pixels[None]).max()))
    return found


def table(runtime: ModelRuntime, data_dir: str | None) -> list[str]:
    confidences = not_digit_confidences(runtime)
    test = load_split("test", data_dir)
    probabilities = np.concatenate([runtime.probabilities(test.images[i : i + 1000]) for i in range(0, 10_000, 1000)])
    confidence, right = probabilities.max(1), probabilities.argmax(1) == test.labels
    header = "| images | count | no mark found | " + " | ".join(f"refused at {t}" for t in THRESHOLDS) + " |"
    lines = [header, "|---|---:|---:|" + "---:|" * len(THRESHOLDS)]
    everything = [c for kind in KINDS for c in confidences[kind]]
    for name, values in [*((k, confidences[k]) for k in KINDS), ("all non-digits", everything)]:
        values = np.array(values)
        cells = " | ".join(f"{100 * (values < t).mean():.0f}%" for t in THRESHOLDS)
        lines.append(f"| {name} | {len(values)} | {100 * (values == 0).mean():.0f}% | {cells} |")
    cells = " | ".join(
        f"{100 * (confidence < t).mean():.2f}% (rest {100 * right[confidence >= t].mean():.2f}% right)"
        for t in THRESHOLDS
    )
    lines.append(f"| MNIST test digits | {len(confidence)} | 0% | {cells} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL)
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR)")
    parser.add_argument("--out", type=Path, default=ROOT / "README.md")
    args = parser.parse_args()
    runtime = ModelRuntime(args.model, "cpu")
    lines = table(runtime, args.data_dir)
    text = "\n".join(lines)
    print(text)
    section = (
        f"{START}\n{runtime.card['name']} v{runtime.card['version']}, temperature {runtime.temperature} "
        f"(from its card). Letters and symbols in 5 fonts, shapes, noise and textures: harness/not_digits.py.\n\n"
        f"{text}\n\nCommand: `make bench-unsure`.\n{END}"
    )
    write_section(
        args.out, section, START, END, '### "Not sure" answers: what `min_confidence` refuses', "# digitserve"
    )


if __name__ == "__main__":
    main()
