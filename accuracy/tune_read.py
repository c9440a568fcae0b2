"""`python accuracy/tune_read.py --write`: learn the weights of /read's scorer (service/reading.py) on written
numbers and single digits of MNIST *training* digits, never on the test digits `make bench-read` reads, and write
them to service/read_weights.json.

Each set of harness/numbers.py (every photo condition, both canvases, and numbers whose digits all touch), and
phone photos of single digits (harness/photos.py: a reading must not split a wide digit), is segmented once and
its candidates read by the shipped model once, in process. Numbers from the first part of the training digits
teach, those from a later part judge. Learning is a structured perceptron, averaged: for each image, the best path
under the current weights; where it reads wrong, the weights move towards the features of the best path that
reads right (where the candidates hold one) and away from the chosen one's. Prints each set's whole-number
accuracy with the weights in the file and with the learned ones, on the judging numbers. Then the temperature
of the path posterior that tells how surely each digit is one (service/reading.py, segment_certainty): the one
under which the confidence /read reports for a number (its digits' confidences multiplied) best predicts, on the
teaching numbers, whether the reading is right. `--temperature` fits it alone, for the weights in the file.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from tqdm import tqdm

from harness.numbers import RENDERINGS, number_set
from harness.photos import CONDITIONS, photo
from service.config import DEFAULT_MODEL
from service.line_reader import LineReader
from service.reading import (
    FEATURES,
    WEIGHTS,
    WEIGHTS_FILE,
    best_path,
    features,
    guided_reading,
    read_line,
    scores,
    spelling,
    unread,
)
from service.runtime import ModelRuntime
from service.segment import Candidates, read_candidates
from training.data import load_split

SETS = (*RENDERINGS, "touching", "one digit")
SEED = 7  # numbers of other digits, in another order, than any test set's
JUDGE_FROM = 30_000  # the judging numbers' digits start here among the training digits; the teaching ones at 0

Read = tuple[Candidates, np.ndarray, np.ndarray, str]  # candidates, probabilities, logits, the number


def read_sets(numbers: int, start: int, data_dir: str | None) -> dict[str, list[Read]]:
    """Every set's numbers (of the training digits from `start`), segmented and read by the model."""
    train = load_split("train", data_dir)
    images, labels = train.images[start : start + 20_000], train.labels[start : start + 20_000]
    runtime, reader = ModelRuntime(DEFAULT_MODEL), LineReader()
    sets: dict[str, list[Read]] = {}
    for name in SETS:
        count = max(10, numbers // 3) if name == "12mp" else numbers
        touching = name == "touching"
        if name == "one digit":
            items = one_digit_photos(images[-count:], labels[-count:])
        else:
            items = number_set(images, labels, count, "canvas" if touching else name, touching, SEED)
        sets[name] = []
        for body, truth in tqdm(items, desc=f"{name} (from digit {start})", unit="number"):
            candidates = read_candidates(body, 50_000_000, reader=reader.read)  # as the service reads
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


def text(chosen: list[int], probabilities: np.ndarray) -> str:
    return "".join(str(int(probabilities[i].argmax())) for i in chosen)


def true_path(candidates: Candidates, probabilities: np.ndarray, score: np.ndarray, truth: str) -> list[int] | None:
    """The best-scoring path whose digits read `truth`, or None where the candidates hold no such path."""
    return spelling(candidates, probabilities, score, truth)


def learn(sets: dict[str, list[Read]], epochs: int, seed: int = 0) -> np.ndarray:
    """Averaged structured perceptron over every image of every set, from log-probability plus one per digit."""
    examples = [(features(c, p, logits), c, p, truth) for reads in sets.values() for c, p, logits, truth in reads]
    fixed = [unread(c) for _, c, _, _ in examples]
    weights = np.zeros(len(FEATURES))
    weights[FEATURES.index("bias")] = weights[FEATURES.index("log_probability")] = 1.0
    total, seen = np.zeros_like(weights), 0
    rng = np.random.default_rng(seed)
    for epoch in range(epochs):
        mistakes = 0
        for n in rng.permutation(len(examples)):
            table, candidates, probabilities, truth = examples[n]
            score = table @ weights - fixed[n]  # as `scores` scores it
            chosen = best_path(candidates, score)
            if text(chosen, probabilities) != truth:
                right = true_path(candidates, probabilities, score, truth)
                if right is not None:
                    weights += table[right].sum(axis=0) - table[chosen].sum(axis=0)
                    mistakes += 1
            total += weights
            seen += 1
        print(f"epoch {epoch + 1}: {mistakes} updates", flush=True)
    return total / seen


def accuracy(reads: list[Read], weights: np.ndarray) -> float:
    """How often the path search reads the number right (guided where the line reader read it, as in the
    service; without the one-sure-piece rule, which the weights do not touch)."""

    def search(c: Candidates, p: np.ndarray, logits: np.ndarray) -> str:
        score = scores(c, p, logits, weights)
        return guided_reading(c, p, score, c.guide)[1] if c.guide else text(best_path(c, score), p)

    right = sum(search(c, p, logits) == truth for c, p, logits, truth in reads)
    return right / len(reads)


TEMPERATURES = (0.25, 0.35, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0)


def confidence_loss(sets: dict[str, list[Read]], weights: np.ndarray, temperature: float) -> float:
    """Mean negative log-likelihood of each reading being right or wrong, under the confidence /read reports."""
    losses = []
    for reads in sets.values():
        for c, p, logits, truth in reads:
            chosen, digits, certainty = read_line(c, p, logits, weights, temperature, c.guide)
            confidence = float(np.prod(p[chosen, digits] * certainty))
            right = "".join(map(str, digits)) == truth
            losses.append(-np.log(max(1e-9, confidence if right else 1 - confidence)))
    return float(np.mean(losses))


def fitted_temperature(sets: dict[str, list[Read]], weights: np.ndarray) -> float:
    losses = {t: confidence_loss(sets, weights, t) for t in TEMPERATURES}
    print("temperature: " + ", ".join(f"{t:g} -> {loss:.4f}" for t, loss in losses.items()), flush=True)
    return min(losses, key=losses.get)


def write(weights: np.ndarray, temperature: float, learned: str, fitted: str) -> None:
    """service/read_weights.json: the weights, their temperature, and the commands that made them."""
    found = {"features": list(FEATURES), "weights": [round(float(w), 6) for w in weights]}
    found |= {"temperature": temperature, "learned": learned, "temperature_fitted": fitted}
    WEIGHTS_FILE.write_text(json.dumps(found, indent=1) + "\n")
    print(f"wrote {WEIGHTS_FILE}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numbers", type=int, default=300, help="teaching numbers per set (12 MP: a third as many)")
    parser.add_argument("--judge", type=int, default=200, help="judging numbers per set")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--write", action="store_true", help=f"write the learned weights to {WEIGHTS_FILE}")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR)")
    parser.add_argument(
        "--temperature", action="store_true", help="fit only the temperature, for the weights in the file; write it"
    )
    args = parser.parse_args()

    teach = read_sets(args.numbers, 0, args.data_dir)
    if args.temperature:
        temperature = fitted_temperature(teach, WEIGHTS)
        learned = json.loads(WEIGHTS_FILE.read_text())["learned"]
        write(WEIGHTS, temperature, learned, f"python accuracy/tune_read.py --numbers {args.numbers} --temperature")
        return
    judge = read_sets(args.judge, JUDGE_FROM, args.data_dir)
    learned = learn(teach, args.epochs)
    print("| set (judging numbers) | weights in the file | learned weights |\n|---|---:|---:|")
    for name, reads in judge.items():
        print(f"| {name} | {accuracy(reads, WEIGHTS):.1%} | {accuracy(reads, learned):.1%} |")
    if args.write:
        command = f"python accuracy/tune_read.py --numbers {args.numbers} --epochs {args.epochs} --write"
        write(learned, fitted_temperature(teach, learned), command, command)


if __name__ == "__main__":
    main()
