"""The overload scenario: the same users, driven well past the service's capacity and back down.

    DIGITSERVE_SHED_OK=1 locust -f loadtests/overload.py --headless --host http://localhost:3000
    python loadtests/run.py --scenario overload                                 # with SLOs and a recovery probe

Single images and pixel blocks with no pause between requests: a ramp to OVERLOAD_USERS (default 400, more
requests in flight than the service admits), a hold, then a drop to a handful of users. The service is expected to
shed the excess (429 from BentoML's max_concurrency, 503 from the batcher's latency limit), keep the p99 of what it
serves bounded, and recover fully once the load drops.
"""

from __future__ import annotations

import os

import locustfile as base  # locust puts this folder on sys.path; a module import keeps its classes out of the run
from locust import LoadTestShape, constant

PEAK = int(os.environ.get("OVERLOAD_USERS", "400"))


class Flood(base.SingleImageUser):
    wait_time = constant(0)
    weight = 4


class FloodPixels(base.PixelsUser):
    wait_time = constant(0)
    weight = 1


class RampPastCapacity(LoadTestShape):
    """(end of stage in s, users, spawn rate): ramp, hold at the peak, fall back, stop."""

    stages = ((20, PEAK // 4, 20), (40, PEAK, 40), (60, PEAK, 40), (75, 4, 100))

    def tick(self):
        run_time = self.get_run_time()
        for end, users, rate in self.stages:
            if run_time < end:
                return users, rate
        return None
