"""Operating replicas: what Prometheus scrapes from a live one is what the alert rules and the dashboard read."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from harness.server import running_service
from tests.unit.test_prometheus import rule_metric_names

pytestmark = pytest.mark.integration

RAW = {"Content-Type": "application/octet-stream"}


def exported(text: str) -> set[str]:
    return {sample.name for family in text_string_to_metric_families(text) for sample in family.samples}


@pytest.mark.slow  # a real server: BentoML's multiprocess metrics
def test_a_replica_exports_every_series_the_rules_and_the_dashboard_read(digits):
    """Shed requests appear on /metrics only once one was shed: one request admitted at a time makes some."""
    batch = digits[0][:64].tobytes()
    with running_service({"DIGITSERVE_WORKERS": "1", "DIGITSERVE_MAX_CONCURRENCY": "1"}) as url:
        with httpx.Client(base_url=url, timeout=30, limits=httpx.Limits(max_connections=16)) as client:

            def post(_) -> int:
                return client.post("/classify_pixels", content=batch, headers=RAW).status_code

            with ThreadPoolExecutor(16) as pool:
                statuses = list(pool.map(post, range(48)))
        assert set(statuses) == {200, 429}, statuses
        names = exported(httpx.get(f"{url}/metrics", timeout=10).text)
    assert rule_metric_names() - names == set()
    assert len(rule_metric_names()) >= 8  # requests, latency, shed, predictions, confidence, batch size, in flight
