"""`make bench-scaling`: what one replica serves, what HAProxy costs in front of it, and what a second replica adds
on this machine; figures for docs/scaling.md.

One cluster of 2 replicas (deploy/local/cluster.py, 1 worker each), driven with wrk (one 28x28 PNG per request to
/classify, 16 connections), in alternating rounds:
    a replica alone            wrk straight at replica1's port
    HAProxy + 1 replica        wrk at HAProxy, replica2 disabled on its runtime API
    HAProxy + 2 replicas       wrk at HAProxy, both enabled
CPU per request is each process's CPU time over the requests answered: the replicas' and HAProxy's apart.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

from deploy.local.cluster import ROOT, Cluster, new_cluster
from harness.digits import as_png
from harness.load import cpu_seconds, wrk
from harness.report import write_section
from training.data import load_split


def measure(cluster: Cluster, url: str, png: Path, seconds: int, connections: int) -> dict:
    replicas = [r.pid for r in cluster.replicas]
    before = sum(map(cpu_seconds, replicas)), cpu_seconds(cluster.haproxy)
    result = wrk(url, png, "image/png", connections, seconds)
    served = max(result["requests"], 1)
    result["replica_cpu_us"] = (sum(map(cpu_seconds, replicas)) - before[0]) / served * 1e6
    result["haproxy_cpu_us"] = (cpu_seconds(cluster.haproxy) - before[1]) / served * 1e6
    return result


def rounds(cluster: Cluster, png: Path, args: argparse.Namespace) -> dict[str, dict]:
    second = cluster.replicas[1].name
    setups = {
        "a replica alone (no HAProxy)": (f"http://{cluster.host}:{cluster.replicas[0].port}/classify", "disable"),
        "HAProxy + 1 replica": (f"{cluster.url}/classify", "disable"),
        "HAProxy + 2 replicas": (f"{cluster.url}/classify", "enable"),
    }
    runs: dict[str, list[dict]] = {name: [] for name in setups}
    for round in range(args.repeats + 1):  # the first: warm-up
        for name, (url, second_state) in setups.items():
            cluster.haproxy_command(f"{second_state} server", f"replicas/{second}")
            cluster.wait_in_rotation({second}, up=second_state == "enable")
            result = measure(cluster, url, png, args.seconds if round else 2, args.connections)
            if round:
                runs[name].append(result)
                print(f"  {name}: {result['rps']:.0f} requests/s", flush=True)
    return {name: {k: statistics.median(r[k] for r in results) for k in results[0]} for name, results in runs.items()}


def report(results: dict[str, dict], args: argparse.Namespace) -> list[str]:
    alone, one, two = results.values()
    return [
        f"/classify, one 28×28 PNG per request, {args.connections} connections, replicas of 1 worker each:",
        "",
        "| setup | requests/s | p50 ms | p99 ms | replicas' CPU µs per request | HAProxy's CPU µs per request |",
        "|---|---:|---:|---:|---:|---:|",
        *(
            f"| {name} | {r['rps']:.0f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['replica_cpu_us']:.0f} "
            f"| {r['haproxy_cpu_us']:.0f} |"
            for name, r in results.items()
        ),
        "",
        f"- HAProxy in front of one replica: **{one['rps'] / alone['rps']:.2f}×** its requests/s alone, "
        f"{one['haproxy_cpu_us']:.0f} µs of HAProxy's CPU per request",
        f"- a second replica: **{two['rps'] / one['rps']:.2f}×** one replica's requests/s behind HAProxy "
        f"({os.cpu_count()} cores here, shared with wrk and HAProxy)",
    ]


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "scaling.md")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    png = Path(tempfile.mkdtemp()) / "digit.png"
    png.write_bytes(as_png(load_split("test", args.data_dir).images[0]))
    cluster = new_cluster(2, 0, 0, 0.0, ROOT / "runs" / "bench-scaling")
    try:
        cluster.start()
        results = rounds(cluster, png, args)
    finally:
        cluster.stop()
    text = "\n".join(report(results, args))
    print(text)
    machine = f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"
    section = (
        f"{START}\nMeasured {time.strftime('%Y-%m-%d')} on {machine}, wrk on the same machine ({args.repeats} "
        f"alternating rounds of {args.seconds} s, medians).\n\n{text}\n\nCommand: `make bench-scaling`.\n{END}"
    )
    write_section(args.out, section, START, END, "## Replicas and the load balancer", title="# Scaling out")


START, END = "<!-- bench_scaling:start -->", "<!-- bench_scaling:end -->"


if __name__ == "__main__":
    main()
