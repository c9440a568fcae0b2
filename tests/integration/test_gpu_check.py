"""`make gpu-check` on this host: without a CUDA device it says so in one line, and its own plumbing (node
providers from ONNX Runtime's profile, parity on the MNIST test digits, the report) runs on the CPU provider.
On a GPU host with onnxruntime-gpu the same test runs the CUDA steps and requires every node on CUDA."""

from __future__ import annotations

import os
import subprocess
import sys

import onnxruntime as ort
import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.integration


def gpu_check(mnist_dir, *args: str) -> subprocess.CompletedProcess:
    """`python gpu/check.py --quick --no-service ARGS`, which must succeed."""
    done = subprocess.run(
        [sys.executable, "gpu/check.py", "--quick", "--no-service", *args],
        cwd=ROOT,
        env={**os.environ, "MNIST_DIR": str(mnist_dir)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def test_gpu_check_runs_and_reports(tmp_path, mnist_dir):
    report = tmp_path / "gpu.md"
    summary = gpu_check(mnist_dir, "--out", str(report)).stdout.strip().splitlines()[-1]
    text = report.read_text()
    assert "<!-- gpu_check:start -->" in text and "<!-- gpu_check:end -->" in text
    assert text.count("(pass:") == 3, text  # fp32 full and as served, fp16: each judged
    assert "1,000 MNIST test digits" in text and "Command: `python gpu/check.py --quick" in text
    if "CUDAExecutionProvider" in ort.get_available_providers():
        assert "all" in summary and "nodes on CUDA: True" in summary, summary
    else:
        assert summary.startswith("gpu-check: CUDA steps skipped: ") and summary.endswith("on CPU ok"), summary
        assert "- 1. nodes by execution provider (ONNX Runtime's profile of one call): CPU " in text


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="a CUDA build writes its figures")
def test_without_cuda_the_last_gpu_figures_stay(mnist_dir):
    docs = ROOT / "docs" / "gpu.md"
    before = docs.read_text()
    printed = gpu_check(mnist_dir).stdout
    assert docs.read_text() == before
    assert "<!-- gpu_check:start -->" in printed and "on no NVIDIA GPU" in printed
