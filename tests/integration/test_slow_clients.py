"""Slow and abusive clients on the real service: idle connections, half-sent headers and byte-by-byte uploads do
not stall other clients, and an upload slower than DIGITSERVE_TIMEOUT is cut off with a 504."""

from __future__ import annotations

import socket
import statistics
import threading
import time

import httpx
import pytest

from harness.digits import as_png
from harness.server import address, serving, trickled_classify
from training.data import load_split

pytestmark = [pytest.mark.integration, pytest.mark.slow]

IDLE, HALF_HEADERS, TRICKLERS = 500, 50, 10


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
def test_idle_half_open_and_trickling_clients_do_not_stall_others(mnist_dir):
    image = as_png(load_split("test", mnist_dir).images[0])  # a 7
    timeout = 2
    with serving({"DIGITSERVE_WORKERS": "1", "DIGITSERVE_TIMEOUT": str(timeout)}) as server:
        server_address = address(server.url)
        (worker,) = server.workers()
        before = latencies(server.url, image)
        rss_before = worker.memory_info().rss

        abusers = [socket.create_connection(server_address) for _ in range(IDLE + HALF_HEADERS)]
        for sock in abusers[IDLE:]:
            sock.sendall(b"POST /classify HTTP/1.1\r\nHost: x\r\nContent-Ty")  # and never the rest
        results: list[str] = []
        tricklers = [
            threading.Thread(
                target=lambda: results.append(trickled_classify(server.url, image, 2 * timeout, len(image)))
            )
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
