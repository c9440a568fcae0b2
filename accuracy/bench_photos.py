"""`make bench-photos` (part of `make bench`): phone photos through the real service, one worker.

Accuracy over HTTP on the generated photo suite (harness/photos.py: MNIST *test* digits on paper under each
condition) and on the clean sets; end-to-end latency of a 12-megapixel and a 1280x960 photo; the worker's memory
while 16 clients send 12 MP photos; the latency of small requests while 4 clients send photos (no stalling); and,
in process, what handing an image to the decoding thread costs against decoding it on the event loop. Writes the
"Photos" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import psutil
from PIL import Image

from harness.digits import as_png, on_canvas
from harness.photos import accuracy_sets, classify_latency, photo_and_box, photo_load
from harness.report import machine as report_machine
from harness.report import write_section
from harness.server import serving
from service.decode import decode_image
from service.preprocess import read_digit
from training.data import load_split

ROOT = Path(__file__).resolve().parent.parent

START, END = "<!-- bench_photos:start -->", "<!-- bench_photos:end -->"


def accuracy(url: str, bodies: list[bytes], labels: np.ndarray) -> tuple[float, int]:
    """Fraction answered right, sent as multipart uploads by 4 clients, each on its own connection, and how many
    were refused (a 4xx, e.g. 422 "holds 2 digits", counts as wrong; a 5xx stops the benchmark)."""
    local = threading.local()

    def digit(body: bytes) -> int:
        if not hasattr(local, "client"):
            local.client = httpx.Client(base_url=url, timeout=60)
        response = local.client.post("/classify", files={"image": ("photo", body)})
        if response.is_client_error:
            return -1
        response.raise_for_status()
        return response.json()["digit"]

    with ThreadPoolExecutor(4) as pool:
        digits = np.array(list(pool.map(digit, bodies)))
    return float(np.mean(digits == labels)), int(np.sum(digits < 0))


def ms(seconds: list[float] | float) -> str:
    return f"{statistics.median(seconds) * 1000 if isinstance(seconds, list) else seconds * 1000:.1f}"


def rss_growth_under(url: str, worker: psutil.Process, photos: list[bytes], seconds: float) -> tuple[float, int]:
    """Peak growth of the worker's resident memory (MB) while one client per photo sends it; photos served."""
    base = worker.memory_info().rss
    peak, stop = base, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, worker.memory_info().rss)
            time.sleep(0.02)

    sampler = threading.Thread(target=sample)
    sampler.start()
    with photo_load(url, photos) as answered:
        time.sleep(seconds)
    stop.set()
    sampler.join()
    return (peak - base) / 1e6, len(answered)


def hop_and_decode(small: bytes, canvas: bytes, photo: bytes) -> list[str]:
    """In process: a hop to a one-thread executor against decoding each kind of image on the loop."""
    pool = ThreadPoolExecutor(1)

    async def hop() -> list[float]:
        loop, times = asyncio.get_running_loop(), []
        for _ in range(2000):
            start = time.perf_counter()
            await loop.run_in_executor(pool, int)
            times.append(time.perf_counter() - start)
        return times

    def decode(body: bytes) -> list[float]:
        times = []
        for _ in range(200):
            start = time.perf_counter()
            read_digit(body, 25_000_000)
            times.append(time.perf_counter() - start)
        return times

    hop_us = statistics.median(asyncio.run(hop())) * 1e6
    rows = [f"| hand a request to the decoding thread and back | {hop_us:.0f} µs |"]
    for name, body in (("28×28 PNG", small), ("280×280 canvas PNG", canvas), ("1280×960 photo JPEG", photo)):
        size = decode_image(body, 25_000_000).size
        rows.append(
            f"| decode and find the digit: {name} ({len(body) / 1000:.1f} kB, {size[0]}×{size[1]}) "
            f"| {statistics.median(decode(body)) * 1e6:.0f} µs |"
        )
    pool.shutdown()
    return rows


def medium_photos(images: np.ndarray, count: int = 10) -> list[bytes]:
    """`count` photos of test digits at 1280x960, for their latency."""
    medium = []
    for i in range(400):
        data = photo_and_box(images[i], "plain", seed=i)[0]
        if Image.open(io.BytesIO(data)).size == (1280, 960):
            medium.append(data)
        if len(medium) == count:
            break
    return medium


