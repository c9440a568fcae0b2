"""Faults while serving, on the real service under real concurrent load: a graceful shutdown (SIGTERM) loses no
request and resets no connection; a worker killed with SIGKILL is replaced while the others keep answering."""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import dataclass, field

import httpx
import pytest

from harness.digits import as_png
from harness.server import log_with, serving, trickled_classify
from training.data import load_split

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def digit(mnist_dir) -> bytes:
    return as_png(load_split("test", mnist_dir).images[0])  # a 7


@dataclass
class Load:
    """Clients sending /classify over keep-alive connections, each outcome recorded with its time, `pause` seconds
    apart; stopped when `routable` is cleared (as a load balancer stops routing) or `stop` is set."""

    url: str
    image: bytes
    clients: int = 8
    pause: float = 0.0
    routable: threading.Event = field(default_factory=threading.Event)
    stop: threading.Event = field(default_factory=threading.Event)
    outcomes: list[tuple[float, str]] = field(default_factory=list)  # (time, "200" | exception class name)

    def __post_init__(self) -> None:
        self.routable.set()
        self.threads = [threading.Thread(target=self.client, daemon=True) for _ in range(self.clients)]

    def client(self) -> None:
        with httpx.Client(base_url=self.url, timeout=30) as http:
            while self.routable.is_set() and not self.stop.is_set():
                try:
                    response = http.post("/classify", files={"image": ("d.png", self.image)})
                    right = response.status_code != 200 or response.json()["digit"] == 7
                    outcome = str(response.status_code) if right else "wrong digit"
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                self.outcomes.append((time.monotonic(), outcome))
                self.stop.wait(self.pause)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *_) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=30)

    def between(self, start: float, end: float = float("inf")) -> list[str]:
        return [outcome for t, outcome in self.outcomes if start <= t < end]


def test_sigterm_under_load_turns_not_ready_first_and_loses_nothing(digit):
    drain = 2.0
    with serving({"DIGITSERVE_WORKERS": "2", "DIGITSERVE_DRAIN_SECONDS": str(drain)}) as server:
        readiness: list[tuple[float, int | str]] = []

        def balancer() -> None:
            """Probes /readyz every 0.1 s, as a load balancer would; stops routing at the first failure."""
            while load.routable.is_set():
                try:
                    status = httpx.get(f"{server.url}/readyz", timeout=5).status_code
                except httpx.HTTPError as exc:
                    status = type(exc).__name__
                readiness.append((time.monotonic(), status))  # when the answer came
                if readiness[-1][1] != 200:
                    load.routable.clear()
                time.sleep(0.1)

        with Load(server.url, digit) as load:
            probe = threading.Thread(target=balancer, daemon=True)
            probe.start()
            time.sleep(1.0)
            slow = {}  # accepted during the drain, still uploading when uvicorn's own shutdown starts
            uploading = threading.Thread(
                target=lambda: slow.update(status=trickled_classify(server.url, digit, 3, pieces=20))
            )
            sigterm = time.monotonic()
            server.process.send_signal(signal.SIGTERM)  # the arbiter only, as Kubernetes signals PID 1
            uploading.start()
            probe.join(timeout=30)
            uploading.join(timeout=30)
            server.process.wait(timeout=30)
            stopped = time.monotonic()

        not_ready = next(t for t, status in readiness if status != 200)
        assert next(status for t, status in readiness if t >= not_ready) == 503  # an answer, not a refusal
        assert sigterm < not_ready < sigterm + 1.0
        before, during = load.between(0, sigterm), load.between(sigterm)
        assert len(before) > 20 and set(before) == {"200"}
        # Everything sent until the balancer stopped routing was answered, none reset or dropped.
        assert len(during) > 0 and set(during) == {"200"}, sorted(set(during))
        assert slow["status"] == "HTTP/1.1 200 OK"  # in flight across uvicorn's shutdown, completed
        assert stopped - sigterm >= drain
        assert "draining for 2 s" in log_with(server.log, "draining")


def started(server) -> int:
    """Workers that have finished starting: the last start-up hook logs this line once per worker start."""
    server.log.seek(0)
    return server.log.read().count("Completed startup hook: freeze_heap")


def test_a_killed_worker_is_replaced_while_the_other_keeps_answering(digit):
    with serving({"DIGITSERVE_WORKERS": "2"}) as server:
        first, second = server.workers()
        # A light load (3 clients, 10 requests/s each at most): it runs beside the rest of the suite, where the
        # replacement's start (imports, model, sessions) takes longer than alone (once over 45 s on CI).
        with Load(server.url, digit, clients=3, pause=0.1) as load:
            time.sleep(1.0)
            killed = time.monotonic()
            first.send_signal(signal.SIGKILL)
            # BentoML's process manager (circus) looks for dead workers every 10 s, then starts a new one, whose
            # start (imports, model, sessions) took over 10 s on a CI machine busy with this load and other tests.
            while started(server) < 3:
                if time.monotonic() - killed > 90:
                    server.log.seek(0)
                    pytest.fail("the killed worker was not replaced within 90 s:\n" + server.log.read()[-3000:])
                time.sleep(0.05)
            back = time.monotonic() - killed
            (replacement,) = [w for w in server.workers() if w.pid not in (first.pid, second.pid)]
            second.send_signal(signal.SIGKILL)  # now the replacement answers alone
            time.sleep(2.0)
            alone = time.monotonic()
            time.sleep(1.0)

        failures = [o for o in load.between(killed) if o != "200"]
        gaps = [b - a for (a, _), (b, _) in zip(load.outcomes, load.outcomes[1:], strict=False) if a >= killed]
        print(
            f"\nworker SIGKILLed: replaced and serving after {back:.1f} s; the longest wait between two answers "
            f"meanwhile {1000 * max(gaps):.0f} ms; {len(failures)} requests failed (those on its connections)"
        )
        # Only requests on the connections of a killed worker may fail: one per client per kill at most.
        assert len(failures) <= 2 * load.clients, failures
        assert load.between(killed, killed + back).count("200") > 10 * back  # the other worker kept answering
        served_alone = load.between(alone)
        assert served_alone and set(served_alone) == {"200"} and replacement.is_running()
