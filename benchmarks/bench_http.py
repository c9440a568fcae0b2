"""`make bench`: HTTP throughput, latency and CPU per request of digitserve against its peers, in one run.

The peers are what users would otherwise run: a bare FastAPI + uvicorn + ONNX Runtime app
(benchmarks/baseline_app.py) and LitServe with its own batching (benchmarks/litserve_app.py), the same model,
decoding and preprocessing. Each is started on this machine, all at once, and driven with wrk (a C load generator,
so that the client is cheap) in alternating rounds, so that a slow spell of a shared machine hits them alike;
medians are reported. Then: the binary batch endpoint against in-process ONNX Runtime, and the model variants.
Prints the tables and writes docs/benchmarks.md. Figures on a shared machine are noisy: compare the ratios.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import numpy as np

from harness.digits import as_png
from harness.load import COPY, Target, alternate, median_of, wrk
from harness.report import machine as report_machine
from harness.report import write_section
from harness.server import free_port, running_service, serving, started
from service.config import DEFAULT_MODEL
from service.runtime import ModelRuntime
from training.data import load_split

ROOT = Path(__file__).resolve().parent.parent


def baseline(port: int, workers: int) -> AbstractContextManager[subprocess.Popen]:
    """benchmarks/baseline_app.py under `uvicorn --workers N`, with uvloop and httptools.

    Measured here: with asyncio's own loop, uvicorn's multi-worker mode answers every request in 44 ms (its
    shared socket is made with proto 0, so asyncio never sets TCP_NODELAY and Nagle meets delayed ACKs);
    uvloop sets it, 0.9 ms. Both servers use uvloop and httptools.
    """
    uvicorn = str(Path(sys.executable).with_name("uvicorn"))
    options = ["--workers", str(workers), "--loop", "uvloop", "--http", "httptools", "--log-level", "warning"]
    command = [uvicorn, "benchmarks.baseline_app:app", *options, "--host", "127.0.0.1", "--port", str(port)]
    return started(command, f"http://127.0.0.1:{port}/docs")


def litserve(port: int, workers: int) -> AbstractContextManager[subprocess.Popen]:
    command = [sys.executable, "benchmarks/litserve_app.py", str(port), str(workers)]
    return started(command, f"http://127.0.0.1:{port}/health")


def multipart(image: bytes, path: Path) -> tuple[Path, str]:
    """A multipart body with the image as the field `image`, and its content type (LitServe takes files so)."""
    boundary = "digitserve-bench"
    path.write_bytes(
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="digit.png"\r\n'
        f"Content-Type: image/png\r\n\r\n".encode()
        + image
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return path, f"multipart/form-data; boundary={boundary}"


def peers(workers: int, png: Path, form: tuple[Path, str], args: argparse.Namespace) -> dict[str, dict]:
    """digitserve, the FastAPI baseline and LitServe, `workers` each (`args.copies` servers of each), in
    alternating rounds."""
    with ExitStack() as stack:
        targets = {}
        for copy in range(args.copies):
            server = stack.enter_context(serving({"DIGITSERVE_WORKERS": str(workers)}))
            fastapi_port, litserve_port = free_port(), free_port()
            fastapi = stack.enter_context(baseline(fastapi_port, workers))
            lit = stack.enter_context(litserve(litserve_port, workers))
            targets |= {
                f"digitserve, {workers} worker(s){COPY}{copy}": Target(
                    server.url + "/classify", png, "image/png", server.process.pid
                ),
                f"digitserve multipart, {workers} worker(s){COPY}{copy}": Target(
                    server.url + "/classify", *form, server.process.pid
                ),
                f"FastAPI baseline, {workers} worker(s){COPY}{copy}": Target(
                    f"http://127.0.0.1:{fastapi_port}/classify", png, "image/png", fastapi.pid
                ),
                f"LitServe (multipart), {workers} worker(s){COPY}{copy}": Target(
                    f"http://127.0.0.1:{litserve_port}/predict", *form, lit.pid
                ),
            }
        print(f"peers, {workers} worker(s) each ...", flush=True)
        return alternate(targets, args.repeats, args.seconds, args.connections)


def in_process_images_per_second(batch: np.ndarray, sessions: int = 2, seconds: float = 5.0) -> float:
    """What the service's workers could do without HTTP: one ONNX Runtime session (1 thread) per worker, all
    running at once (ONNX Runtime releases the GIL), as they do in the service; measured one at a time and
    multiplied, they would overstate it, since the sessions share the cores' caches and memory bandwidth."""
    runtimes = [ModelRuntime(DEFAULT_MODEL, "cpu", threads=1) for _ in range(sessions)]
    inputs = runtimes[0].model_input(batch)
    counts = [0] * sessions

    def run(n: int, until: float) -> None:
        while time.perf_counter() < until:
            runtimes[n].logits(inputs)
            counts[n] += len(batch)

    for runtime in runtimes:
        runtime.logits(inputs)
    start = time.perf_counter()
    threads = [threading.Thread(target=run, args=(n, start + seconds)) for n in range(sessions)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / (time.perf_counter() - start)


def batch_size_table(images: np.ndarray, sizes=(1, 2, 4, 8, 16, 32, 64, 128, 256)) -> list[str]:
    """Median time of one ONNX Runtime call (1 thread) per batch size: what the batcher's settings rest on."""
    runtime = ModelRuntime(DEFAULT_MODEL, "cpu", threads=1)
    rows = ["| images per call | ms per call | ms per image | images/s |", "|---:|---:|---:|---:|"]
    for size in sizes:
        inputs = runtime.model_input(images[:size])
        runtime.logits(inputs)
        times = []
        for _ in range(max(10, 400 // size)):
            start = time.perf_counter()
            runtime.logits(inputs)
            times.append(time.perf_counter() - start)
        ms = statistics.median(times) * 1000
        rows.append(f"| {size} | {ms:.2f} | {ms / size:.3f} | {size / ms * 1000:.0f} |")
    return rows


def cpu(result: dict) -> str:
    return f"{result['cpu_us']:.0f}" if "cpu_us" in result else "—"


def table(results: dict[str, dict]) -> list[str]:
    return [
        "| scenario | requests/s | p50 ms | p90 ms | p99 ms | CPU µs per request | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {cpu(r)} | {r['errors']:.0f} |"
            for name, r in results.items()
        ),
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds per comparison; medians reported")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument(
        "--copies", type=int, default=2, help="servers of each kind in the comparisons (their rounds pooled)"
    )
    parser.add_argument("--pixels-batch", type=int, default=64, help="images per /classify_pixels request")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR)")
    parser.add_argument("--variants", nargs="*", default=["int8", "fp16"], help="model variants to run besides fp32")
    return parser.parse_args()


def pixels_against_in_process(url: str, pixels: Path, batch: np.ndarray, args: argparse.Namespace) -> dict:
    """/classify_pixels's row, with the in-process images/s of each round beside it (`in_process_rounds`), in
    alternating rounds (the server idle during the in-process ones): how fast this machine runs the model drifts
    over minutes by more than the gap measured (the report prints each round's in-process figure), so each round's
    HTTP figure is set against the in-process one taken beside it."""
    http, ort = [], []
    for _ in range(args.repeats):
        ort.append(in_process_images_per_second(batch, sessions=2))
        http.append(wrk(url + "/classify_pixels", pixels, "application/octet-stream", 4, args.seconds))
    return {**median_of(http), "in_process_rounds": ort}


def service_rows(png: Path, pixels: Path, batch: np.ndarray, args: argparse.Namespace) -> dict[str, dict]:
    """digitserve with 2 workers: unloaded, /classify_pixels and /classify under load; then each model variant."""
    results = {}
    for variant in ["fp32", *args.variants]:
        name = "digitserve" if variant == "fp32" else f"digitserve {variant}"
        env = {"DIGITSERVE_WORKERS": "2", "DIGITSERVE_VARIANT": variant}
        env["DIGITSERVE_MAX_BATCH"] = str(max(64, args.pixels_batch))
        with running_service(env) as url:
            if variant == "fp32":
                results["digitserve /classify, 1 connection"] = median_of(
                    [wrk(url + "/classify", png, "image/png", 1, args.seconds) for _ in range(args.repeats)]
                )
                with running_service({**env, "DIGITSERVE_ALONE_THREADS": "1"}) as one_thread:
                    results[ONE_THREAD] = median_of(
                        [wrk(one_thread + "/classify", png, "image/png", 1, args.seconds) for _ in range(args.repeats)]
                    )
            if variant == "fp32":
                results[f"{name} /classify_pixels"] = pixels_against_in_process(url, pixels, batch, args)
            else:
                results[f"{name} /classify_pixels"] = median_of(
                    [
                        wrk(url + "/classify_pixels", pixels, "application/octet-stream", 4, args.seconds)
                        for _ in range(3)
                    ]
                )
            results[f"{name} /classify"] = median_of(
                [wrk(url + "/classify", png, "image/png", args.connections, args.seconds) for _ in range(args.repeats)]
            )
    return results


def peer_lines(one: dict, two: dict, connections: int) -> list[str]:
    def ratio(results: dict, workers: int, ours: str, peer: str) -> float:
        return results[f"{ours}, {workers} worker(s)"]["rps"] / results[f"{peer}, {workers} worker(s)"]["rps"]

    return [
        "Peers, one 28×28 PNG per request (raw body; LitServe takes files as multipart only, so digitserve is also "
        f"measured so), {connections} connections:",
        "",
        *table({**one, **two}),
        "",
        *(
            f"- digitserve /classify, {w} worker(s) each: "
            f"**{ratio(r, w, 'digitserve', 'FastAPI baseline'):.2f}×** the FastAPI baseline, "
            f"**{ratio(r, w, 'digitserve', 'LitServe (multipart)'):.2f}×** LitServe (multipart against multipart: "
            f"{ratio(r, w, 'digitserve multipart', 'LitServe (multipart)'):.2f}×)"
            for w, r in ((1, one), (2, two))
        ),
        "- each round's requests/s, 2 workers: "
        + "; ".join(f"{name.split(',')[0]} {rounds(r)}" for name, r in two.items())
        + ". The baseline's and LitServe's workers keep the connections where they were accepted: a round "
        "follows how they split (2/14 to 8/8 of 16 seen)",
    ]


def rounds(result: dict) -> str:
    return ", ".join(f"{rps:.0f}" for rps in result["rounds_rps"])


def service_lines(results: dict, args: argparse.Namespace) -> list[str]:
    pixels = results["digitserve /classify_pixels"]
    pixels_ips = pixels["rps"] * args.pixels_batch
    in_process = pixels["in_process_rounds"]
    ratios = [rps * args.pixels_batch / ips for rps, ips in zip(pixels["rounds_rps"], in_process, strict=True)]
    unloaded = results["digitserve /classify, 1 connection"]["p50_ms"]
    one_thread = results[ONE_THREAD]["p50_ms"]
    return [
        "digitserve, 2 workers, and the model variants:",
        "",
        *table(results),
        "",
        f"- unloaded /classify (one connection): p50 **{unloaded:.2f} ms**; {one_thread:.2f} ms with a lone request "
        "on one thread, as batches are (`DIGITSERVE_ALONE_THREADS=1`)",
        f"- /classify_pixels: **{pixels_ips:.0f} images/s** ({args.pixels_batch} per request, 4 connections), "
        f"**{statistics.median(ratios):.2f}×** in-process ONNX Runtime (the median of the rounds' ratios; "
        f"{statistics.median(in_process):.0f} images/s: 2 sessions × 1 thread running at once, batch "
        f"{args.pixels_batch}, without HTTP, in rounds alternating with the HTTP ones); the rounds' ratios: "
        + ", ".join(f"{ratio:.2f}×" for ratio in ratios)
        + " (in process: "
        + ", ".join(f"{ips:.0f}" for ips in in_process)
        + " images/s)",
        *(variant_line(results, variant, args.pixels_batch) for variant in args.variants),
    ]


def main() -> None:
    args = parse_args()
    if not shutil.which("wrk"):
        sys.exit("wrk not found: apt-get install wrk")
    images = load_split("test", args.data_dir).images
    tmp = Path(tempfile.mkdtemp())
    png, pixels = tmp / "digit.png", tmp / "pixels.bin"
    png.write_bytes(as_png(images[0]))
    form = multipart(png.read_bytes(), tmp / "digit.form")
    batch = images[: args.pixels_batch]
    pixels.write_bytes(batch.tobytes())

    one, two = peers(1, png, form, args), peers(2, png, form, args)
    results = service_rows(png, pixels, batch, args)
    lines = [
        *peer_lines(one, two, args.connections),
        "",
        *service_lines(results, args),
        "",
        "Adaptive batching: one ONNX Runtime call (1 intra-op thread) by batch size, in process:",
        "",
        *batch_size_table(images),
    ]
    machine = report_machine()
    report = "\n".join(lines)
    print(report)
    section = (
        f"{START}\n"
        f"Measured {time.strftime('%Y-%m-%d')} on {machine}, with wrk on the same machine ({args.repeats} rounds "
        f"of {args.seconds} s, medians; in the alternating comparisons, {args.copies} servers of each kind started "
        "apart, their rounds pooled). CPU per request: the server's processes' CPU time over the requests "
        "answered (wrk's own is not in it).\n\n"
        f"{report}\n\nCommand: `make bench` (`python benchmarks/bench_http.py --help` for the options).\n{END}"
    )
    write_section(args.out, section, START, END, "## HTTP (`make bench`)")


def variant_line(results: dict, variant: str, per_request: int) -> str:
    pixels = results[f"digitserve {variant} /classify_pixels"]["rps"]
    single = results[f"digitserve {variant} /classify"]["rps"]
    return (
        f"- {variant}: /classify_pixels **{pixels * per_request:.0f} images/s** "
        f"({pixels / results['digitserve /classify_pixels']['rps']:.2f}× fp32), "
        f"/classify {single:.0f} requests/s ({single / results['digitserve /classify']['rps']:.2f}× fp32)"
    )


ONE_THREAD = "digitserve /classify, 1 connection, DIGITSERVE_ALONE_THREADS=1"
START, END = "<!-- bench_http:start -->", "<!-- bench_http:end -->"


if __name__ == "__main__":
    main()