def latencies(url: str, large: list[bytes], medium: list[bytes], small: bytes, requests: int) -> dict:
    """Seconds per request: 12 MP photos as raw bodies and as uploads, 1280x960 photos, a 28x28 PNG idle and
    while 4 clients send 12 MP photos (and how many photos those served meanwhile)."""
    for body in large[:3] + medium[:3]:  # warm-up
        classify_latency(url, body, 1, "image/jpeg")
    timed: dict = {"twelve": [t for body in large for t in classify_latency(url, body, requests // 10, "image/jpeg")]}
    timed["twelve_multipart"] = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for body in large:
            for _ in range(requests // 10):
                start = time.perf_counter()
                client.post("/classify", files={"image": ("photo.jpg", body)}).raise_for_status()
                timed["twelve_multipart"].append(time.perf_counter() - start)
    timed["medium"] = [t for body in medium for t in classify_latency(url, body, requests // 10, "image/jpeg")]
    timed["idle"] = classify_latency(url, small, 200)
    with photo_load(url, large[:4]) as answered:
        time.sleep(0.5)
        timed["loaded"] = classify_latency(url, small, 200)
        timed["photos_during"] = len(answered)
    return timed


def latency_table(timed: dict, large: list[bytes]) -> list[str]:
    sizes = [len(b) / 1e6 for b in large]

    def p90(times: list[float]) -> str:
        return f"{np.percentile(times, 90) * 1000:.1f}"

    return [
        "| request (one worker, one client) | p50 ms | p90 ms |",
        "|---|---:|---:|",
        f"| 12 MP (4032×3024) JPEG, {min(sizes):.1f}–{max(sizes):.1f} MB, raw body "
        f"| {ms(timed['twelve'])} | {p90(timed['twelve'])} |",
        f"| the same, multipart upload | {ms(timed['twelve_multipart'])} | {p90(timed['twelve_multipart'])} |",
        f"| 1280×960 JPEG | {ms(timed['medium'])} | {p90(timed['medium'])} |",
        f"| 28×28 PNG, idle | {ms(timed['idle'])} | {p90(timed['idle'])} |",
        f"| 28×28 PNG while 4 clients send 12 MP photos ({timed['photos_during']} photos meanwhile) "
        f"| {ms(timed['loaded'])} | {p90(timed['loaded'])} |",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--digits", type=int, default=1000, help="photos per condition for the accuracy table")
    parser.add_argument("--requests", type=int, default=60, help="requests per latency figure")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR)")
    args = parser.parse_args()

    test = load_split("test", args.data_dir)
    images, labels = test.images[: args.digits], test.labels[: args.digits]
    print(f"making {args.digits} photos per condition ...", flush=True)
    sets = dict(accuracy_sets(images))
    medium = medium_photos(test.images)
    small = as_png(images[0])

    with serving({"DIGITSERVE_WORKERS": "1"}) as server:
        url = server.url
        large = sets["photos: 12mp"][:10]
        timed = latencies(url, large, medium, small, args.requests)
        (worker,) = server.workers()
        growth, served = rss_growth_under(url, worker, [large[i % len(large)] for i in range(16)], 10)
        rows = ["| set | images | accuracy | refused (4xx) |", "|---|---:|---:|---:|"]
        for name, bodies in sets.items():
            right, refused = accuracy(url, bodies, labels)
            rows.append(f"| {name} | {len(bodies)} | {right * 100:.2f} % | {refused} |")
            print(rows[-1], flush=True)

    latency = latency_table(timed, large)
    stall = statistics.median(timed["loaded"]) / statistics.median(timed["idle"])
    in_process = hop_and_decode(small, on_canvas(images[0]), medium[0])
    machine = report_machine()
    report = "\n".join(
        [
            f"Accuracy over HTTP (`/classify`, multipart), the first {args.digits} MNIST test digits in each set:",
            "",
            *rows,
            "",
            "Latency end to end (client on the same machine):",
            "",
            *latency,
            "",
            f"- small requests while photos are processed: p50 **{stall:.2f}×** their idle p50",
            f"- worker memory while 16 clients send 12 MP photos for 10 s: peak resident growth **{growth:.0f} MB** "
            f"({served} photos served)",
            "",
            "In process, what decides which images are decoded on the event loop (`INLINE_BYTES` in "
            "service/pipeline.py):",
            "",
            "| step | median |",
            "|---|---:|",
            *in_process,
        ]
    )
    print(report)
    section = (
        f"{START}\nMeasured {time.strftime('%Y-%m-%d')} on {machine}: digitserve with 1 worker × 1 ONNX Runtime "
        "thread; photos from `harness/photos.py` (seeded).\n\n"
        f"{report}\n\nCommand: `make bench-photos` (`python accuracy/bench_photos.py --help`).\n{END}"
    )
    write_section(args.out, section, START, END, heading="## Photos (`make bench-photos`)")


if __name__ == "__main__":
    main()
