"""`python benchmarks/grpc_spread.py`: where V2 gRPC stands against V2 HTTP as workers are added. Each worker runs
its own gRPC server on the shared port (SO_REUSEPORT): the kernel hands each new connection to one of them by a hash
of its addresses, and every call on that connection is served there, while HTTP's workers take connections from one
shared socket as they are free. This measures both protocols with 1 and 2 workers, and how the gRPC connections
fell, so that the spread can be told apart from the cost of each call.

For 1 and 2 workers, in alternating rounds: h2load (one call at a time on each of 16 connections) sends 1-image
ModelInfer calls over gRPC and the same tensor as a V2 HTTP binary request, and `ss` counts, halfway through each
gRPC round, how many of its connections each worker holds. Writes the "gRPC and the workers" section of
docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.bench_v2 import check_grpc, grpc_framed, v2_binary
from harness.load import h2load
from harness.report import machine, write_section
from harness.server import serving

ROOT = Path(__file__).resolve().parent.parent
START, END = "<!-- grpc_spread:start -->", "<!-- grpc_spread:end -->"
INFER = "/inference.GRPCInferenceService/ModelInfer"


def connections_per_worker(port: int) -> list[int]:
    """How many established connections to `port` each process holds, most first."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True, check=True
    ).stdout
    return sorted(Counter(re.findall(r"pid=(\d+)", out)).values(), reverse=True)


def grpc_round(address: str, body: Path, connections: int, seconds: int) -> tuple[dict, list[int]]:
    """One h2load round of gRPC calls, and the connections per worker seen halfway through it."""
    seen: list[int] = []
    port = int(address.rsplit(":", 1)[1])
    timer = threading.Timer(seconds / 2, lambda: seen.extend(connections_per_worker(port)))
    timer.start()
    result = h2load(f"http://{address}{INFER}", body, "application/grpc", connections, seconds, {})
    timer.join()
    return result, seen


def measure(workers: int, bodies: dict[str, Path], headers: dict, args: argparse.Namespace) -> dict:
    env = {"DIGITSERVE_WORKERS": str(workers), "DIGITSERVE_ACCESS_LOG": "false"}
    grpc_rps, http_rps, spreads = [], [], []
    with serving(env) as server:
        time.sleep(1)  # every worker's gRPC server listening, not only the first one's
        check_grpc(server.grpc, bodies["grpc"])  # h2load reads no gRPC status: errors would look fast
        for _ in range(args.rounds):
            result, spread = grpc_round(server.grpc, bodies["grpc"], args.connections, args.seconds)
            grpc_rps.append(result["rps"])
            spreads.append(spread)
            url = f"{server.url}/v2/models/mnist_cnn/infer"
            http = h2load(url, bodies["http"], "application/octet-stream", args.connections, args.seconds, headers)
            http_rps.append(http["rps"])
    return {"grpc": grpc_rps, "http": http_rps, "spreads": spreads}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=5, help="length of each h2load run")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of each protocol per worker count")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "benchmarks.md")
    args = parser.parse_args()

    lines = [
        "| workers | gRPC requests/s (median) | HTTP binary requests/s (median) | gRPC / HTTP | each gRPC round: "
        "requests/s (connections per worker) |",
        "|---:|---:|---:|---:|---|",
    ]
    image = np.zeros((1, 1, 28, 28), np.float32)
    body, headers = v2_binary("image", "FP32", image)
    with tempfile.TemporaryDirectory() as folder:
        bodies = {"grpc": Path(folder) / "grpc.bin", "http": Path(folder) / "http.bin"}
        bodies["grpc"].write_bytes(grpc_framed("mnist_cnn", "image", "FP32", image))
        bodies["http"].write_bytes(body)
        results = {workers: measure(workers, bodies, headers, args) for workers in (1, 2)}
    for workers, found in results.items():
        grpc, http = statistics.median(found["grpc"]), statistics.median(found["http"])
        rounds = ", ".join(
            f"{rps:.0f} ({'+'.join(map(str, spread))})"
            for rps, spread in zip(found["grpc"], found["spreads"], strict=True)
        )
        lines.append(f"| {workers} | {grpc:.0f} | {http:.0f} | **{grpc / http:.2f}×** | {rounds} |")
        print(lines[-1], flush=True)
    section = "\n".join(
        [
            START,
            f"Measured {time.strftime('%Y-%m-%d')} on {machine()}: 1-image V2 infer requests of the model's FP32 "
            f"tensor by h2load, one call at a time on each of {args.connections} connections, {args.seconds} s a "
            "round, gRPC and HTTP rounds alternating; the connections each worker held, counted by `ss` halfway "
            "through each gRPC round.",
            "",
            *lines,
            "",
            "Each gRPC connection stays with the worker the kernel gave it (SO_REUSEPORT hashes the connection's "
            "addresses); HTTP's workers take connections from one shared socket as they are free. Rounds with an "
            "even and an uneven spread tell how much the spread costs; what is left is each call's CPU (the "
            "bench-v2 table's \"CPU µs per request\" column), which one worker's idle second core hides.",
            "",
            "Command: `python benchmarks/grpc_spread.py` (`--help`).",
            END,
        ]
    )
    write_section(args.out, section, START, END, "## gRPC and the workers (`benchmarks/grpc_spread.py`)")
    print(section)


if __name__ == "__main__":
    main()
