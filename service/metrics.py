"""Prometheus metrics for /metrics, cheap enough to record on every request.

BentoML's own request metrics are off: they cannot see the 429s (answered by service/middleware.py) and know
nothing of predictions or batches (docs/benchmarks.md, "Per-request overhead"). These are recorded with
prometheus_client directly: a handful of memory-mapped writes per request, label children looked up once.
`bentoml serve` sets PROMETHEUS_MULTIPROC_DIR for every worker: each worker writes its own files there, and a
scrape, whichever worker answers it, sums them all.

    digitserve_requests_total{endpoint,status}        requests answered (429s and 504s included)
    digitserve_request_duration_seconds{endpoint}     latency histogram
    digitserve_in_flight_requests                     requests being handled now, all workers
    digitserve_shed_requests_total{status}            refused under overload: 429 (in flight), 503 (latency limit)
    digitserve_predictions_total{digit}               predictions by digit
    digitserve_confidence                             probability of the predicted digit (histogram)
    digitserve_batch_size                             images per ONNX Runtime call (histogram)
"""

from __future__ import annotations

import os
from functools import cache

import numpy as np
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

from service import routes

SHED = frozenset([429, 503])  # on a prediction route (service/routes.py): refused under overload

requests = Counter("digitserve_requests", "HTTP requests answered, by endpoint and status", ["endpoint", "status"])
latency = Histogram(
    "digitserve_request_duration_seconds",
    "Time from the request's arrival to its answer, by endpoint",
    ["endpoint"],
    buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
in_flight = Gauge(
    "digitserve_in_flight_requests", "Requests being handled now, all workers together", multiprocess_mode="livesum"
)
shed = Counter("digitserve_shed_requests", "Requests refused under overload: 429 or 503", ["status"])
predicted_digits = Counter("digitserve_predictions", "Predictions served, by predicted digit", ["digit"])
confidence = Histogram(
    "digitserve_confidence",
    "Probability of the predicted digit",
    buckets=(0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0),
)
batch_size = Histogram(
    "digitserve_batch_size",
    "Images per ONNX Runtime call (adaptive batching merges concurrent requests)",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256),
)


@cache
def _children(name: str, status: int) -> tuple:
    """The label children an (endpoint, status) pair writes to: `labels()` takes a lock and builds a key."""
    refused = shed.labels(str(status)) if status in SHED and name in routes.PREDICTION_LABELS else None
    return requests.labels(name, str(status)), latency.labels(name), refused


def observe_request(label: str, status: int, seconds: float) -> None:
    """One answer: `label` is its route's (service/routes.py), or "other" for a path the service does not know,
    so that label values stay few whatever scanners ask for."""
    count, timing, refused = _children(label, status)
    count.inc()
    timing.observe(seconds)
    if refused is not None:
        refused.inc()


@cache
def digit_counter(digit: int) -> Counter:
    return predicted_digits.labels(str(digit))


BULK = 8  # values from which observe_all's numpy pays: fewer (/classify's one image) cost less one by one


def observe_all(histogram: Histogram, values: np.ndarray) -> None:
    """`histogram.observe(v)` for each of `values`, as one write per bucket reached and one to the sum rather than
    two per value: one by one, a 64-image request's confidences were a fifth of its Python time in the worker
    (docs/benchmarks.md, "Measured by hand"). prometheus_client has no bulk update, so this reads
    its Histogram's internals (`_upper_bounds`, `_buckets`, `_sum`, each bucket counted on its own, `le`
    cumulated at collection); tests/unit/test_metrics.py checks it against `observe` one by one, so that an
    upgrade that changes them fails there, and without them this falls back to `observe`."""
    try:
        bounds, buckets, total = histogram._upper_bounds, histogram._buckets, histogram._sum
    except AttributeError:
        bounds = None
    if bounds is None or len(values) < BULK:
        for value in values.tolist():
            histogram.observe(value)
        return
    # `observe` counts a value in the first bucket whose bound is >= it: searchsorted's "left" side; past the last
    # (+Inf) only NaN, which no bucket counts.
    counts = np.bincount(np.searchsorted(bounds, values, side="left"), minlength=len(bounds) + 1)[: len(bounds)]
    for bucket, count in zip(buckets, counts.tolist(), strict=True):
        if count:
            bucket.inc(count)
    total.inc(float(np.sum(values, dtype=np.float64)))


def top(probabilities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities [N, 10] -> each image's digit and its confidence (the digit's probability)."""
    digits = probabilities.argmax(1)
    return digits, probabilities[np.arange(len(digits)), digits]


def record_predictions(digits: np.ndarray, confidences: np.ndarray) -> None:
    """Each image's predicted digit and its confidence (`top`), written once per digit and per bucket, not per
    image."""
    for digit, count in enumerate(np.bincount(digits, minlength=10).tolist()):
        if count:
            digit_counter(digit).inc(count)
    observe_all(confidence, confidences)


def render_exposition() -> bytes:
    """The text a scrape gets: every worker's metrics summed (in multiprocess mode), else this process's."""
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        from prometheus_client import REGISTRY

        return generate_latest(REGISTRY)
    registry = CollectorRegistry()
    multiprocess.MultiProcessCollector(registry)
    return generate_latest(registry)


def worker_stopped() -> None:
    """Drop this worker's live gauges (in flight) from the sums; its counters stay counted."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        multiprocess.mark_process_dead(os.getpid())
