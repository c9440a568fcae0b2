"""deploy/local/cluster.py's HAProxy start: a port it cannot bind fails at once with HAProxy's own words, and a
port the cluster chose itself is chosen again (CI once lost one between choosing and binding)."""

from __future__ import annotations

import socket

import pytest

from deploy.local import cluster as cluster_module
from tests.conftest import require_tools

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(autouse=True)
def tools():
    require_tools("haproxy")


@pytest.fixture
def taken():
    """A port something else listens on."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        yield holder.getsockname()[1]


def start(cluster: cluster_module.Cluster) -> None:
    cluster.folder.mkdir(parents=True, exist_ok=True)
    try:
        cluster.start_haproxy()
    finally:
        cluster.stop()


def test_a_port_given_and_taken_fails_at_once_with_haproxys_log(tmp_path, taken):
    cluster = cluster_module.new_cluster(0, taken, 0, 0.0, tmp_path)
    with pytest.raises(cluster_module.HAProxyExited, match="cannot bind"):
        start(cluster)
    assert cluster.port == taken  # the user's port is never swapped for another


def test_a_port_the_cluster_chose_is_chosen_again_if_lost(tmp_path, taken, monkeypatch):
    real = cluster_module.free_port

    def taken_first():
        yield taken
        while True:
            yield real()

    ports = taken_first()
    monkeypatch.setattr(cluster_module, "free_port", lambda: next(ports))
    cluster = cluster_module.new_cluster(0, 0, 0, 0.0, tmp_path)
    start(cluster)
    assert cluster.port != taken and cluster.stats_port
    assert "cannot bind" in (tmp_path / "haproxy.log").read_text()  # the first try lost it
