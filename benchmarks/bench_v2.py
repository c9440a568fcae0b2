"""`make bench-v2`: digitserve's Open Inference Protocol (KServe V2) endpoint, driven by Triton's own load tool and
set against a real peer, in one run.

1. The peer: MLServer (Seldon's V2 server) hosting the same ONNX file through benchmarks/mlserver_runtime.py, with
   its adaptive batching on, as many inference workers as digitserve has workers and the same intra-op threads.
   MLServer answers neither Triton's /config (HTTP) nor its ModelConfig RPC, so perf_analyzer cannot drive it:
   both are driven with V2 JSON infer requests over HTTP by wrk, and with ModelInfer calls over gRPC (raw tensors,
   what tritonclient sends) by h2load, 1 and 64 FP32 images each, in alternating rounds, the other server paused;
   digitserve's V2 HTTP with binary tensors by h2load too, beside its gRPC with the same tool.
2. The V2 path against digitserve's own binary batch endpoint, /classify_pixels, with the same tool (wrk) and the
   same images: binary tensors for the raw-pixel model (`digits`, UINT8) and the ONNX model's own (FP32).
3. perf_analyzer (from the tritonclient 2.40.0 wheel) against digitserve: HTTP with binary and with JSON tensors,
   and gRPC; concurrency 1, 16 and 64, batch 1 and 64.

Both servers and both tools run on this machine: compare the ratios. MLServer and perf_analyzer live in their own
environment (.venv-bench-v2, requirements/bench-v2.txt), which `make bench-v2` makes; nothing of theirs enters
the serving install. Prints the tables and writes them into docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path

import numpy as np

from harness.load import COPY, Target, alternate
from harness.report import machine as report_machine
from harness.report import write_section
from harness.server import free_port, serving, started
from service.config import DEFAULT_MODEL
from service.contract import read_card, read_normalisation, to_model_input
from training.data import load_split

ROOT = Path(__file__).resolve().parent.parent
VENV = ROOT / ".venv-bench-v2"
MODEL = DEFAULT_MODEL
WORKERS, THREADS = 2, 1
# perf_analyzer holds a fixed number of requests in flight and stops at the first error; at 64 connections of 64
# images (4,096 images queued, about a second of work here) the service's own shedding (429 past 32 requests per
# worker, 503 past 500 ms in the queue) would answer some of them. Raised for the measurement, and said so.
# Batches of up to 256 images: MLServer merges up to 64 requests into one call, whatever their size; with the
# default 64 images, digitserve would run each 64-image request alone (on the AMD EPYC, 0.40 ms per image instead
# of 0.35; flat from 16 images on the Intel Xeon: docs/benchmarks.md).
SERVICE_ENV = {
    "DIGITSERVE_WORKERS": str(WORKERS),
    "DIGITSERVE_THREADS": str(THREADS),
    "DIGITSERVE_BATCH_SIZE": "256",
    "DIGITSERVE_MAX_CONCURRENCY": "128",
    "DIGITSERVE_BATCH_LATENCY_MS": "5000",
}


def tool(name: str) -> Path:
    path = VENV / "bin" / name
    if not path.exists():
        sys.exit(f"{path} not found: run `make bench-v2`, which makes {VENV.name}")
    return path


def cudart_dir() -> Path:
    """Where the pip package nvidia-cuda-runtime-cu12 put libcudart.so.12, which perf_analyzer links against."""
    found = sorted(VENV.glob("lib/python*/site-packages/nvidia/cuda_runtime/lib/libcudart.so.12"))
    if not found:
        sys.exit(f"libcudart.so.12 not found in {VENV.name}: run `make bench-v2`")
    return found[0].parent


# Request bodies ---------------------------------------------------------------------------------------------------


def v2_json(name: str, datatype: str, array: np.ndarray) -> bytes:
    """An infer request with one tensor as JSON `data` (flat, in the shape given), asking for JSON outputs."""
    tensor = {"name": name, "datatype": datatype, "shape": list(array.shape), "data": array.ravel().tolist()}
    return json.dumps({"inputs": [tensor]}).encode()


def v2_binary(name: str, datatype: str, array: np.ndarray) -> tuple[bytes, dict[str, str]]:
    """An infer request with one tensor in binary (Triton's extension, as tritonclient sends it), binary outputs."""
    blob = np.ascontiguousarray(array).tobytes()
    tensor = {"name": name, "datatype": datatype, "shape": list(array.shape)}
    tensor["parameters"] = {"binary_data_size": len(blob)}
    head = json.dumps({"inputs": [tensor], "parameters": {"binary_data_output": True}}).encode()
    return head + blob, {"Inference-Header-Content-Length": str(len(head))}


def grpc_framed(model: str, name: str, datatype: str, array: np.ndarray) -> bytes:
    """A ModelInferRequest with one raw tensor, framed as a gRPC message travels (compression flag, length), for
    h2load to send as the body of each call."""
    from tritonclient.grpc import service_pb2 as pb

    request = pb.ModelInferRequest(model_name=model)
    request.inputs.add(name=name, datatype=datatype, shape=array.shape)
    request.raw_input_contents.append(np.ascontiguousarray(array).tobytes())
    message = request.SerializeToString()
    return b"\0" + struct.pack(">I", len(message)) + message


def check_grpc(address: str, framed: Path) -> None:
    """One call of a gRPC target with a real client: h2load reads no gRPC status, so a target that answered every
    call with an error would look fast."""
    import grpc
    from tritonclient.grpc import service_pb2 as pb
    from tritonclient.grpc import service_pb2_grpc as pb_grpc

    with grpc.insecure_channel(address) as channel:
        request = pb.ModelInferRequest.FromString(framed.read_bytes()[5:])
        answer = pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=30)
    if len(answer.raw_output_contents) != 1 and not answer.outputs[0].contents.fp32_contents:
        raise RuntimeError(f"{address}: no logits in the answer: {answer}")


