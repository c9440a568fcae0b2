"""The alert rules (deploy/prometheus) and the Grafana dashboard (deploy/grafana) with Prometheus' own tool:
promtool parses every rule and every panel's query, and runs the rules' unit tests. That the metric names they use
are the ones a live replica exports is tests/integration/test_operations.py's to check."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import yaml

from tests.conftest import ROOT, require_tools

PROMETHEUS = ROOT / "deploy" / "prometheus"
DASHBOARD = ROOT / "deploy" / "grafana" / "digitserve.json"
# Grafana's variables, as the dashboard's defaults resolve them.
VARIABLES = {"$__rate_interval": "1m", "$job": "digitserve", "$instance": ".*"}


def run_promtool(*args: str, cwd: Path = PROMETHEUS) -> str:
    require_tools("promtool")
    done = subprocess.run(["promtool", *args], cwd=cwd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def rules() -> list[dict]:
    groups = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def panel_queries() -> list[str]:
    queries = []
    for panel in json.loads(DASHBOARD.read_text())["panels"]:
        for target in panel["targets"]:
            query = target["expr"]
            for variable, value in VARIABLES.items():
                query = query.replace(variable, value)
            queries.append(query)
    return queries


def metric_names(query: str) -> set[str]:
    """The series a query reads: digitserve's own, the recorded ones (digitserve:...), Prometheus' `up`."""
    return set(re.findall(r"\b(digitserve_[a-z_]+|digitserve:[a-z0-9_:]+|up)\b", query))


def test_the_rules_parse_and_their_unit_tests_pass():
    assert "SUCCESS" in run_promtool("check", "rules", "rules.yml")
    run_promtool("test", "rules", "rules_test.yml")


def test_every_dashboard_query_parses(tmp_path):
    # promtool parses PromQL where rules hold it: each query becomes a recording rule of a scratch file.
    checked = [{"record": f"dashboard:query_{n}", "expr": query} for n, query in enumerate(panel_queries())]
    (tmp_path / "dashboard.yml").write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": checked}]}))
    run_promtool("check", "rules", "dashboard.yml", cwd=tmp_path)


def test_the_dashboard_reads_recorded_series_that_the_rules_record():
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    used = set().union(*(metric_names(q) for q in panel_queries()))
    assert {name for name in used if ":" in name} <= recorded


def test_the_dashboard_covers_what_operators_watch():
    queries = " ".join(panel_queries())
    for name in [
        "digitserve_requests_total",
        "digitserve_request_duration_seconds_bucket",
        "digitserve_shed_requests_total",
        "digitserve_batch_size",
        "digitserve_confidence",
        "digitserve_predictions_total",
        "digitserve_in_flight_requests",
        "up",
    ]:
        assert name in queries, f"no panel shows {name}"
    assert all("instance" in q for q in panel_queries() if "digitserve_requests_total" in q), "per replica"


def test_the_latency_and_error_alerts_hold_the_slo():
    """The thresholds are loadtests/slo.yaml's: the load test's objectives and the pager's are one."""
    slo = yaml.safe_load((ROOT / "loadtests" / "slo.yaml").read_text())["mix"]
    alerts = {rule["alert"]: rule["expr"] for rule in rules() if "alert" in rule}
    for endpoint, objective in slo.items():
        threshold = objective["p99_ms"] / 1000
        assert re.search(rf'endpoint="{re.escape(endpoint)}"\}} > {threshold}\b', alerts["DigitserveLatencyOverSLO"])
    assert {o["error_rate"] for o in slo.values()} == {0.001}
    assert alerts["DigitserveErrors"].endswith("> 0.001")


def rule_metric_names() -> set[str]:
    """For the integration test: the service's own series the rules and the dashboard read."""
    queries = [rule["expr"] for rule in rules()] + panel_queries()
    return {name for q in queries for name in metric_names(q) if name.startswith("digitserve_")}
