"""Nothing one client sends stalls the others, on the real service (`bentoml serve`, one worker): idle
connections, half-sent headers and byte-by-byte uploads (an upload slower than DIGITSERVE_TIMEOUT is cut off with
a 504), 12 MP photos of digits and of numbers, and long numbers whose digits touch (hundreds of candidate digits
each), sent back to back. Each compares latencies: `make test` runs them alone, after the others (marker timing)."""

from __future__ import annotations

import socket
import statistics
import threading
import time

import httpx
import numpy as np
import pytest

from harness.digits import as_png
from harness.numbers import number_image, number_strip
from harness.photos import classify_latency, photo_load, photo_set
from harness.server import address, serving, trickled_classify

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IDLE, HALF_HEADERS, TRICKLERS = 500, 50, 10
TIMEOUT = 2  # s: DIGITSERVE_TIMEOUT, which the tricklers outlast


@pytest.fixture(scope="module")
def server():
    with serving({"DIGITSERVE_WORKERS": "1", "DIGITSERVE_TIMEOUT": str(TIMEOUT)}) as server:
        yield server


def latencies(url: str, image: bytes, n: int = 100) -> list[float]:
    """Seconds per /classify of a well-behaved client (new connection each time, as a browser on a page would)."""
    times = []
    with httpx.Client(base_url=url, timeout=30, headers={"Connection": "close"}) as client:
        for _ in range(n):
            start = time.perf_counter()
            response = client.post("/classify", files={"image": ("d.png", image)})
            times.append(time.perf_counter() - start)
            assert response.status_code == 200 and response.json()["digit"] == 7
    return times


@pytest.mark.timing
def test_idle_half_open_and_trickling_clients_do_not_stall_others(server, mnist_test_set):
    image = as_png(mnist_test_set[0][0])  # a 7
    server_address = address(server.url)
    (worker,) = server.workers()
    before = latencies(server.url, image)
    rss_before = worker.memory_info().rss

    abusers = [socket.create_connection(server_address) for _ in range(IDLE + HALF_HEADERS)]
    for sock in abusers[IDLE:]:
        sock.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Ty")  # and never the rest
    results: list[str] = []
    tricklers = [
        threading.Thread(target=lambda: results.append(trickled_classify(server.url, image, 2 * TIMEOUT, len(image))))
        for _ in range(TRICKLERS)
    ]
    for thread in tricklers:
        thread.start()
    time.sleep(0.5)
    during = latencies(server.url, image)
    rss_during = worker.memory_info().rss
    for thread in tricklers:
        thread.join(timeout=30)
    for sock in abusers:
        sock.close()

    print(
        f"\nwell-behaved /classify median {1000 * statistics.median(before):.1f} ms alone, "
        f"{1000 * statistics.median(during):.1f} ms (max {1000 * max(during):.1f}) beside {IDLE} idle, "
        f"{HALF_HEADERS} half-sent and {TRICKLERS} trickling connections; worker RSS "
        f"+{(rss_during - rss_before) / 2**20:.1f} MiB"
    )
    assert statistics.median(during) < 3 * statistics.median(before) + 0.005
    assert max(during) < 1.0
    # Uploads slower than the timeout are cut off with BentoML's 504, not left to hold a slot for ever.
    assert results == ["HTTP/1.1 504 Gateway Timeout"] * TRICKLERS, results
    assert latencies(server.url, image, 5)  # and the worker is fine afterwards


def assert_not_stalled(
    url: str, small: bytes, large: list[bytes], path: str = "/classify", slack: float = 0.010
) -> None:
    """4 clients sending `large` to `path` back to back; a fifth client's `small` PNGs still answered at their idle
    speed, give or take `slack` seconds (`make bench-photos` prints the ratio; this bound is generous for shared CI
    cores, where the clients themselves take CPU from the server)."""
    idle = statistics.median(classify_latency(url, small, 100))
    with photo_load(url, large, path) as answered:
        time.sleep(0.5)
        loaded = statistics.median(classify_latency(url, small, 100))
    assert len(answered) >= 8, "the photo clients hardly ran"
    assert loaded <= max(4 * idle, idle + slack), (f"idle p50 {idle * 1000:.1f} ms", f"loaded {loaded * 1000:.1f} ms")


@pytest.mark.timing
def test_photos_do_not_stall_small_requests(server, mnist_test_set):
    """12 MP photos of digits to /classify."""
    images = mnist_test_set[0]
    large = [data for data, _ in photo_set(images[:4], "12mp", workers=1)]
    assert_not_stalled(server.url, as_png(images[0]), large)


@pytest.mark.timing
def test_reading_photos_of_numbers_does_not_stall_small_requests(server, mnist_test_set):
    """12 MP photos of 6-digit numbers to /read."""
    images = mnist_test_set[0]
    rng = np.random.default_rng(0)
    large = [number_image(number_strip(images[6 * n : 6 * n + 6], rng), "12mp", n) for n in range(4)]
    assert_not_stalled(server.url, as_png(images[0]), large, "/read")


@pytest.mark.timing
def test_reading_long_numbers_of_touching_digits_does_not_stall_small_requests(server, mnist_test_set):
    """12-digit numbers whose digits all touch, drawn on a canvas, to /read: 300 to 1,200 candidate digits each,
    which reach the model in slices (service/batching.py), one slice a batch; a small /classify waits for a slice
    or two (3.5 ms each on 2 cores), not for a number's worth (0.1-0.3 s: 0.42 s p50 before the slices)."""
    images = mnist_test_set[0]
    rng = np.random.default_rng(0)
    strips = [number_strip(images[12 * n : 12 * n + 12], rng, touching=True) for n in range(4)]
    large = [number_image(strip, "canvas", n) for n, strip in enumerate(strips)]
    assert_not_stalled(server.url, as_png(images[0]), large, "/read", slack=0.025)