def perf_analyzer_data(images: np.ndarray, path: Path) -> Path:
    """perf_analyzer's --input-data file: one step per image (batch-1 tensors; it stacks steps into batches)."""
    steps = [{"image": {"content": image.ravel().tolist(), "shape": list(image.shape)}} for image in images]
    path.write_text(json.dumps({"data": steps}))
    return path


# The servers and the tools ----------------------------------------------------------------------------------------


def mlserver(port: int, grpc_port: int, model_name: str, folder: Path) -> AbstractContextManager[subprocess.Popen]:
    """MLServer 1.7 serving MODEL as `model_name` through benchmarks/mlserver_runtime.py, HTTP on `port` and gRPC
    on `grpc_port`: WORKERS inference processes (its parallel_workers), THREADS intra-op threads each, adaptive
    batching of up to 64 requests waiting at most 1 ms for a batch to fill (it needs a wait above 0 to batch at
    all), its defaults otherwise."""
    (folder / model_name).mkdir(parents=True)
    settings = {"http_port": port, "grpc_port": grpc_port, "metrics_port": free_port(), "parallel_workers": WORKERS}
    (folder / "settings.json").write_text(json.dumps(settings))
    model = {
        "name": model_name,
        "implementation": "mlserver_runtime.OnnxRuntimeModel",
        "max_batch_size": 64,
        "max_batch_time": 0.001,
        "parameters": {"uri": str(MODEL), "extra": {"threads": THREADS}},
    }
    (folder / model_name / "model-settings.json").write_text(json.dumps(model))
    env = {**os.environ, "PYTHONPATH": str(ROOT / "benchmarks")}
    command = [str(tool("mlserver")), "start", str(folder)]
    # Run in `folder`: MLServer keeps its Prometheus files in .metrics/ under the working directory.
    return started(command, f"http://127.0.0.1:{port}/v2/models/{model_name}/ready", env, cwd=folder, timeout=120)


def perf_analyzer(
    url: str, model: str, concurrency: int, batch: int, data: Path, json_tensors: bool, protocol: str = "http"
) -> dict:
    """One perf_analyzer measurement (it runs until three windows agree within --stability-percentage)."""
    with tempfile.NamedTemporaryFile(suffix=".csv") as report:
        command = [
            str(tool("perf_analyzer")),
            *("-m", model, "-u", url, "-i", protocol, "-b", str(batch), "--concurrency-range", str(concurrency)),
            *("--input-data", str(data), "--measurement-interval", "4000", "--stability-percentage", "20"),
            *("--max-trials", "8", "-f", report.name),
        ]
        if json_tensors:
            command += ["--input-tensor-format", "json", "--output-tensor-format", "json"]
        env = {**os.environ, "LD_LIBRARY_PATH": str(cudart_dir())}
        done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        if done.returncode:
            raise RuntimeError(f"perf_analyzer failed:\n{done.stdout[-2000:]}{done.stderr[-2000:]}")
        row = next(csv.DictReader(io.StringIO(Path(report.name).read_text())))
    images = float(row["Inferences/Second"])
    return {
        "images_s": images,
        "rps": images / batch,
        "p50_ms": float(row["p50 latency"]) / 1e3,
        "p99_ms": float(row["p99 latency"]) / 1e3,
    }


