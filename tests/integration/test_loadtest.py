"""The locust smoke run (`python loadtests/run.py --scenario smoke`): the real service under a few real users
(10 requests/s each) for 3 s, every shape, every response checked, no failure allowed, the reports written."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
import yaml

from loadtests.run import check, read_stats
from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_smoke_run_meets_its_objectives(tmp_path):
    command = [sys.executable, "loadtests/run.py", "--scenario", "smoke", "--users", "5", "--spawn-rate", "5"]
    # Locust runs in its own process: it gevent-patches whatever imports it. Each user paced to 10 requests/s: the
    # smoke run checks every answer, not the most the service can take (make loadtest), and runs beside other tests.
    done = subprocess.run(
        [*command, "--duration", "3s", "--out", str(tmp_path)],
        cwd=ROOT,
        env={**os.environ, "DIGITSERVE_USER_RATE": "10"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]  # 0: every objective met

    with open(tmp_path / "smoke_stats.csv", newline="") as f:
        rows = {row["Name"]: row for row in csv.DictReader(f)}
    for name in ("/classify", "/classify_batch", "/classify_pixels", "/read"):
        assert int(rows[name]["Request Count"]) > 0, name
        assert int(rows[name]["Failure Count"]) == 0, name
    objectives = yaml.safe_load((ROOT / "loadtests" / "slo.yaml").read_text())["smoke"]
    assert check(read_stats(tmp_path / "smoke"), objectives) == []  # the run's own figures meet them
    assert "<html" in (tmp_path / "smoke.html").read_text()[:2000].lower()  # locust's report
