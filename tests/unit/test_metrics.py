"""service/metrics.py's bulk histogram update against prometheus_client's own `observe`, value by value: it reads
the Histogram's internals, so that an upgrade that changes them fails here rather than skewing /metrics."""

from __future__ import annotations

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram

from service import metrics

BUCKETS = (0.5, 0.7, 0.8, 0.9, 0.95, 0.99, 0.999, 1.0)


def samples(histogram: Histogram) -> dict[tuple, float]:
    (family,) = histogram.collect()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples if "created" not in s.name}


def histogram() -> Histogram:
    return Histogram("h", "h", buckets=BUCKETS, registry=CollectorRegistry())


def test_the_histogram_internals_it_reads_are_there():
    h = histogram()
    found = {name: hasattr(h, name) for name in ("_upper_bounds", "_buckets", "_sum")}
    assert all(found.values()), (
        f"prometheus_client's Histogram lacks {found}: service/metrics.py observe_all falls back to observe one by "
        "one (correct, slower); adapt it to the new internals"
    )
    assert len(h._buckets) == len(h._upper_bounds) == len(BUCKETS) + 1  # +Inf added


@pytest.mark.parametrize("n", [1, metrics.BULK - 1, metrics.BULK, 64, 500])
def test_observe_all_counts_as_observe_does_value_by_value(n):
    rng = np.random.default_rng(n)
    values = rng.choice([*BUCKETS, 0.0, 0.3, 1.5, -1.0], n).astype(np.float32)  # on the bounds, between, outside
    values[: n // 2] = rng.random(n // 2)
    bulk, one_by_one = histogram(), histogram()
    metrics.observe_all(bulk, values)
    for value in values.tolist():
        one_by_one.observe(value)
    expected = samples(one_by_one)
    assert expected.keys() == samples(bulk).keys()
    for key, value in samples(bulk).items():
        assert value == pytest.approx(expected[key], rel=1e-9), key
    assert samples(bulk)[("h_count", ())] == n


def test_a_nan_is_in_the_sum_and_in_no_bucket_as_with_observe():
    bulk, one_by_one = histogram(), histogram()
    values = np.array([0.5, np.nan, *[0.99] * 8], dtype=np.float32)
    metrics.observe_all(bulk, values)
    for value in values.tolist():
        one_by_one.observe(value)
    got, expected = samples(bulk), samples(one_by_one)
    assert {k: v for k, v in got.items() if k[0] != "h_sum"} == {k: v for k, v in expected.items() if k[0] != "h_sum"}
    assert np.isnan(got[("h_sum", ())]) and np.isnan(expected[("h_sum", ())])


def test_record_predictions_counts_each_digit_and_confidence():
    def counts() -> dict:
        digits = {key[1][0][1]: v for key, v in samples(metrics.predicted_digits).items() if key[0].endswith("_total")}
        return {**digits, "confidences": samples(metrics.confidence)[("digitserve_confidence_count", ())]}

    before = counts()
    probabilities = np.full((20, 10), 0.01, dtype=np.float32)
    probabilities[np.arange(20), np.arange(20) % 3] = 0.91  # digits 0, 1, 2
    metrics.record_predictions(*metrics.top(probabilities))
    after = counts()
    grown = {key: after[key] - before.get(key, 0) for key in after}
    assert {key: n for key, n in grown.items() if n} == {"0": 7, "1": 7, "2": 6, "confidences": 20}
