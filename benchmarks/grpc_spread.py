"""`python benchmarks/grpc_spread.py`: where V2 gRPC stands against V2 HTTP as workers are added. Each worker runs
its own gRPC server on the shared port (SO_REUSEPORT): the kernel hands each new connection to one of them by a hash
of its addresses, and every call on that connection is served there, while HTTP's workers take connections from one
shared socket as they are free. This measures both protocols with 1 and 2 workers, and how the gRPC connections
fell, so that the spread can be told apart from the cost of each call.

For 1 and 2 workers, in alternating rounds: h2load (one call at a time on each of 16 connections) sends 1-image
ModelInfer calls over gRPC and the same tensor as a V2 HTTP binary request, and `ss` counts, halfway through each
gRPC round, how many of its connections each worker holds. Then the floor: the same calls answered by servers that
do nothing but send one fixed answer (benchmarks/echo_servers.py: grpcio's asyncio and thread-pool servers, and
uvicorn as BentoML runs it), and the CPU each call costs them beside what it costs the service with one worker.
Writes the "gRPC and the workers" section of docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import re
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

from benchmarks.bench_v2 import check_grpc, grpc_framed, v2_binary
from harness.load import cpu_seconds, h2load
from harness.report import machine, write_section
from harness.server import free_port, serving

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
    grpc_rps, http_rps, spreads, cpu = [], [], [], {"grpc": [], "http": []}
    with serving(env) as server:
        time.sleep(1)  # every worker's gRPC server listening, not only the first one's
        check_grpc(server.grpc, bodies["grpc"])  # h2load reads no gRPC status: errors would look fast
        for _ in range(args.rounds):
            before = cpu_seconds(server.process.pid)
            result, spread = grpc_round(server.grpc, bodies["grpc"], args.connections, args.seconds)
            cpu["grpc"].append(per_call(cpu_seconds(server.process.pid) - before, result))
            grpc_rps.append(result["rps"])
            spreads.append(spread)
            url = f"{server.url}/v2/models/mnist_cnn/infer"
            before = cpu_seconds(server.process.pid)
            http = h2load(url, bodies["http"], "application/octet-stream", args.connections, args.seconds, headers)
            cpu["http"].append(per_call(cpu_seconds(server.process.pid) - before, http))
            http_rps.append(http["rps"])
    return {"grpc": grpc_rps, "http": http_rps, "spreads": spreads, "cpu": cpu}


def per_call(seconds: float, result: dict) -> float:
    """CPU µs per answered call."""
    return 1e6 * seconds / max(1, result["requests"])


def listening(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


def floor(kind: str, body: Path, headers: dict, args: argparse.Namespace) -> tuple[float, float]:
    """Requests/s and CPU µs per call of an echo server (benchmarks/echo_servers.py), the median of its rounds."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "benchmarks.echo_servers", kind, str(port)], cwd=ROOT)
    try:
        deadline = time.monotonic() + 30
        while not listening(port):
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the {kind} echo server did not start")
            time.sleep(0.1)
        grpc = kind.startswith("grpc")
        url = f"http://127.0.0.1:{port}" + (INFER if grpc else "/v2/models/mnist_cnn/infer")
        content_type, sent = ("application/grpc", {}) if grpc else ("application/octet-stream", headers)
        if grpc:
            check_grpc(f"127.0.0.1:{port}", body)
        rps, cpu = [], []
        for _ in range(args.rounds):
            before = cpu_seconds(server.pid)
            result = h2load(url, body, content_type, args.connections, args.seconds, sent)
            if result["errors"]:
                raise RuntimeError(f"the {kind} echo server answered {result['errors']} calls with errors")
            cpu.append(per_call(cpu_seconds(server.pid) - before, result))
            rps.append(result["rps"])
        return statistics.median(rps), statistics.median(cpu)
    finally:
        server.kill()
        server.wait()


def floor_lines(bodies: dict[str, Path], headers: dict, args: argparse.Namespace, service: dict) -> list[str]:
    """The floor table: the echo servers' requests/s and CPU per call beside the service's (one worker), and what
    gRPC at 1.2x HTTP's requests/s would allow a call to cost."""
    aio, threads = floor("grpc-aio", bodies["grpc"], headers, args), floor("grpc-sync", bodies["grpc"], headers, args)
    uvicorn = floor("http", bodies["http"], headers, args)
    rows = {
        "grpcio, asyncio server (uvloop), a fixed answer": aio,
        "grpcio, thread-pool server (4 threads), a fixed answer": threads,
        "uvicorn (httptools, uvloop), a fixed answer": uvicorn,
    }
    for protocol, name in (("grpc", "gRPC"), ("http", "HTTP binary")):
        rows[f"digitserve, 1 worker, {name}"] = (
            statistics.median(service[protocol]),
            statistics.median(service["cpu"][protocol]),
        )
    lines = ["| server, 1-image V2 infer calls | requests/s | CPU µs per call |", "|---|---:|---:|"]
    lines += [f"| {name} | {rps:.0f} | {cpu:.0f} |" for name, (rps, cpu) in rows.items()]
    grpc, http = (statistics.median(service["cpu"][protocol]) for protocol in ("grpc", "http"))
    lines += [
        "",
        f"gRPC at 1.2× HTTP's requests/s, on workers whose cores are busy, allows a gRPC call {http / 1.2:.0f} µs of "
        f"CPU, the model's part included; grpcio's own servers spend {aio[1]:.0f} µs (asyncio) and "
        f"{threads[1]:.0f} µs (thread pool) on a call they answer with nothing to compute. Beyond its library's "
        f"floor, a call costs the service {grpc - aio[1]:.0f} µs over gRPC and "
        f"{http - uvicorn[1]:.0f} µs over HTTP.",
    ]
    print("\n".join(lines), flush=True)
    return lines


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
        floors = floor_lines(bodies, headers, args, results[1])
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
            "What a call costs, against servers that answer it with a fixed answer and do nothing else "
            "(`benchmarks/echo_servers.py`), one process each, the same h2load rounds:",
            "",
            *floors,
            "",
            "Command: `python benchmarks/grpc_spread.py` (`--help`).",
            END,
        ]
    )
    write_section(args.out, section, START, END, "## gRPC and the workers (`benchmarks/grpc_spread.py`)")
    print(section)


if __name__ == "__main__":
    main()
