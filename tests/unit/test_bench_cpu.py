"""The benchmarks' CPU per request: a server's CPU time, workers that ended and were replaced included."""

from __future__ import annotations

import subprocess
import sys

from harness.load import cpu_seconds

PARENT = """
import subprocess, sys
subprocess.run([sys.executable, "-c", "sum(i * i for i in range(3_000_000))"], check=True)
print("child done", flush=True)
sys.stdin.read()
"""


def test_cpu_seconds_keep_the_time_of_a_child_that_ended():
    """A supervisor that replaces a worker must not make the server's CPU time go down (it did: negative µs)."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout.readline() == "child done\n"
        assert cpu_seconds(parent.pid) > 0.1  # the child's ~0.2 s of arithmetic, counted after it ended
    finally:
        parent.communicate("")
