"""What the load benchmarks share: wrk runs (a C load generator, so that the client is cheap), h2load runs for
gRPC (nghttp2's C load generator: HTTP/2, which wrk does not speak), the CPU time a server's process tree spends,
and rounds that take turns between servers, the others paused, so that a slow spell of a shared machine hits them
alike. benchmarks/bench_http.py, bench_v2.py, bench_container.py and deploy/local/bench_scaling.py use them."""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psutil

LUA = Path(__file__).with_name("wrk_report.lua")  # wrk reports its figures as one JSON line


def wrk(
    url: str, body: Path, content_type: str, connections: int, seconds: int, headers: dict[str, str] | None = None
) -> dict:
    lines = "\n".join(f"{name}: {value}" for name, value in (headers or {}).items())
    env = {**os.environ, "BODY_FILE": str(body), "CONTENT_TYPE": content_type, "HEADERS": lines}
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


def h2load(url: str, body: Path, content_type: str, connections: int, seconds: int, headers: dict[str, str]) -> dict:
    """wrk's figures from nghttp2's h2load: one request at a time on each of `connections` connections, HTTP/2
    for gRPC (`application/grpc`: its body a framed message, as benchmarks/bench_v2.py writes them), else
    HTTP/1.1. Latencies from h2load's per-request log. An error is a connection's failure or a status other than
    200; a gRPC call's own status travels in the trailers, which h2load does not read: the benchmark checks a call
    of each target with a real client first."""
    grpc = content_type == "application/grpc"
    sent = {"content-type": content_type, **({"te": "trailers"} if grpc else {}), **headers}
    with tempfile.NamedTemporaryFile(suffix=".log") as log:
        command = ["h2load", f"-c{connections}", "-m1", f"-D{seconds}", "-d", str(body), f"--log-file={log.name}"]
        command += [] if grpc else ["--h1"]
        command += [arg for name, value in sent.items() for arg in ("-H", f"{name}: {value}")]
        out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
        rows = [line.split("\t") for line in Path(log.name).read_text().splitlines() if line]
    failed = int(next(line for line in out.splitlines() if line.startswith("requests:")).split()[9])  # "... N failed,"
    times = sorted(int(row[2]) / 1e3 for row in rows)
    pick = (lambda q: times[min(len(times) - 1, int(q * len(times)))]) if times else (lambda q: float("nan"))
    return {
        "requests": len(rows),
        "seconds": float(seconds),
        "rps": len(rows) / seconds,
        "errors": failed + sum(row[1] != "200" for row in rows),
        "p50_ms": pick(0.5),
        "p90_ms": pick(0.9),
        "p99_ms": pick(0.99),
    }


TOOLS = {"wrk": wrk, "h2load": h2load}


def median_of(runs: list[dict]) -> dict:
    """Each figure's median over the runs, and each run's requests/s (`rounds_rps`), to show how they spread."""
    return {**{k: statistics.median(r[k] for r in runs) for k in runs[0]}, "rounds_rps": [r["rps"] for r in runs]}


def cpu_seconds(pid: int) -> float:
    """User and system CPU time of a process and all its descendants so far, those that ended included (a worker
    that a supervisor replaced mid-run: its time is in its parent's children_* once reaped)."""
    total = 0.0
    root = psutil.Process(pid)
    for process in [root, *root.children(recursive=True)]:
        try:
            times = process.cpu_times()
            total += times.user + times.system + times.children_user + times.children_system
        except psutil.Error:  # gone meanwhile
            pass
    return total


@dataclass
class Target:
    url: str  # the full URL to POST to
    body: Path
    content_type: str
    pid: int  # the server's top process: its tree's CPU time is charged to the requests
    headers: dict[str, str] = field(default_factory=dict)
    tool: str = "wrk"  # or "h2load" (TOOLS): gRPC needs it


COPY = " #"  # "name #1": the second server of `name`; alternate() reports a name's servers together


def alternate(targets: dict[str, Target], rounds: int, seconds: int, connections: int) -> dict[str, dict]:
    """`rounds` wrk runs of each target, taking turns; medians, with CPU microseconds per request. Targets named
    `name #k` (copies of one server, started apart) are reported as `name`, over all their runs: a server started
    once can run faster or slower than another of the same code for its whole life (measured: two of each of two
    variants, 1 worker, 4 rounds: each pair's servers apart by up to 10%, the variants' order reversed from one
    pair to the other), which a comparison of one server each would take for the code's doing."""
    runs: dict[str, list[dict]] = {name: [] for name in targets}
    try:
        for round in range(rounds + 1):  # the first: warm-up
            for name, target in targets.items():
                only(target, targets.values())
                before = cpu_seconds(target.pid)
                length = seconds if round else 2
                load = TOOLS[target.tool]
                result = load(target.url, target.body, target.content_type, connections, length, target.headers)
                result["cpu_us"] = (cpu_seconds(target.pid) - before) / max(result["requests"], 1) * 1e6
                if round:
                    runs[name].append(result)
                    print(f"  {name}: {result['rps']:.0f} requests/s, {result['cpu_us']:.0f} µs CPU each", flush=True)
    finally:
        for target in targets.values():
            os.killpg(target.pid, signal.SIGCONT)
    grouped: dict[str, list[dict]] = {}
    for name, results in runs.items():
        grouped.setdefault(name.split(COPY)[0], []).extend(results)
    return {name: median_of(results) for name, results in grouped.items()}


def only(running: Target, targets) -> None:
    """Pause every server but `running` (SIGSTOP to its process group): an idle server is not always idle
    (measured here: LitServe's two idle workers poll their queues at 0.4 cores), and none may take CPU from the
    one measured."""
    for target in targets:
        if target.pid != running.pid:
            os.killpg(target.pid, signal.SIGSTOP)
    os.killpg(running.pid, signal.SIGCONT)
