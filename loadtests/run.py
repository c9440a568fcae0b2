"""`make loadtest`: run a locust scenario headless, write its reports, check the service-level objectives.

    python loadtests/run.py                              # start the service, 20 users for 60 s, the mix, then stop
    python loadtests/run.py --host http://10.0.0.5:3000  # an already running service
    python loadtests/run.py --tags pixels --users 8      # one traffic shape alone
    python loadtests/run.py --workers 4                  # locust's master + 4 local worker processes
    python loadtests/run.py --scenario overload          # far past capacity and back; checks shedding and recovery

Writes reports/<scenario>_stats.csv (and the other CSVs) and reports/<scenario>.html (locust's report, with its
charts), prints a summary against loadtests/slo.yaml and exits 1 when an objective is broken, 2 when locust
itself failed. Locust runs as its own process: it gevent-patches whatever imports it.
"""

from __future__ import annotations

import argparse
import csv
import os
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import httpx
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
LOCUST = str(Path(sys.executable).with_name("locust"))
SAMPLE = HERE / "samples" / "mnist_00.png"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", help="the service's URL; without it, start the repo's service and stop it after")
    parser.add_argument("--scenario", choices=("mix", "smoke", "overload"), default="mix")
    parser.add_argument("--users", type=int, default=20, help="concurrent users (mix and smoke)")
    parser.add_argument("--spawn-rate", type=float, default=10, help="users started per second")
    parser.add_argument("--duration", default="60s", help="run time, locust's format: 30s, 5m (mix and smoke)")
    parser.add_argument("--tags", nargs="*", help="only these shapes: classify, batch, pixels")
    parser.add_argument("--workers", type=int, default=0, help="local locust worker processes (0: one process)")
    parser.add_argument("--out", type=Path, default=ROOT / "reports", help="folder for the CSV and HTML reports")
    parser.add_argument("--slo", type=Path, default=HERE / "slo.yaml")
    parser.add_argument("--service-workers", default="2", help="DIGITSERVE_WORKERS when starting the service")
    parser.add_argument("--record", action="store_true", help="write the figures to docs/loadtesting.md")
    return parser.parse_args(argv)


def locust_command(args: argparse.Namespace, host: str, prefix: Path) -> list[str]:
    overload = args.scenario == "overload"
    command = [
        LOCUST,
        "-f",
        str(HERE / ("overload.py" if overload else "locustfile.py")),
        "--headless",
        "--host",
        host,
        "--csv",
        str(prefix),
        "--html",
        f"{prefix}.html",
        "--only-summary",
        "--stop-timeout",
        "10",
        "--exit-code-on-error",
        "0",  # the objectives decide, below
    ]
    if not overload:  # the overload scenario's shape sets users and duration itself
        command += ["-u", str(args.users), "-r", str(args.spawn_rate), "-t", args.duration]
    if args.tags:
        command += ["--tags", *args.tags]
    if args.workers:
        command += ["--processes", str(args.workers)]
    return command


def read_stats(prefix: Path) -> dict[str, dict[str, float]]:
    """locust's <prefix>_stats.csv, by request name."""
    rows = {}
    with open(f"{prefix}_stats.csv", newline="") as f:
        for row in csv.DictReader(f):
            count = float(row["Request Count"] or 0)
            rows[row["Name"]] = {
                "requests": count,
                "failures": float(row["Failure Count"] or 0),
                "error_rate": float(row["Failure Count"] or 0) / count if count else 0.0,
                "p50_ms": float(row["50%"] or 0),
                "p95_ms": float(row["95%"] or 0),
                "p99_ms": float(row["99%"] or 0),
                "rps": float(row["Requests/s"] or 0),
            }
    return rows


def recovery_probe(host: str, count: int = 50) -> dict[str, float]:
    """After the load: sequential single-image requests, as an idle service answers them."""
    times, failures = [], 0
    with httpx.Client(base_url=host, timeout=10) as client:
        for _ in range(count):
            start = time.perf_counter()
            response = client.post("/classify", content=SAMPLE.read_bytes(), headers={"Content-Type": "image/png"})
            times.append((time.perf_counter() - start) * 1000)
            failures += response.status_code != 200
    cuts = statistics.quantiles(times, n=100, method="inclusive")  # cuts[k - 1]: the k-th percentile
    return {
        "requests": count,
        "failures": failures,
        "error_rate": failures / count,
        "p50_ms": statistics.median(times),
        "p95_ms": cuts[94],
        "p99_ms": cuts[98],
        "rps": 0.0,
    }