# The three parts --------------------------------------------------------------------------------------------------


def against_mlserver(model: str, bodies: dict, folder: Path, args: argparse.Namespace) -> dict[str, dict]:
    """`args.copies` servers of each, in alternating rounds (harness.load.alternate pools a kind's servers' rounds:
    a server keeps its own speed for its whole life)."""
    targets = {}
    infer = "/inference.GRPCInferenceService/ModelInfer"
    with ExitStack() as stack:
        for copy in range(args.copies):
            server = stack.enter_context(serving(SERVICE_ENV))
            port, grpc_port = free_port(), free_port()
            peer = stack.enter_context(mlserver(port, grpc_port, model, folder / str(copy)))
            for n in (1, 64):
                body, framed = bodies[f"json {n}"], bodies[f"grpc {n}"]
                binary, headers = bodies[f"binary image {n}"]
                for address in (server.grpc, f"127.0.0.1:{grpc_port}"):
                    check_grpc(address, framed)
                pid = server.process.pid
                targets[f"digitserve, JSON, {n} image(s){COPY}{copy}"] = Target(
                    f"{server.url}/v2/models/{model}/infer", body, "application/json", pid
                )
                targets[f"MLServer, JSON, {n} image(s){COPY}{copy}"] = Target(
                    f"http://127.0.0.1:{port}/v2/models/{model}/infer", body, "application/json", peer.pid
                )
                targets[f"digitserve, gRPC, {n} image(s){COPY}{copy}"] = Target(
                    f"http://{server.grpc}{infer}", framed, "application/grpc", pid, tool="h2load"
                )
                targets[f"MLServer, gRPC, {n} image(s){COPY}{copy}"] = Target(
                    f"http://127.0.0.1:{grpc_port}{infer}", framed, "application/grpc", peer.pid, tool="h2load"
                )
                targets[f"digitserve, HTTP binary (h2load), {n} image(s){COPY}{copy}"] = Target(
                    f"{server.url}/v2/models/{model}/infer", binary, "application/octet-stream", pid, headers, "h2load"
                )
        print(f"digitserve and MLServer, V2 JSON and gRPC, {args.connections} connections ...", flush=True)
        return alternate(targets, args.repeats, args.seconds, args.connections)


def against_pixels(server, model: str, bodies: dict, args: argparse.Namespace) -> dict[str, dict]:
    """The V2 path and /classify_pixels: the same images, the same tool, taking turns."""
    targets, url, pid = {}, server.url, server.process.pid
    for n in (1, 64):
        pixels_body, pixels_headers = bodies[f"binary pixels {n}"]
        image_body, image_headers = bodies[f"binary image {n}"]
        targets[f"/classify_pixels, {n} image(s)"] = Target(
            f"{url}/classify_pixels", bodies[f"raw {n}"], "application/octet-stream", pid
        )
        targets[f"V2 digits (UINT8, binary), {n} image(s)"] = Target(
            f"{url}/v2/models/digits/infer", pixels_body, "application/octet-stream", pid, pixels_headers
        )
        targets[f"V2 {model} (FP32, binary), {n} image(s)"] = Target(
            f"{url}/v2/models/{model}/infer", image_body, "application/octet-stream", pid, image_headers
        )
    print(f"V2 against /classify_pixels, {args.connections} connections ...", flush=True)
    return alternate(targets, args.repeats, args.seconds, args.connections)


