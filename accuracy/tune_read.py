"""`python accuracy/tune_read.py`: choose the weights of /read's scorer (service/reading.py, `Scoring`) on written
numbers and single digits of MNIST *training* digits, never on the test digits `make bench-read` reads.

Each set of harness/numbers.py (every photo condition, both canvases, and numbers whose digits all touch), and
phone photos of single digits (harness/photos.py: a reading must not split a wide digit), is segmented once and
its candidates read by the shipped model once, in process; then coordinate ascent over a small grid of values for
each weight maximises the mean whole-number accuracy over the sets, re-running only the path search. Prints each
set's accuracy with the current and the chosen weights, and the chosen `Scoring`; it changes nothing (copy the
weights into service/reading.py, then run `make bench-read`).
"""

from __future__ import annotations

import argparse
import dataclasses

import numpy as np
from tqdm import tqdm

from harness.numbers import RENDERINGS, number_set
from harness.photos import CONDITIONS, photo
from service.config import DEFAULT_MODEL
from service.reading import Scoring, best_reading
from service.runtime import ModelRuntime
from service.segment import Candidates, read_candidates
from training.data import load_split

SETS = (*RENDERINGS, "touching", "one digit")
SEED = 7  # numbers of other digits, in another order, than any test set's
GRID = {
    "digit": [0.0, 0.5, 1.0, 2.0, 3.0],
    "weak_logit": [2.0, 4.0, 6.0, 8.0, 10.0],
    "weak": [0.0, 0.25, 0.5, 1.0, 2.0],
    "low_height": [0.5, 0.6, 0.7, 0.8, 0.9],
    "low": [0.0, 1.0, 3.0, 10.0],
    "squat_aspect": [0.8, 1.0, 1.2],
    "squat": [0.0, 1.0, 3.0, 6.0, 12.0],
    "gap": [0.0, 0.5, 1.0, 2.0, 4.0],
    "cut": [0.0, 0.5, 1.0, 2.0],
    "cross": [0.0, 0.5, 1.0, 1.5, 3.0],
}

Read = tuple[Candidates, np.ndarray, np.ndarray, str]  # candidates, probabilities, logits, the number


def read_sets(numbers: int, data_dir: str | None) -> dict[str, list[Read]]:
    """Every set's numbers, segmented and read by the model: what the path search needs."""
    train = load_split("train", data_dir)
    runtime = ModelRuntime(DEFAULT_MODEL)
    sets: dict[str, list[Read]] = {}
    for name in SETS:
        count = max(10, numbers // 3) if name == "12mp" else numbers
        touching = name == "touching"
        if name == "one digit":
            items = one_digit_photos(train.images[-count:], train.labels[-count:])
        else:
            items = number_set(train.images, train.labels, count, "canvas" if touching else name, touching, SEED)
        sets[name] = []
        for body, truth in tqdm(items, desc=name, unit="number"):
            candidates = read_candidates(body, 50_000_000)
            logits = runtime.logits(runtime.model_input(candidates.pixels))
            sets[name].append((candidates, runtime.confidences(logits), logits, truth))
    return sets


def one_digit_photos(images: np.ndarray, labels: np.ndarray) -> list[tuple[bytes, str]]:
    """Phone photos of single digits, the photo conditions in turn."""
    conditions = [CONDITIONS[n % len(CONDITIONS)] for n in range(len(images))]
    return [
        (photo(image, condition, n), str(label))
        for n, (image, condition, label) in enumerate(zip(images, conditions, labels, strict=True))
    ]


def accuracy(reads: list[Read], scoring: Scoring) -> float:
    right = 0
    for candidates, probabilities, logits, truth in reads:
        chosen = best_reading(candidates, probabilities, logits, scoring)
        right += "".join(str(int(probabilities[i].argmax())) for i in chosen) == truth
    return right / len(reads)


def mean_accuracy(sets: dict[str, list[Read]], scoring: Scoring) -> float:
    return float(np.mean([accuracy(reads, scoring) for reads in sets.values()]))


def ascend(sets: dict[str, list[Read]], scoring: Scoring, rounds: int) -> Scoring:
    """Coordinate ascent: each weight in turn set to the grid value that raises the mean accuracy most."""
    best = mean_accuracy(sets, scoring)
    for round_ in range(rounds):
        before = best
        for name, values in GRID.items():
            for value in values:
                trial = dataclasses.replace(scoring, **{name: value})
                score = mean_accuracy(sets, trial)
                if score > best + 1e-9:
                    best, scoring = score, trial
        print(f"round {round_ + 1}: mean whole-number accuracy {best:.2%}", flush=True)
        if best == before:
            break
    return scoring


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numbers", type=int, default=200, help="numbers per set (12 MP: a third as many)")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of coordinate ascent at most")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR)")
    args = parser.parse_args()

    sets = read_sets(args.numbers, args.data_dir)
    current = Scoring()
    chosen = ascend(sets, current, args.rounds)
    print("| set | current weights | chosen weights |\n|---|---:|---:|")
    for name, reads in sets.items():
        print(f"| {name} | {accuracy(reads, current):.1%} | {accuracy(reads, chosen):.1%} |")
    print(chosen)


if __name__ == "__main__":
    main()
