"""`make bench-read`: written numbers through POST /read of the real service, one worker, beside Tesseract 5.

The sets (harness/numbers.py): numbers of 2-6 MNIST *test* digits (one in five of 7-12), with gaps of any width,
as phone photos under each photo condition (plain, shadowed, ruled, blue ink, 12 MP) and as canvas drawings (white
on black, and a browser canvas's strokes on transparency); and a set where every neighbouring pair touches or
overlaps by 1-4 px at 28-px scale (drawn on a canvas). Per set: whole-number accuracy, per-digit accuracy (1 - edit
distance / length), /read's p50 and p99 latency over HTTP (one client), and Tesseract 5 out of the box (`--psm 7`,
digits only) on the same images where Debian's tesseract-ocr is installed. Then the latency targets (a 1280x960
and a 12 MP photo of a 6-digit number, one after another), a small /classify beside clients reading long touching
numbers and 12 MP photos (no stall), and how often /read agrees with /classify on one-digit
photos of the photo suite. Writes the "Reading numbers" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import shutil
import statistics
import subprocess
import tempfile
import time
from datetime import date
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
from tqdm import tqdm

from harness.digits import as_png
from harness.numbers import RENDERINGS, number_image, number_set, number_strip
from harness.photos import classify_latency, photo, photo_load
from harness.report import machine, write_section
from harness.server import serving
from training.data import Split, load_split

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- bench_read:start -->", "<!-- bench_read:end -->"
SETS = (*RENDERINGS, "touching")
CONTENT_TYPES = {b"\xff\xd8": "image/jpeg", b"\x89P": "image/png"}
TOLD = 0.9  # a caller asking `?min_confidence=0.9` is told (422) of a reading with a digit under it


def edit_distance(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        previous, row[0] = row[0], i
        for j, y in enumerate(b, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
    return row[len(b)]


class Reader:
    """POST /read (or /classify) on one keep-alive connection, with the standard library's client (httpx costs a
    few ms of its own per request on a small machine)."""

    def __init__(self, url: str) -> None:
        self.address = urlsplit(url)
        self.connection = self.connect()

    def connect(self) -> http.client.HTTPConnection:
        return http.client.HTTPConnection(self.address.hostname, self.address.port, timeout=60)

    def post(self, path: str, body: bytes) -> tuple[int, dict, float]:
        """Status, JSON answer and seconds; a connection the server closed (it may, between requests) is opened
        again, untimed."""
        for attempt in range(2):
            start = time.perf_counter()
            try:
                self.connection.request("POST", path, body=body, headers={"Content-Type": CONTENT_TYPES[body[:2]]})
                response = self.connection.getresponse()
                answer = json.loads(response.read())
            except (ConnectionError, http.client.HTTPException):
                self.connection.close()
                self.connection = self.connect()
                if attempt:
                    raise
                continue
            seconds = time.perf_counter() - start
            if response.getheader("connection", "").lower() == "close":
                self.connection.close()
                self.connection = self.connect()
            return response.status, answer, seconds
        raise AssertionError("unreachable")

    def read(self, body: bytes) -> tuple[str, float]:
        return self.reading(body)[:2]

    def reading(self, body: bytes) -> tuple[str, float, float, float]:
        """The text read, seconds, the number's confidence and its least sure digit's (0, 0 for a 4xx)."""
        status, answer, seconds = self.post("/read", body)
        if status != 200:
            return f"<{status}>", seconds, 0.0, 0.0
        return answer["text"], seconds, answer["confidence"], min(d["confidence"] for d in answer["digits"])


def tesseract(body: bytes) -> str:
    """Tesseract 5's reading of one line of digits, out of the box."""
    with tempfile.NamedTemporaryFile(suffix=".img") as image:
        image.write(body)
        image.flush()
        done = subprocess.run(
            ["tesseract", image.name, "stdout", "--psm", "7", "-c", "tessedit_char_whitelist=0123456789"],
            capture_output=True,
            text=True,
            timeout=60,
        )
    return "".join(c for c in done.stdout if c.isdigit())