def perf_analyzer_grid(server, model: str, data: Path) -> dict[tuple[str, int, int], dict]:
    results = {}
    for tensors in ("binary", "JSON", "gRPC"):
        address = server.grpc if tensors == "gRPC" else server.url.removeprefix("http://")
        protocol = "grpc" if tensors == "gRPC" else "http"
        for concurrency in (1, 16, 64):
            for batch in (1, 64):
                result = perf_analyzer(address, model, concurrency, batch, data, tensors == "JSON", protocol)
                results[(tensors, concurrency, batch)] = result
                print(
                    f"  perf_analyzer {tensors}, concurrency {concurrency}, batch {batch}: "
                    f"{result['images_s']:.0f} images/s, p99 {result['p99_ms']:.1f} ms",
                    flush=True,
                )
    return results


# Report -----------------------------------------------------------------------------------------------------------


def rows(results: dict[str, dict], images: dict[str, int]) -> list[str]:
    return [
        "| server, request | requests/s | images/s | p50 ms | p99 ms | CPU µs per request | errors |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {r['rps']:.0f} | {r['rps'] * images[name]:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} "
            f"| {r['cpu_us']:.0f} | {r['errors']:.0f} |"
            for name, r in results.items()
        ),
    ]


def image_count(name: str) -> int:
    return int(name.rsplit(", ", 1)[1].split(" ")[0])


def peer_lines(peer: dict, args: argparse.Namespace) -> list[str]:
    lines = [
        f"**digitserve against MLServer**, V2 infer requests of the model's own FP32 tensor, JSON over HTTP (wrk) and "
        f"raw over gRPC (h2load, one call at a time on each connection), {args.connections} connections, "
        f"{WORKERS} workers each, {args.copies} servers of each (their rounds pooled):",
        "",
        *rows(peer, {name: image_count(name) for name in peer}),
        "",
    ]
    for kind in ("JSON", "gRPC"):
        for n in (1, 64):
            ours, theirs = peer[f"digitserve, {kind}, {n} image(s)"], peer[f"MLServer, {kind}, {n} image(s)"]
            lines.append(
                f"- {kind}, {n} image(s) per request: digitserve **{ours['rps'] / theirs['rps']:.2f}×** MLServer's "
                f"requests/s, p99 {ours['p99_ms']:.1f} ms against {theirs['p99_ms']:.1f} ms; each round's "
                "requests/s: "
                + ", ".join(f"{rps:.0f}" for rps in ours["rounds_rps"])
                + " against "
                + ", ".join(f"{rps:.0f}" for rps in theirs["rounds_rps"])
            )
    for n in (1, 64):
        grpc, http = peer[f"digitserve, gRPC, {n} image(s)"], peer[f"digitserve, HTTP binary (h2load), {n} image(s)"]
        lines.append(
            f"- digitserve, {n} image(s) per request, the same tool (h2load): gRPC "
            f"**{grpc['rps'] / http['rps']:.2f}×** V2 HTTP's requests/s with binary tensors"
        )
    return lines


def pixels_lines(pixels: dict, model: str, args: argparse.Namespace) -> list[str]:
    lines = [
        f"**The V2 path against /classify_pixels**, binary bodies, the same images, {args.connections} connections:",
        "",
        *rows(pixels, {name: image_count(name) for name in pixels}),
        "",
    ]
    for n in (1, 64):
        base = pixels[f"/classify_pixels, {n} image(s)"]["rps"]
        digits = pixels[f"V2 digits (UINT8, binary), {n} image(s)"]["rps"] / base
        own = pixels[f"V2 {model} (FP32, binary), {n} image(s)"]["rps"] / base
        lines.append(
            f"- {n} image(s) per request: V2 `digits` **{digits:.2f}×**, V2 `{model}` **{own:.2f}×** "
            "/classify_pixels' requests/s"
        )
    return lines


