"""Replicas behind a real HAProxy (deploy/local): a rolling restart under locust load fails no request, a replica
killed with SIGKILL fails at most the requests it held, then is replaced and serves again, and each replica counts
its own requests while gRPC calls are spread over both."""

from __future__ import annotations

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from deploy.local import cluster as cluster_module
from deploy.local import rollout
from harness.server import free_port
from tests.conftest import require_tools

RAW = {"Content-Type": "application/octet-stream"}

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """Two replicas behind HAProxy, with Prometheus, shared by the module's tests (starting them is the cost)."""
    require_tools("haproxy", "prometheus")
    folder = tmp_path_factory.mktemp("cluster")
    cluster = cluster_module.new_cluster(2, 0, free_port(), 2.0, folder)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def test_a_rolling_restart_under_load_fails_nothing_and_a_killed_replica_is_replaced(cluster):
    # A paced load (4 users, 10 requests/s each): unpaced, locust and the replicas took both cores and starved the
    # tests beside it (`make rollout` measures the unpaced case: docs/scaling.md).
    options = ["--users", "4", "--user-rate", "10", "--warmup", "2", "--settle", "0.5", "--folder", str(cluster.folder)]
    result = rollout.under_load(cluster, rollout.parse_args(options))

    print("\n".join(rollout.report(result)))  # pytest -s shows the figures
    steady, restart, kill = result["steady"], result["rollout"], result["kill"]
    assert steady["answers"] > 0 and steady["failures"] == 0
    assert restart["answers"] > 50 and restart["failures"] == 0, restart["failed"]
    # Each replica left the rotation before it exited (the drain), and its replacement joined it again.
    assert all(step["out"] < step["exited"] < step["ready"] <= step["back"] for step in result["steps"])
    killed = result["killed"]
    # Only requests already in flight when it died may fail: nothing sent after the kill.
    assert kill["failures"] <= killed["in_flight"] and not killed["failed_later"], kill["failed"]
    assert killed["detected"] < killed["back"] <= killed["serving"]
    answers = rollout.read_answers(cluster.folder / "answers.log")
    assert kill["answers"] > 0 and rollout.window(answers, 0, 1e12)["answers"]
    assert len(result["prometheus_up"]) == 2  # Prometheus scraped both replicas (up is 0 or 1 by the kill's timing)


def test_each_replica_counts_its_own_requests_only_and_grpc_calls_are_balanced(cluster, digits):
    """Replicas on one host must not share BentoML's Prometheus files: each one's /metrics is its own. HAProxy's
    gRPC frontend spreads one client connection's calls over the replicas. Counted as what these requests add (the
    cluster may have served others)."""
    import tritonclient.grpc as grpcclient

    urls = [f"http://{cluster.host}:{r.port}" for r in cluster.replicas]
    before = {url: httpx.get(f"{url}/metrics", timeout=10).text for url in urls}
    for image in digits[0][:5]:
        answer = httpx.post(f"{urls[0]}/classify_pixels", content=image.tobytes(), headers=RAW, timeout=30)
        assert answer.status_code == 200
    client = grpcclient.InferenceServerClient(cluster.grpc)  # one channel: one connection to HAProxy
    found = []
    for image in digits[0][:20]:
        tensor = grpcclient.InferInput("pixels", [1, 28, 28], "UINT8")
        tensor.set_data_from_numpy(image[None])
        found.append(int(client.infer("digits", [tensor], client_timeout=30).as_numpy("digit")[0]))
    client.close()
    after = {url: httpx.get(f"{url}/metrics", timeout=10).text for url in urls}

    def added(endpoint: str) -> list[float]:
        return [served(after[url], endpoint) - served(before[url], endpoint) for url in urls]

    assert added("/classify_pixels") == [5, 0]
    assert sum(f == label for f, label in zip(found, digits[1][:20], strict=True)) >= 19
    calls = added("/inference.GRPCInferenceService/ModelInfer")
    assert sum(calls) == 20 and min(calls) > 0, calls


def served(exposition: str, endpoint: str) -> float:
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "digitserve_requests_total" and sample.labels["endpoint"] == endpoint
    )