def check(stats: dict[str, dict[str, float]], objectives: dict[str, dict[str, float]]) -> list[str]:
    broken = []
    for name, limits in objectives.items():
        if name not in stats or not stats[name]["requests"]:
            continue
        measured = stats[name]
        for key, limit in limits.items():
            value = measured["rps" if key == "min_rps" else key]
            if (value < limit) if key == "min_rps" else (value > limit):
                broken.append(f"{name}: {key} {value:.4g} (objective {'>=' if key == 'min_rps' else '<='} {limit})")
    return broken


def summary(stats: dict[str, dict[str, float]]) -> str:
    lines = [f"{'request':<28} {'requests':>9} {'failed':>7} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}"]
    for name, s in stats.items():
        lines.append(
            f"{name:<28} {s['requests']:>9.0f} {s['failures']:>7.0f} {s['rps']:>8.1f} "
            f"{s['p50_ms']:>8.0f} {s['p95_ms']:>8.0f} {s['p99_ms']:>8.0f}"
        )
    return "\n".join(lines)


def markdown(stats: dict[str, dict[str, float]], args: argparse.Namespace) -> str:
    """The run's figures as docs/loadtesting.md shows them, with the command that measured them."""
    shape = "the overload shape" if args.scenario == "overload" else f"{args.users} users for {args.duration}"
    command = f"python loadtests/run.py --scenario {args.scenario}"
    if args.scenario != "overload":
        command += f" --users {args.users} --duration {args.duration}"
    command += f" --tags {' '.join(args.tags)}" if args.tags else ""
    rows = [
        f"| {name} | {s['requests']:,.0f} | {s['failures']:,.0f} | {s['rps']:.1f} | {s['p50_ms']:.0f} | "
        f"{s['p95_ms']:.0f} | {s['p99_ms']:.0f} |"
        for name, s in stats.items()
    ]
    return "\n".join(
        [
            f"Measured {time.strftime('%Y-%m-%d')}: {args.scenario}, {shape}, locust beside the service "
            f"({args.service_workers} workers) on the same machine:",
            "",
            "| request | requests | failed | requests/s | p50 ms | p95 ms | p99 ms |",
            "|---|---:|---:|---:|---:|---:|---:|",
            *rows,
            "",
            f"Command: `{command} --record`.",
        ]
    )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    prefix = args.out / args.scenario
    objectives = yaml.safe_load(args.slo.read_text())[args.scenario]
    environment = {**os.environ, "DIGITSERVE_SHED_OK": "1" if args.scenario == "overload" else ""}

    if args.host:
        service = nullcontext(args.host.rstrip("/"))
    else:
        from harness.server import running_service

        service = running_service({"DIGITSERVE_WORKERS": args.service_workers, "DIGITSERVE_ACCESS_LOG": "false"})

    with service as host:
        command = locust_command(args, host, prefix)
        print("$", " ".join(command), flush=True)
        done = subprocess.run(command, cwd=ROOT, env=environment)
        if done.returncode != 0 or not Path(f"{prefix}_stats.csv").exists():
            print(f"locust failed (exit {done.returncode})", file=sys.stderr)
            return 2
        stats = read_stats(prefix)
        if args.scenario == "overload":
            stats["recovery"] = recovery_probe(host)

    print(f"\n{args.scenario}: {summary(stats)}\n\nreports: {prefix}_stats.csv, {prefix}.html")
    broken = check(stats, objectives)
    if args.scenario == "overload":
        shed = sum(s["requests"] for name, s in stats.items() if name.endswith("[shed]"))
        print(f"shed (429 or 503): {shed:.0f} requests")
    for line in broken:
        print(f"OBJECTIVE BROKEN  {line}")
    print("all objectives met" if not broken else f"{len(broken)} objective(s) broken")
    if args.record:
        from harness.report import write_section

        name = "-".join([args.scenario, *(args.tags or [])])
        start, end = f"<!-- loadtest {name}:start -->", f"<!-- loadtest {name}:end -->"
        section = f"{start}\n{markdown(stats, args)}\n{end}"
        write_section(ROOT / "docs" / "loadtesting.md", section, start, end, f"### {name}", "# Load testing")
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
