"""`make gpu-check`: prove the CUDA path on a GPU host and measure it; on any other host, check the check itself.

Steps, each timed (`--quick` runs a subset, for a first look or for CI):
  1. the CUDA execution provider starts, is the session's first provider, and runs every node of the graph
     (ONNX Runtime's own profile names each node's provider: no silent fallback to CPU);
  2. parity with the CPU provider on the 10,000 MNIST test digits: fp32 in full precision identical predictions
     and max |Δprobability| <= 1e-4; fp32 as served (ONNX Runtime's CUDA provider computes convolutions and
     matrix products in TF32 unless told not to) and fp16 at most 0.05 % of predictions changed;
  3. in-process throughput by batch size (1 ... 4096) for fp32 (TF32 and full) and fp16, with I/O binding (inputs
     and outputs on the device) and without, and with CUDA graphs where ONNX Runtime's CUDA provider takes them;
     cold start, GPU memory used, and what a call costs when the batch size changes from call to call (ONNX
     Runtime plans cuDNN's convolutions again) against one fixed size, as the service runs on CUDA;
  4. the service itself (`DIGITSERVE_PROVIDER=cuda`, when BentoML is installed): /model says CUDA, /classify p50,
     and /classify_pixels binary throughput with many connections.
It writes the figures, the GPU, driver and CUDA versions and the command into docs/gpu.md (a generated section),
and prints a one-line summary. Without a CUDA device or onnxruntime-gpu it says so in one line, skips the CUDA
steps, and still runs its plumbing: the parity code between two CPU sessions, the profile reading, the report.
Needs only numpy and onnxruntime (and BentoML for step 4).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np
import onnxruntime as ort

from harness.report import write_section
from harness.timing import FLOPS_PER_IMAGE, timed
from service.config import DEFAULT_MODEL
from service.contract import read_card, read_normalisation, to_model_input, variant_path
from service.runtime import CPU, CUDA, softmax, with_options
from training.data import load_split

ROOT = Path(__file__).resolve().parent.parent

MODEL = DEFAULT_MODEL
FP16 = variant_path(DEFAULT_MODEL, "fp16")
START, END = "<!-- gpu_check:start -->", "<!-- gpu_check:end -->"
DOCS = ROOT / "docs" / "gpu.md"
FP32_MAX_DELTA, LOW_PRECISION_MAX_CHANGED = 1e-4, 0.0005


def session(
    path: Path,
    provider: str,
    profile: bool = False,
    cuda_graph: bool = False,
    tf32: bool = True,
    search: str | None = None,
) -> ort.InferenceSession:
    """`tf32`: ONNX Runtime's CUDA default, which the service keeps (step 3's table says what it is worth, step 2
    what it changes); False for full fp32, to check the graph's own numerics. Ignored on the CPU provider."""
    options = ort.SessionOptions()
    options.enable_profiling = profile
    if profile:
        options.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "profile")
    if provider == CPU:
        return ort.InferenceSession(str(path), options, providers=[CPU])
    # As the service asks for them (service/runtime.py), CUDA graphs aside.
    extra = ({"enable_cuda_graph": "1"} if cuda_graph else {}) | ({"cudnn_conv_algo_search": search} if search else {})
    providers = with_options([CUDA, CPU], tf32, **extra)
    return ort.InferenceSession(str(path), options, providers=providers)


def node_providers(path: Path, provider: str, images: np.ndarray) -> Counter:
    """How many graph nodes each execution provider ran, from ONNX Runtime's own profile of one call."""
    sess = session(path, provider, profile=True)
    sess.run(["logits"], {"image": images})
    profile = Path(sess.end_profiling())
    events = json.loads(profile.read_text())
    profile.unlink()
    nodes = {}
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and "provider" in args:
            nodes[event["name"].removesuffix("_kernel_time")] = args["provider"]
    return Counter(nodes.values())


def probabilities(sess: ort.InferenceSession, images: np.ndarray, batch: int = 1000) -> np.ndarray:
    return np.concatenate(
        [softmax(sess.run(["logits"], {"image": images[i : i + batch]})[0]) for i in range(0, len(images), batch)]
    )


def parity(reference: np.ndarray, path: Path, provider: str, images: np.ndarray, tf32: bool = True) -> dict:
    """Predictions and probabilities of `path` on `provider` against the `reference` probabilities."""
    expected, got = reference, probabilities(session(path, provider, tf32=tf32), images)
    return {
        "images": len(images),
        "changed": int((expected.argmax(1) != got.argmax(1)).sum()),
        "max_delta": float(np.abs(expected - got).max()),
    }


