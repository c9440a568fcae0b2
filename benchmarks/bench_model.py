"""`make bench-model`: in-process throughput and latency of each model variant on each execution provider.

For every variant file (fp32, int8, fp16) and every provider this ONNX Runtime offers (CPU; CUDA with
onnxruntime-gpu on a GPU host), at batch sizes 1, 8, 64 and 256 (and 1,024 on a GPU): the median time of one
call and the images per second it gives. CPU runs use one intra-op thread, as each service worker does. CUDA runs
use I/O binding (input and output stay on the GPU) and report the fraction of the GPU's fp16 peak. It also times a
service start per variant, launch to /readyz, with an empty and with a warm optimised-graph cache. Prints the
tables and writes them to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from harness.report import write_section
from harness.server import running_service
from harness.timing import FLOPS_PER_IMAGE
from harness.timing import timed as timed_calls
from service.config import DEFAULT_MODEL
from service.contract import VARIANTS, variant_path

ROOT = Path(__file__).resolve().parent.parent

MODEL = DEFAULT_MODEL
START, END = "<!-- bench_model:start -->", "<!-- bench_model:end -->"


def session(path: Path, provider: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1 if provider == "CPUExecutionProvider" else 0
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=[provider])


def measure(path: Path, provider: str, batch: int, seconds: float) -> float:
    sess = session(path, provider)
    inputs = np.random.default_rng(0).normal(size=(batch, 1, 28, 28)).astype(np.float32)
    if provider == "CPUExecutionProvider":
        return timed_calls(lambda: sess.run(["logits"], {"image": inputs}), seconds)
    # I/O binding: the input is copied to the GPU once, the output stays there; only the kernels are timed.
    binding = sess.io_binding()
    binding.bind_ortvalue_input("image", ort.OrtValue.ortvalue_from_numpy(inputs, "cuda", 0))
    binding.bind_output("logits", "cuda", 0)

    def call() -> None:
        sess.run_with_iobinding(binding)
        binding.synchronize_outputs()

    return timed_calls(call, seconds)


def startup_seconds(variant: str, cache: Path) -> float:
    """Launch of `bentoml serve` (1 worker) to the first 200 from /readyz."""
    start = time.perf_counter()
    env = {"DIGITSERVE_VARIANT": variant, "DIGITSERVE_WORKERS": "1", "DIGITSERVE_CACHE_DIR": str(cache)}
    with running_service(env):
        return time.perf_counter() - start


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    gpu = ""
    if "CUDAExecutionProvider" in ort.get_available_providers():
        try:
            gpu = subprocess.run(
                ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"], capture_output=True, text=True
            ).stdout.strip()
        except OSError:
            gpu = "a CUDA GPU"
    return f"{cpu}, {os.cpu_count()} cores" + (f", {gpu}" if gpu else ", no GPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=2.0, help="measuring time per cell")
    parser.add_argument("--gpu-peak-tflops", type=float, default=989.0, help="dense fp16 peak (H100 SXM: 989)")
    parser.add_argument("--no-startup", action="store_true", help="skip the service start-up timing")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()

    variants = [v for v in VARIANTS if variant_path(MODEL, v).exists()]
    providers = [p for p in ("CPUExecutionProvider", "CUDAExecutionProvider") if p in ort.get_available_providers()]
    rows = ["| variant | provider | batch | ms per call | images/s | vs fp32 |", "|---|---|---:|---:|---:|---:|"]
    fp32_rate: dict[tuple[str, int], float] = {}
    for provider in providers:
        batches = (1, 8, 64, 256) + ((1024,) if provider == "CUDAExecutionProvider" else ())
        for variant in variants:
            for batch in batches:
                seconds = measure(variant_path(MODEL, variant), provider, batch, args.seconds)
                rate = batch / seconds
                if variant == "fp32":
                    fp32_rate[(provider, batch)] = rate
                ratio = rate / fp32_rate[(provider, batch)] if (provider, batch) in fp32_rate else float("nan")
                extra = ""
                if provider == "CUDAExecutionProvider":
                    extra = f" ({100 * rate * FLOPS_PER_IMAGE / (args.gpu_peak_tflops * 1e12):.2f} % of fp16 peak)"
                name = provider.removesuffix("ExecutionProvider")
                rows.append(
                    f"| {variant} | {name} | {batch} | {1000 * seconds:.3f} | {rate:,.0f}{extra} | {ratio:.2f}× |"
                )
                print(rows[-1], flush=True)

    lines = [
        f"{START}",
        f"Measured {time.strftime('%Y-%m-%d')} on {machine()}, ONNX Runtime {ort.__version__}, in process "
        f"(`make bench-model`); CPU: 1 intra-op thread; medians over {args.seconds:g} s per cell. "
        f"{FLOPS_PER_IMAGE / 1e6:.1f} MFLOP per image.",
        "",
        *rows,
    ]
    if "CUDAExecutionProvider" not in providers:
        no_gpu = "No GPU was available for this run, so there are no CUDA rows (onnxruntime-gpu on a GPU adds them)."
        lines += ["", no_gpu]
    if not args.no_startup:
        startup = ["| variant | launch to /readyz, empty cache | warm cache |", "|---|---:|---:|"]
        for variant in variants:
            with tempfile.TemporaryDirectory() as cache:
                cold = startup_seconds(variant, Path(cache))
                warm = startup_seconds(variant, Path(cache))
            startup.append(f"| {variant} | {cold:.2f} s | {warm:.2f} s |")
            print(startup[-1], flush=True)
        lines += [
            "",
            "Service start, `bentoml serve` with 1 worker, launch to the first 200 from `/readyz` (the optimised "
            "graph is saved in `DIGITSERVE_CACHE_DIR` by the first start and loaded by the next):",
            "",
            *startup,
        ]
    lines += ["", "Command: `make bench-model` (`python benchmarks/bench_model.py --help`).", END]
    write_section(args.out, "\n".join(lines), START, END, "## Model variants (`make bench-model`)")


if __name__ == "__main__":
    main()
