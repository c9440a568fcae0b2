"""`make bench-plain`: plain digit images (harness/plain.py) through the service's reading and the shipped model,
in process: scikit-learn's UCI digits (real writers, cut close) at 32x32 and 64x64 in both polarities, beside
MNIST test digits brought down to the same 8x8 (the control: what the resolution alone costs); and printed
digits in every font on the machine. Writes the "Plain digit images" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
from datetime import date
from pathlib import Path

import numpy as np
from tqdm import tqdm

from harness.plain import at_8x8, printed_digits, text_weight, uci_digits
from harness.report import machine, write_section
from service.config import DEFAULT_MODEL, Settings
from service.errors import ClientError
from service.preprocess import read_digit
from service.runtime import ModelRuntime
from training.data import load_split
from training.printed import font_files

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench_plain:start -->", "<!-- bench_plain:end -->"
MAX_PIXELS = Settings.from_env({}).max_pixels


def read(model: ModelRuntime, files: list[bytes]) -> tuple[np.ndarray, int]:
    """The digit read in each file (a refused one, 422, reads as a blank image) and how many were refused."""
    pixels, refused = [], 0
    for data in files:
        try:
            pixels.append(read_digit(data, MAX_PIXELS).pixels)
        except ClientError:
            pixels.append(np.zeros((28, 28), np.uint8))
            refused += 1
    return model.logits(model.model_input(np.stack(pixels))).argmax(1), refused


def accuracy(model: ModelRuntime, files: list[bytes], labels: np.ndarray) -> tuple[float, int]:
    """Fraction read right (a 422 counts as wrong) and how many were refused."""
    digits, refused = read(model, files)
    return float(np.mean(digits == labels)), refused


def uci_rows(model: ModelRuntime, images: np.ndarray, labels: np.ndarray) -> list[str]:
    """UCI's digits and the 8x8 MNIST control, at 32 and 64 px, white on black and inverted: the table's rows."""
    rows = [
        "| images | size | white on black | inverted (dark on light) | refused (422) |",
        "|---|---:|---:|---:|---:|",
    ]
    for size in (32, 64):
        for name, make in (
            ("UCI digits (1,797, 43 writers)", lambda inverted, size=size: uci_digits(size, inverted)),
            (
                f"control: MNIST test digits at 8×8 ({len(images)})",
                lambda inverted, size=size: (at_8x8(images, size, inverted), labels),
            ),
        ):
            (white, refused_white), (dark, refused_dark) = (
                accuracy(model, *make(inverted)) for inverted in (False, True)
            )
            rows.append(f"| {name} | {size}×{size} | {white:.2%} | {dark:.2%} | {refused_white + refused_dark} |")
            print(rows[-1], flush=True)

    return rows


def font_rows(model: ModelRuntime) -> list[str]:
    """Printed digits in each test font, by family, and the fonts under 99 %."""
    families: dict[str, list[int]] = {}  # family -> [right, images, right in its text weights, images in them]
    weak = []
    for font in tqdm(font_files(test=True), desc="fonts", unit="font"):
        files, digits = printed_digits(font)
        ok = read(model, files)[0] == digits
        tally = families.setdefault(font.parent.name, [0, 0, 0, 0])
        tally[0], tally[1] = tally[0] + int(ok.sum()), tally[1] + len(ok)
        if text_weight(font):
            tally[2], tally[3] = tally[2] + int(ok.sum()), tally[3] + len(ok)
        if ok.mean() < 0.99:
            wrong = ", ".join(str(d) for d in sorted(set(digits[~ok].tolist())))
            weak.append(f"{font.stem} {ok.mean():.1%} (misread: {wrong})")
    fonts = ["| family | images | accuracy | text weights (no Hairline or Thin) |", "|---|---:|---:|---:|"]
    for family, (right, total, text_right, text_total) in sorted(families.items()):
        fonts.append(f"| {family} | {total} | {right / total:.2%} | {text_right / max(text_total, 1):.2%} |")
    right, total, text_right, text_total = (sum(t[i] for t in families.values()) for i in range(4))
    share, text_share = right / max(total, 1), text_right / max(text_total, 1)
    fonts.append(f"| **all test fonts** | {total} | **{share:.2%}** | **{text_share:.2%}** |")
    fonts += ["", "Fonts under 99 %: " + ("; ".join(weak) if weak else "none") + "."]

    return fonts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--digits", type=int, default=2000, help="MNIST test digits in the 8x8 control")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL, help="an exported model")
    args = parser.parse_args()

    model = ModelRuntime(args.model)
    test = load_split("test", args.data_dir)
    images, labels = test.images[: args.digits], test.labels[: args.digits]
    rows = uci_rows(model, images, labels)
    fonts = font_rows(model)
    section = "\n".join(
        [
            START,
            f"Measured {date.today()} on {machine()}: the service's reading (`service/preprocess.py`) and "
            f"{model.card['name']} {model.card['version']} in process; images from `harness/plain.py`.",
            "",
            "Real writers' digits cut close: scikit-learn's bundled UCI digits (8×8, 17 grey levels) enlarged "
            "(bicubic), white on black as the data set stores them and inverted. The control row puts MNIST "
            "test digits through the same 8×8: what is lost there is the resolution, not the writers.",
            "",
            *rows,
            "",
            "Printed digits: 0–9 in each test font (DejaVu, Liberation, FreeFont, Lato, Cantarell: never rendered in "
            "training, `training/printed.py`), dark on an off-white label, at 16, 32 and 64 px, "
            "rotated −4°, 0° and 4° (90 images a font), by family.",
            "",
            *fonts,
            "",
            "Command: `make bench-plain` (`python accuracy/bench_plain.py --help`).",
            END,
        ]
    )
    write_section(args.out, section, START, END, "## Plain digit images (`make bench-plain`)")
    print("\n".join(fonts))


if __name__ == "__main__":
    main()