def throughput(path: Path, batch: int, mode: str, seconds: float, tf32: bool = True) -> float | None:
    """Images/s at `batch` on CUDA: "copy" (numpy in and out), "binding" (I/O binding, data stays on the GPU)
    or "graph" (I/O binding and a CUDA graph replayed); None where the provider refuses the mode."""
    inputs = np.random.default_rng(0).normal(size=(batch, 1, 28, 28)).astype(np.float32)
    try:
        sess = session(path, CUDA, cuda_graph=mode == "graph", tf32=tf32)
        if mode == "copy":
            return batch / timed(lambda: sess.run(["logits"], {"image": inputs}), seconds)
        binding = sess.io_binding()
        x = ort.OrtValue.ortvalue_from_numpy(inputs, "cuda", 0)
        y = ort.OrtValue.ortvalue_from_shape_and_type((batch, 10), np.float32, "cuda", 0)
        binding.bind_ortvalue_input("image", x)
        binding.bind_ortvalue_output("logits", y)

        def call() -> None:
            sess.run_with_iobinding(binding)
            binding.synchronize_outputs()

        return batch / timed(call, seconds)
    except Exception as exc:  # e.g. a graph ONNX Runtime cannot capture
        print(f"  {path.name} batch {batch} {mode}: not available ({str(exc).splitlines()[0][:120]})", flush=True)
        return None


