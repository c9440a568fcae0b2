"""Phone photos never stall small requests on a real server (`bentoml serve`, one worker): 12 MP photos of digits
and of numbers sent by 4 clients while a fifth sends small PNGs. Reading photos is test_photos.py's, in process."""

from __future__ import annotations

import statistics
import time

import numpy as np
import pytest

from harness.digits import as_png
from harness.numbers import number_image, number_strip
from harness.photos import classify_latency, photo_load, photo_set

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.mark.timing
def test_photos_do_not_stall_small_requests(url, mnist_test_set):
    """One worker, 4 clients sending 12 MP photos back to back: a fifth client's small PNGs still answered at
    their idle speed, give or take (`make bench-photos` prints the ratio; this bound is generous for shared CI
    cores, where the clients themselves take CPU from the server)."""
    images = mnist_test_set[0]
    small = as_png(images[0])
    large = [data for data, _ in photo_set(images[:4], "12mp", workers=1)]
    idle = statistics.median(classify_latency(url, small, 100))
    with photo_load(url, large) as answered:
        time.sleep(0.5)
        loaded = statistics.median(classify_latency(url, small, 100))
    assert len(answered) >= 8, "the photo clients hardly ran"
    assert loaded <= max(4 * idle, idle + 0.010), (f"idle p50 {idle * 1000:.1f} ms", f"loaded {loaded * 1000:.1f} ms")


@pytest.mark.timing
def test_reading_photos_of_numbers_does_not_stall_small_requests(url, mnist_test_set):
    """As above, with 4 clients sending 12 MP photos of 6-digit numbers to /read."""
    images = mnist_test_set[0]
    small = as_png(images[0])
    rng = np.random.default_rng(0)
    large = [number_image(number_strip(images[6 * n : 6 * n + 6], rng), "12mp", n) for n in range(4)]
    idle = statistics.median(classify_latency(url, small, 100))
    with photo_load(url, large, "/read") as answered:
        time.sleep(0.5)
        loaded = statistics.median(classify_latency(url, small, 100))
    assert len(answered) >= 8, "the photo clients hardly ran"
    assert loaded <= max(4 * idle, idle + 0.010), (f"idle p50 {idle * 1000:.1f} ms", f"loaded {loaded * 1000:.1f} ms")
