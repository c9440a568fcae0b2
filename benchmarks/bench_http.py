"""`make bench`: HTTP throughput and latency of digitserve against a bare FastAPI baseline, in one run.

Starts each server on this machine, drives it with wrk (a C load generator, so that the client is cheap),
prints a table and writes docs/benchmarks.md. Figures on a shared machine are noisy: compare the ratios.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.report import write_section  # noqa: E402
from service.preprocess import normalise  # noqa: E402
from service.runtime import ModelRuntime  # noqa: E402
from tests.digits import as_png  # noqa: E402
from tests.server import free_port, running_service  # noqa: E402
from training.data import load_split  # noqa: E402

LUA = Path(__file__).with_name("wrk_report.lua")


def wrk(url: str, body: Path, content_type: str, connections: int, seconds: int) -> dict:
    env = {**os.environ, "BODY_FILE": str(body), "CONTENT_TYPE": content_type}
    out = subprocess.run(
        ["wrk", f"-t{min(2, connections)}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", str(LUA), url],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    result = json.loads(next(line for line in out.splitlines() if line.startswith("WRK_JSON"))[9:])
    result["rps"] = result["requests"] / result["seconds"]
    return result


def median_of(runs: list[dict]) -> dict:
    return {k: statistics.median(r[k] for r in runs) for k in runs[0]}


class Baseline:
    """benchmarks/baseline_app.py under `uvicorn --workers N` (2 by default), with uvloop and httptools.

    Measured here: with asyncio's own loop, uvicorn's multi-worker mode answers every request in 44 ms (its
    shared socket is made with proto 0, so asyncio never sets TCP_NODELAY and Nagle meets delayed ACKs);
    uvloop sets it, 0.9 ms. Both servers use uvloop and httptools.
    """

    def __init__(self, workers: int = 2) -> None:
        self.workers = workers

    def __enter__(self) -> str:
        port = free_port()
        uvicorn = str(Path(sys.executable).with_name("uvicorn"))
        options = ["--workers", str(self.workers), "--loop", "uvloop", "--http", "httptools", "--log-level", "warning"]
        self.process = subprocess.Popen(
            [uvicorn, "benchmarks.baseline_app:app", *options, "--host", "127.0.0.1", "--port", str(port)],
            cwd=ROOT,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                subprocess.run(["curl", "-sf", "-o", "/dev/null", f"{url}/docs"], check=True)
                return url
            except subprocess.CalledProcessError:
                time.sleep(0.5)
        raise TimeoutError("baseline did not start")

    def __exit__(self, *exc) -> None:
        os.killpg(self.process.pid, 15)
        self.process.wait(timeout=20)


def in_process_images_per_second(batch: np.ndarray, seconds: float = 5.0) -> float:
    """One ONNX Runtime session per core, as the service runs, measured one at a time: scale by the workers."""
    runtime = ModelRuntime(ROOT / "models" / "mnist_cnn.onnx", "cpu", threads=1)
    inputs = normalise(batch, runtime.mean, runtime.std)
    runtime.probabilities(inputs)
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        runtime.probabilities(inputs)
        count += len(batch)
    return count / (time.perf_counter() - start)


def variant_line(results: dict, variant: str, per_request: int) -> str:
    pixels = results[f"digitserve {variant} /classify_pixels"]["rps"]
    single = results[f"digitserve {variant} /classify"]["rps"]
    return (
        f"- {variant}: /classify_pixels **{pixels * per_request:.0f} images/s** "
        f"({pixels / results['digitserve /classify_pixels']['rps']:.2f}× fp32), "
        f"/classify {single:.0f} requests/s ({single / results['digitserve /classify']['rps']:.2f}× fp32)"
    )


def batch_size_table(images: np.ndarray, sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256)) -> list[str]:
    """Median time of one ONNX Runtime call (1 thread) per batch size: what the batcher's settings rest on."""
    runtime = ModelRuntime(ROOT / "models" / "mnist_cnn.onnx", "cpu", threads=1)
    rows = ["| images per call | ms per call | ms per image | images/s |", "|---:|---:|---:|---:|"]
    for size in sizes:
        inputs = normalise(images[:size], runtime.mean, runtime.std)
        runtime.probabilities(inputs)
        times = []
        for _ in range(max(10, 400 // size)):
            start = time.perf_counter()
            runtime.probabilities(inputs)
            times.append(time.perf_counter() - start)
        ms = statistics.median(times) * 1000
        rows.append(f"| {size} | {ms:.2f} | {ms / size:.3f} | {size / ms * 1000:.0f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=15, help="length of each wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="runs per scenario; medians are reported")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--pixels-batch", type=int, default=64, help="images per /classify_pixels request")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR)")
    parser.add_argument("--variants", nargs="*", default=["int8", "fp16"], help="model variants to run besides fp32")
    args = parser.parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")

    images = load_split("test", args.data_dir).images
    tmp = Path(tempfile.mkdtemp())
    png, pixels = tmp / "digit.png", tmp / "pixels.bin"
    png.write_bytes(as_png(images[0]))
    batch = images[: args.pixels_batch]
    pixels.write_bytes(batch.tobytes())

    def scenario(url: str, path: str, body: Path, kind: str, connections: int) -> dict:
        wrk(url + path, body, kind, connections, 3)  # warm-up
        return median_of([wrk(url + path, body, kind, connections, args.seconds) for _ in range(args.repeats)])

    results = {}
    with running_service({"DIGITSERVE_WORKERS": "1"}) as url:
        results["digitserve /classify, 1 worker"] = scenario(url, "/classify", png, "image/png", args.connections)
    with Baseline(workers=1) as url:
        results["FastAPI baseline /classify, 1 worker"] = scenario(url, "/classify", png, "image/png", args.connections)
    with running_service({"DIGITSERVE_WORKERS": "2", "DIGITSERVE_MAX_BATCH": str(max(64, args.pixels_batch))}) as url:
        results["digitserve /classify"] = scenario(url, "/classify", png, "image/png", args.connections)
        results["digitserve /classify, 1 connection"] = scenario(url, "/classify", png, "image/png", 1)
        results["digitserve /classify_pixels"] = scenario(
            url, "/classify_pixels", pixels, "application/octet-stream", 4
        )
    with Baseline() as url:
        results["FastAPI baseline /classify"] = scenario(url, "/classify", png, "image/png", args.connections)
    for variant in args.variants:  # the model variants, end to end (DIGITSERVE_VARIANT)
        env = {
            "DIGITSERVE_WORKERS": "2",
            "DIGITSERVE_VARIANT": variant,
            "DIGITSERVE_MAX_BATCH": str(max(64, args.pixels_batch)),
        }
        with running_service(env) as url:
            results[f"digitserve {variant} /classify"] = scenario(url, "/classify", png, "image/png", args.connections)
            results[f"digitserve {variant} /classify_pixels"] = scenario(
                url, "/classify_pixels", pixels, "application/octet-stream", 4
            )
    in_process = 2 * in_process_images_per_second(batch)
    batching = batch_size_table(images)

    pixels_ips = results["digitserve /classify_pixels"]["rps"] * args.pixels_batch
    ratio = results["digitserve /classify"]["rps"] / results["FastAPI baseline /classify"]["rps"]
    ratio_1 = results["digitserve /classify, 1 worker"]["rps"] / results["FastAPI baseline /classify, 1 worker"]["rps"]
    lines = [
        "| scenario | requests/s | p50 ms | p90 ms | p99 ms | errors |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['errors']:.0f} |"
            for name, r in results.items()
        ),
        "",
        f"- /classify vs the FastAPI baseline: **{ratio:.2f}×** requests/s with 2 workers each, "
        f"**{ratio_1:.2f}×** with 1 worker each (no dependence on how the connections spread over workers)",
        f"- /classify_pixels: **{pixels_ips:.0f} images/s** ({args.pixels_batch} per request), "
        f"{pixels_ips / in_process:.2f}× in-process ONNX Runtime ({in_process:.0f} images/s: 2 sessions × 1 thread, "
        f"batch {args.pixels_batch}, without HTTP)",
        *(variant_line(results, variant, args.pixels_batch) for variant in args.variants),
        "",
        "Adaptive batching: one ONNX Runtime call (1 intra-op thread) by batch size, in process:",
        "",
        *batching,
    ]
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    report = "\n".join(lines)
    print(report)
    section = (
        f"{START}\n"
        f"Measured {time.strftime('%Y-%m-%d')} on {machine}, with wrk on the same machine "
        f"({args.connections} connections unless said, {args.repeats} runs of {args.seconds} s, medians). "
        "One 28×28 PNG per /classify request, sent as the raw body. digitserve runs 2 workers × 1 ONNX Runtime "
        "thread; the baseline is `benchmarks/baseline_app.py` (the same decode, preprocessing and ONNX Runtime "
        "call; no limits, probes or metrics) under `uvicorn --workers 2`.\n\n"
        f"{report}\n\nCommand: `make bench` (`python benchmarks/bench_http.py --help` for the options).\n{END}"
    )
    write_section(args.out, section, START, END, "## HTTP (`make bench`)")


START, END = "<!-- bench_http:start -->", "<!-- bench_http:end -->"


if __name__ == "__main__":
    main()