def gpu_facts() -> dict:
    """GPU name, driver, CUDA version and memory used, from nvidia-smi; empty without one."""
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.used,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        ).stdout.strip()
        head = subprocess.run(["nvidia-smi"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if not out:
        return {}
    name, driver, used, total = (v.strip() for v in out.splitlines()[0].split(","))
    cuda = next((line.split("CUDA Version:")[1].split()[0] for line in head.splitlines() if "CUDA Version" in line), "")
    return {"name": name, "driver": driver, "cuda": cuda, "memory_used": used, "memory_total": total}


def cuda_ready() -> str:
    """ "" when the CUDA provider can run here, else why not."""
    if CUDA not in ort.get_available_providers():
        return f"this onnxruntime ({ort.__version__}) has no CUDA execution provider: install onnxruntime-gpu"
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls()
    try:
        started = session(MODEL, CUDA).get_providers()[0]
    except Exception as exc:
        return f"the CUDA execution provider failed to start: {str(exc).splitlines()[0]}"
    return (
        "" if started == CUDA else "the CUDA execution provider did not start (no CUDA device?): ONNX Runtime fell back"
    )


def serve_and_measure(images: np.ndarray, seconds: float) -> list[str]:
    """Step 4: the service on CUDA, over HTTP."""
    try:
        import httpx

        from harness.server import running_service
    except ImportError as exc:
        return [f"- service: skipped ({exc.name} is not installed here)"]
    from concurrent.futures import ThreadPoolExecutor

    from harness.digits import as_png

    lines = []
    with running_service(
        {"DIGITSERVE_PROVIDER": "cuda", "DIGITSERVE_WORKERS": "1", "DIGITSERVE_MAX_BATCH": "256"}
    ) as url:
        provider = httpx.get(f"{url}/model").json()["provider"]
        lines.append(f"- service: `/model` says **{provider}**")
        png = as_png(images[0])
        with httpx.Client(base_url=url) as client:
            times = []
            for _ in range(200):
                start = time.perf_counter()
                client.post("/classify", content=png, headers={"content-type": "image/png"}).raise_for_status()
                times.append(time.perf_counter() - start)
        lines.append(
            f"- service: `/classify` one 28×28 PNG, one client: p50 **{statistics.median(times) * 1000:.2f} ms**"
        )
        body = images[:256].tobytes()
        deadline, count = time.perf_counter() + seconds, 0

        def client_loop(_: int) -> int:
            sent = 0
            with httpx.Client(base_url=url, timeout=30) as client:
                while time.perf_counter() < deadline:
                    client.post(
                        "/classify_pixels", content=body, headers={"content-type": "application/octet-stream"}
                    ).raise_for_status()
                    sent += 256
            return sent

        start = time.perf_counter()
        with ThreadPoolExecutor(16) as pool:
            count = sum(pool.map(client_loop, range(16)))
        rate = count / (time.perf_counter() - start)
        lines.append(
            f"- service: `/classify_pixels` binary, 256 images per request, 16 connections (Python clients on the "
            f"same host): **{rate:,.0f} images/s**"
        )
    return lines


def check_providers(target: str, images: np.ndarray) -> tuple[str, int, int]:
    """Step 1: the report's line, the nodes placed on `target` and all nodes."""
    nodes = node_providers(MODEL, target, images[:64])
    on_target = nodes.get(target, 0)
    line = (
        "- 1. nodes by execution provider (ONNX Runtime's profile of one call): "
        + ", ".join(f"{p.removesuffix('ExecutionProvider')} {n}" for p, n in nodes.items())
        + (f" — **all {on_target} on CUDA**" if target == CUDA and on_target == sum(nodes.values()) else "")
    )
    return line, on_target, sum(nodes.values())


def check_parity(target: str, images: np.ndarray) -> tuple[str, bool]:
    """Step 2: fp32 (full and as served) and fp16 on `target` against fp32 on the CPU provider: the report's line
    and whether all three pass."""
    reference = probabilities(session(MODEL, CPU), images)
    full = parity(reference, MODEL, target, images, tf32=False)
    served, fp16 = parity(reference, MODEL, target, images), parity(reference, FP16, target, images)
    most = LOW_PRECISION_MAX_CHANGED * len(images)
    full_ok = full["changed"] == 0 and full["max_delta"] <= FP32_MAX_DELTA
    served_ok, fp16_ok = served["changed"] <= most, fp16["changed"] <= most

    def judged(name: str, result: dict, ok: bool, rule: str) -> str:
        verdict = "pass" if ok else "FAIL"
        return f"{name} {result['changed']} changed, max |Δp| {result['max_delta']:.1e} ({verdict}: {rule})"

    low = f"≤ {LOW_PRECISION_MAX_CHANGED:.2%} changed"
    line = (
        f"- 2. parity with fp32 on the CPU provider, {len(images):,} MNIST test digits, on "
        f"{target.removesuffix('ExecutionProvider')}: "
        + "; ".join(
            [
                judged("fp32 in full precision", full, full_ok, f"identical, ≤ {FP32_MAX_DELTA:g}"),
                judged("fp32 as served (TF32 on CUDA)", served, served_ok, low),
                judged("fp16", fp16, fp16_ok, low),
            ]
        )
    )
    return line, full_ok and served_ok and fp16_ok


def shape_changes(images: np.ndarray, search: str | None = None, largest: int = 64) -> tuple[float, float]:
    """A new CUDA session (fp32, TF32; cuDNN's `search`, ONNX Runtime's default if None) having seen every batch
    size up to `largest` once: the median milliseconds of a call when each call's batch size differs from the last
    one's (1, 2, ... `largest`, three times over), and when every call holds `largest` images."""
    sess = session(MODEL, CUDA, search=search)

    def call(size: int) -> float:
        began = time.perf_counter()
        sess.run(["logits"], {"image": images[:size]})
        return 1e3 * (time.perf_counter() - began)

    sizes = range(1, largest + 1)
    for size in sizes:
        call(size)
    changing = [call(size) for _ in range(3) for size in sizes]
    return statistics.median(changing), statistics.median(call(largest) for _ in range(3 * largest))


def check_throughput(
    images: np.ndarray, batches: tuple[int, ...], seconds: float, peak_tflops: float
) -> tuple[str, list[str], float]:
    """Step 3, on CUDA: the report's line, the table's rows and the best images/s."""
    cold = time.perf_counter()
    sess = session(MODEL, CUDA)
    sess.run(["logits"], {"image": images[:1]})
    cold = time.perf_counter() - cold
    rows, best = ["| model | batch | copy in/out | I/O binding | + CUDA graph |", "|---|---:|---:|---:|---:|"], 0.0
    variants = ((MODEL, True, "fp32 as served (TF32)"), (MODEL, False, "fp32 in full"), (FP16, True, "fp16"))
    for path, tf32, name in variants:
        for batch in batches:
            rates = [throughput(path, batch, mode, seconds, tf32) for mode in ("copy", "binding", "graph")]
            best = max([best, *(r for r in rates if r)])
            cells = " | ".join(f"{r:,.0f}" if r else "–" for r in rates)
            rows.append(f"| {name} | {batch} | {cells} |")
            print(rows[-1], flush=True)
    served, heuristic = shape_changes(images), shape_changes(images, "HEURISTIC")
    memory = gpu_facts().get("memory_used", "?")
    peak = best * FLOPS_PER_IMAGE / (peak_tflops * 1e12)
    line = (
        f"- 3. in process, images/s (below); best **{best:,.0f}** = {100 * peak:.1f} % of a "
        f"{peak_tflops:g} TFLOP/s fp16 peak; cold start (session + first call) {cold:.2f} s; "
        f"GPU memory used {memory}; a call whose batch size differs from the last call's (1 to 64 in turn; cuDNN "
        f"plans again): {served[0]:.2f} ms with ONNX Runtime's default search, {heuristic[0]:.2f} ms with HEURISTIC; "
        f"64 images every call, as the service runs every batch on CUDA: {served[1]:.3f} ms ({heuristic[1]:.3f} ms)"
    )
    return line, rows, best


def report(gpu: dict, lines: list[str], rows: list[str], timings: dict[str, float], began: float) -> str:
    """The generated section of docs/gpu.md."""
    machine = f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores"
    command = "python gpu/check.py " + shlex.join(sys.argv[1:])
    return "\n".join(
        [
            START,
            f"Run {time.strftime('%Y-%m-%d')} on {gpu_line(gpu)}; {machine}; ONNX Runtime {ort.__version__} "
            f"({', '.join(p.removesuffix('ExecutionProvider') for p in ort.get_available_providers())}).",
            "",
            *lines,
            "",
            *rows,
            *([""] if rows else []),
            "Steps (seconds): "
            + ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
            + f"; total {time.perf_counter() - began:.1f}.",
            "",
            f"Command: `{command.strip()}` (`make gpu-check`).",
            END,
        ]
    )


def gpu_line(gpu: dict) -> str:
    if not gpu:
        return "no NVIDIA GPU"
    return f"{gpu['name']}, driver {gpu['driver']}, CUDA {gpu['cuda']} ({gpu['memory_total']})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="1,000 digits, batches 1/64/1024, 0.5 s per cell")
    parser.add_argument("--seconds", type=float, default=1.0, help="measuring time per throughput cell")
    parser.add_argument("--gpu-peak-tflops", type=float, default=989.0, help="dense fp16 peak (H100 SXM: 989)")
    parser.add_argument("--no-service", action="store_true", help="skip step 4 (the service over HTTP)")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR)")
    parser.add_argument(
        "--out", type=Path, help="report file (default docs/gpu.md, which a run without CUDA leaves as it is)"
    )
    args = parser.parse_args()
    began = time.perf_counter()
    seconds = 0.5 if args.quick else args.seconds
    batches = (1, 64, 1024) if args.quick else (1, 8, 64, 256, 1024, 4096)

    test = load_split("test", args.data_dir)
    count = 1000 if args.quick else len(test.images)
    images = to_model_input(test.images[:count], *read_normalisation(read_card(MODEL)))
    why_not = cuda_ready()
    gpu = gpu_facts()
    target = CPU if why_not else CUDA
    timings: dict[str, float] = {}

    step = time.perf_counter()
    line, on_target, nodes = check_providers(target, images)
    lines = [line]
    timings["1. providers"] = time.perf_counter() - step
    step = time.perf_counter()
    line, ok = check_parity(target, images)
    lines.append(line)
    timings["2. parity"] = time.perf_counter() - step
    rows, best = [], 0.0
    if why_not:
        lines.append(f"- 3., 4.: skipped — {why_not}")
    else:
        step = time.perf_counter()
        line, rows, best = check_throughput(images, batches, seconds, args.gpu_peak_tflops)
        lines.append(line)
        timings["3. throughput"] = time.perf_counter() - step
        if not args.no_service:
            step = time.perf_counter()
            lines += serve_and_measure(test.images, 5 if args.quick else 15)
            timings["4. service"] = time.perf_counter() - step

    section = report(gpu, lines, rows, timings, began)
    if args.out or not why_not:
        write_section(args.out or DOCS, section, START, END, "## The last run", title="# GPU hosts")
    else:  # docs/gpu.md keeps the last GPU host's figures
        print(section)
    if why_not:
        print(f"gpu-check: CUDA steps skipped: {why_not}; plumbing and parity on CPU {'ok' if ok else 'FAILED'}")
    else:
        print(
            f"gpu-check: {gpu_line(gpu)}: all {on_target} nodes on CUDA: {on_target == nodes}; "
            f"parity {'ok' if ok else 'FAILED'}; best {best:,.0f} images/s in process; "
            f"{time.perf_counter() - began:.0f} s"
        )
    return 0 if ok and (why_not or on_target == nodes) else 1


if __name__ == "__main__":
    sys.exit(main())