def scores(readings: list[str], truths: list[str]) -> tuple[float, float]:
    """Whole-number accuracy and per-digit accuracy (1 - edit distance / length, at least 0 per number)."""
    whole = float(np.mean([r == t for r, t in zip(readings, truths, strict=True)]))
    errors = sum(min(len(t), edit_distance(r, t)) for r, t in zip(readings, truths, strict=True))
    return whole, 1 - errors / sum(len(t) for t in truths)


def share(flags: np.ndarray) -> str:
    """The share of true flags, or a dash for none to count."""
    return f"{flags.mean():.0%}" if len(flags) else "–"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f}"


def set_rows(reader: Reader, test: Split, numbers: int, has_tesseract: bool) -> list[str]:
    """Each set of numbers read by the service (and by Tesseract, where installed): the table's rows."""
    rows = [
        "| set | numbers | whole numbers | digits | mean confidence | wrong, told at 0.9 | right, kept at 0.9 "
        "| p50 ms | p99 ms | Tesseract 5: whole | digits |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name in SETS:
        count = max(10, numbers // 3) if name == "12mp" else numbers
        touching = name == "touching"
        items = number_set(test.images, test.labels, count, "canvas" if touching else name, touching)
        truths = [t for _, t in items]
        readings, seconds, confidence, least = [], [], [], []
        for body, _ in tqdm(items, desc=name, unit="number"):
            text, took, sure, least_sure = reader.reading(body)
            readings.append(text)
            seconds.append(took)
            confidence.append(sure)
            least.append(least_sure)
        whole, per_digit = scores(readings, truths)
        right = np.array([r == t for r, t in zip(readings, truths, strict=True)])
        told = np.array(least) < TOLD  # `?min_confidence=0.9` answers 422 with the reading
        theirs = "|"
        if has_tesseract:
            tess = [tesseract(body) for body, _ in tqdm(items, desc=f"{name}: tesseract", unit="number")]
            t_whole, t_digits = scores(tess, truths)
            theirs = f"{t_whole:.1%} | {t_digits:.1%}"
        p99 = float(np.percentile(seconds, 99))
        rows.append(
            f"| {'touching (canvas)' if touching else name} | {count} | {whole:.1%} | {per_digit:.2%} | "
            f"{np.mean(confidence):.1%} | {share(told[~right])} | {share(~told[right])} | "
            f"{ms(statistics.median(seconds))} | {ms(p99)} | {theirs} |"
        )
        print(rows[-1], flush=True)
    return rows


def latency_rows(reader: Reader, test: Split) -> list[str]:
    """The latency targets: one 6-digit number, photographed at 1280x960 and at 12 MP, sent again and again."""
    rng = np.random.default_rng(7)
    latency = []
    for condition, size in (("plain", "1280×960"), ("12mp", "4032×3024")):
        seed = next(s for s in range(100) if (condition == "12mp" or _size(s) == (1280, 960)))
        body = photo(number_strip(test.images[:6], rng), condition, seed)
        times = [reader.read(body)[1] for _ in range(30)]
        latency.append(f"| {size} photo, 6 digits | {ms(statistics.median(times))} | {ms(max(times))} |")
    return latency


def stall_rows(url: str, test: Split) -> list[str]:
    """A small /classify (one MNIST digit's PNG, 200 times on one connection) alone, and beside 4 clients sending
    /read numbers back to back: 12-digit numbers whose digits all touch (hundreds of candidate digits each, which
    go to the model in slices: service/batching.py), and 12 MP photos of 6-digit numbers."""
    rng = np.random.default_rng(11)
    loads = {
        "4 clients: 12-digit touching numbers (canvas)": [
            number_image(number_strip(test.images[12 * n : 12 * n + 12], rng, True), "canvas", n) for n in range(4)
        ],
        "4 clients: 12 MP photos of 6-digit numbers": [
            number_image(number_strip(test.images[6 * n : 6 * n + 6], rng), "12mp", n) for n in range(4)
        ],
    }
    small = as_png(test.images[0])
    rows = ["| small `/classify` beside | p50 ms | p99 ms | numbers read meanwhile |", "|---|---:|---:|---:|"]
    idle = classify_latency(url, small, 200)
    rows.append(f"| nothing | {ms(statistics.median(idle))} | {ms(float(np.percentile(idle, 99)))} | |")
    for name, bodies in loads.items():
        with photo_load(url, bodies, "/read") as answered:
            time.sleep(0.5)
            loaded = classify_latency(url, small, 200)
            read = len(answered)
        rows.append(f"| {name} | {ms(statistics.median(loaded))} | {ms(float(np.percentile(loaded, 99)))} | {read} |")
        print(rows[-1], flush=True)
    return rows


def agreement(reader: Reader, test: Split, singles: int) -> tuple[int, int]:
    """One digit: does /read say what /classify says? (agreeing, photos)"""
    agree = total = 0
    for condition in ("plain", "shadowed", "ruled", "blue_ink", "12mp"):
        count = singles // 3 if condition == "12mp" else singles
        for n in tqdm(range(count), desc=f"one digit: {condition}", unit="photo"):
            body = photo(test.images[n], condition, n)
            read = reader.read(body)[0]
            status, answer, _ = reader.post("/classify", body)
            agree += status == 200 and read == str(answer["digit"])
            total += 1
    return agree, total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--numbers", type=int, default=300, help="numbers per set (12 MP: a third as many)")
    parser.add_argument("--singles", type=int, default=300, help="one-digit photos per photo condition")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()

    test = load_split("test", args.data_dir)
    has_tesseract = shutil.which("tesseract") is not None
    with serving({"DIGITSERVE_WORKERS": "1", "DIGITSERVE_ACCESS_LOG": "false"}) as server:
        reader = Reader(server.url)
        rows = set_rows(reader, test, args.numbers, has_tesseract)
        latency = latency_rows(reader, test)
        stalls = stall_rows(server.url, test)
        agree, total = agreement(reader, test, args.singles)

    section = "\n".join(
        [
            START,
            f"Measured {date.today()} on {machine()}: `POST /read` of `bentoml serve` with one worker, one client on "
            "one connection; numbers made of MNIST test digits by `harness/numbers.py` (2–6 digits, one in five "
            "of 7–12; gaps of 2–14 px at 28-px scale, or touching by 1–4 px). Per-digit accuracy is 1 − edit "
            "distance / length. Mean confidence: of the numbers read (each the product of its digits' confidences), "
            "beside how many are right; a caller asking `?min_confidence=0.9` is told (a 422 with the reading) of "
            "the wrong readings in the next column, and gets the right ones of the one after as they are."
            + ("" if has_tesseract else " Tesseract was not installed (`apt-get install tesseract-ocr`)."),
            "",
            *rows,
            "",
            "| one image, sent 30 times | p50 ms | max ms |",
            "|---|---:|---:|",
            *latency,
            "",
            *stalls,
            "",
            f"One-digit photos of the photo suite ({total}): `/read` reads the digit `/classify` answers in "
            f"**{agree / total:.1%}** of them.",
            "",
            "Command: `make bench-read` (`python accuracy/bench_read.py --help`).",
            END,
        ]
    )
    write_section(args.out, section, START, END, "## Reading numbers (`make bench-read`)")
    print(section)


def _size(seed: int) -> tuple[int, int]:
    """The size harness.photos.photo gives a non-12 MP photo of this seed (its first draws)."""
    from harness.photos import CONDITIONS, SIZES

    rng = np.random.default_rng([seed, CONDITIONS.index("plain")])
    size = SIZES[int(rng.integers(len(SIZES)))]
    return size[::-1] if rng.random() < 0.25 else size


if __name__ == "__main__":
    main()
