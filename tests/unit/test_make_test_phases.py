"""`make test` runs the tests marked timing after the others, collecting only the files the first run left
tests in (tests/conftest.py, --deselected-files): a file missing from that list would silently not be tested."""

from __future__ import annotations

import subprocess
import sys

from tests.conftest import ROOT

FILES = ["tests/integration/test_stalls.py", "tests/unit/test_imports.py"]


def test_the_first_run_lists_the_files_it_left_tests_in(tmp_path):
    listed = tmp_path / "second-phase-files"
    command = [sys.executable, "-m", "pytest", "-p", "no:locust", "-p", "no:xdist", "--collect-only", "-q"]
    command += ["-m", "not timing", f"--deselected-files={listed}", *FILES]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-2000:]
    assert listed.read_text().splitlines() == ["tests/integration/test_stalls.py"]  # its tests are timing