def grid_lines(grid: dict, model: str) -> list[str]:
    lines = [
        f"**perf_analyzer** (tritonclient 2.40.0's) against digitserve's `{model}` model, HTTP (binary or JSON "
        "tensors) and gRPC (raw tensors; perf_analyzer shares one connection among up to six of its concurrent "
        "requests, so 16 requests travel on 3 connections, which the kernel spreads over the 2 workers):",
        "",
        "| protocol, tensors | concurrency | batch | images/s | requests/s | p50 ms | p99 ms |",
        "|---|---:|---:|---:|---:|---:|---:|",
        *(
            f"| {'gRPC, raw' if tensors == 'gRPC' else f'HTTP, {tensors}'} | {c} | {b} | {r['images_s']:.0f} "
            f"| {r['rps']:.0f} | {r['p50_ms']:.1f} | {r['p99_ms']:.1f} |"
            for (tensors, c, b), r in grid.items()
        ),
        "",
    ]
    for batch in (1, 64):
        grpc, http = grid[("gRPC", 16, batch)], grid[("binary", 16, batch)]
        lines.append(
            f"- concurrency 16, batch {batch}: gRPC **{grpc['rps'] / http['rps']:.2f}×** HTTP's requests/s with binary "
            f"tensors, p99 {grpc['p99_ms']:.1f} ms against {http['p99_ms']:.1f} ms"
        )
    return lines


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--repeats", type=int, default=3, help="alternating rounds per comparison; medians reported")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--copies", type=int, default=2, help="servers of each against MLServer (rounds pooled)")
    parser.add_argument(
        "--parts", nargs="+", choices=PARTS, default=PARTS, help="what to measure (default: all; docs get all)"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR)")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    for command, package in (("wrk", "wrk"), ("h2load", "nghttp2-client")):
        if not shutil.which(command):
            sys.exit(f"{command} not found: apt-get install {package}")
    card = read_card(MODEL)
    model = card["name"]
    pixels = load_split("test", args.data_dir).images[:64]
    images = to_model_input(pixels, *read_normalisation(card))
    tmp = Path(tempfile.mkdtemp())
    bodies: dict = {}
    for n in (1, 64):
        (tmp / f"json{n}").write_bytes(v2_json("image", "FP32", images[:n]))
        (tmp / f"raw{n}").write_bytes(pixels[:n].tobytes())
        bodies[f"json {n}"], bodies[f"raw {n}"] = tmp / f"json{n}", tmp / f"raw{n}"
        for kind, name, datatype, array in (
            ("pixels", "pixels", "UINT8", pixels[:n]),
            ("image", "image", "FP32", images[:n]),
        ):
            body, headers = v2_binary(name, datatype, array)
            (tmp / f"{kind}{n}.bin").write_bytes(body)
            bodies[f"binary {kind} {n}"] = (tmp / f"{kind}{n}.bin", headers)
        (tmp / f"grpc{n}.bin").write_bytes(grpc_framed(model, "image", "FP32", images[:n]))
        bodies[f"grpc {n}"] = tmp / f"grpc{n}.bin"
    data = perf_analyzer_data(images, tmp / "perf_analyzer.json")

    peer_results, pixel_results, grid = {}, {}, {}
    if "mlserver" in args.parts:
        peer_results = against_mlserver(model, bodies, tmp / "mlserver", args)
    with serving(SERVICE_ENV) as server:  # digitserve alone from here
        if "pixels" in args.parts:
            pixel_results = against_pixels(server, model, bodies, args)
        if "perf_analyzer" in args.parts:
            grid = perf_analyzer_grid(server, model, data)

    machine = report_machine()
    parts = [
        peer_lines(peer_results, args) if peer_results else [],
        pixels_lines(pixel_results, model, args) if pixel_results else [],
        grid_lines(grid, model) if grid else [],
    ]
    text = "\n\n".join("\n".join(part) for part in parts if part)
    print(text)
    if set(args.parts) != set(PARTS):
        return  # the docs show every part from one run
    section = (
        f"{START}\nMeasured {time.strftime('%Y-%m-%d')} on {machine}; wrk and perf_analyzer on the same machine "
        f"(wrk: {args.repeats} alternating rounds of {args.seconds} s, medians). digitserve ran with "
        + ", ".join(f"`{k}={v}`" for k, v in SERVICE_ENV.items())
        + " (shedding raised so that perf_analyzer's 64 × 64 images in flight are queued, not refused; batches of up"
        " to four 64-image requests, as MLServer merges up to 64 requests of any size into one call).\n\n"
        f"{text}\n\nCommand: `make bench-v2` (`python benchmarks/bench_v2.py --help` for the options).\n{END}"
    )
    write_section(args.out, section, START, END, "## Open Inference Protocol (`make bench-v2`)")


PARTS = ["mlserver", "pixels", "perf_analyzer"]
START, END = "<!-- bench_v2:start -->", "<!-- bench_v2:end -->"


if __name__ == "__main__":
    main()
