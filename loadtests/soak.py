"""`make soak`: a long steady load at ~70 % of measured capacity; passes only if memory stays flat and nothing fails.

    python loadtests/soak.py                          # 10 minutes (the default)
    python loadtests/soak.py --duration 30m --record  # the recorded run: also writes its figures to docs/reliability.md

1. Starts the service (2 workers, as deployed on 2 cores) and measures its capacity: locust's traffic mix with no
   think time for --capacity-seconds; capacity is the requests/s served (with locust on the same machine, the
   capacity of this set-up, not of the service alone).
2. Drives it at --fraction of that rate (each user rate-limited by locust's constant_throughput) for --duration,
   sampling every worker's resident memory (RSS) and locust's failure count every --every seconds into
   reports/soak_memory.csv.
3. Passes when no request failed, no worker was replaced, and each worker's RSS at the end is less than
   --max-growth above its RSS once warmed up: medians over the first and the last quarter of the samples after
   --warmup (at least three each), since one large upload lifts RSS for a while without any growth.
   Exit 0 on pass, 1 on fail, 2 when locust itself failed or the run was too short to judge.
"""

from __future__ import annotations

import argparse
import csv
import os
import signal
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from harness.report import write_section
from harness.server import serving
from loadtests.run import LOCUST, read_stats

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

START, END = "<!-- soak:start -->", "<!-- soak:end -->"


def locust(host: str, prefix: Path, users: int, duration: str, rate: float = 0.0) -> subprocess.Popen:
    """locust's mix headless for `duration` (locust's own format: 30s, 10m, 1h30m)."""
    command = [LOCUST, "-f", str(HERE / "locustfile.py"), "--headless", "--host", host, "--csv", str(prefix)]
    command += ["--csv-full-history", "--only-summary", "-u", str(users), "-r", str(users), "-t", duration]
    env = {**os.environ, "DIGITSERVE_USER_RATE": f"{rate:.4f}" if rate else ""}
    return subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)


def shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def rss_mib(process: psutil.Process) -> float:
    try:
        return process.memory_info().rss / 2**20
    except psutil.Error:  # died between listing and reading: counted as replaced
        return 0.0


def failures_so_far(prefix: Path) -> int:
    """The cumulative failure count on the last 'Aggregated' row locust wrote to its history CSV."""
    try:
        with open(f"{prefix}_stats_history.csv", newline="") as f:
            rows = [row for row in csv.DictReader(f) if row["Name"] == "Aggregated"]
    except OSError:  # not written yet
        return 0
    return int(float(rows[-1]["Total Failure Count"] or 0)) if rows else 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", default="10m", help="steady-load time, in locust's -t format: 600s, 10m, 1h30m")
    parser.add_argument("--fraction", type=float, default=0.7, help="of the measured capacity")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--capacity-seconds", type=int, default=30)
    parser.add_argument("--warmup", type=float, default=120, help="seconds; memory growth is measured from here on")
    parser.add_argument("--every", type=float, default=10, help="seconds between memory samples")
    parser.add_argument("--max-growth", type=float, default=0.05, help="most RSS growth per worker after warm-up")
    parser.add_argument("--service-workers", default="2")
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    parser.add_argument("--record", action="store_true", help="write the figures to docs/reliability.md")
    return parser.parse_args(argv)


@dataclass
class Soak:
    """What one run measured."""

    capacity: float  # requests/s with no think time
    target: float  # the steady rate driven
    samples: list[dict] = field(default_factory=list)  # time, failures so far, RSS per worker pid
    replaced: bool = False  # a worker was replaced meanwhile
    stats: dict = field(default_factory=dict)  # locust's aggregated figures of the steady run


def measure_capacity(url: str, args: argparse.Namespace) -> float | None:
    """Requests/s of locust's mix with no think time; None if locust failed."""
    print(f"capacity: locust mix, {args.users} users, no think time, {args.capacity_seconds:g} s", flush=True)
    if locust(url, args.out / "soak_capacity", args.users, f"{args.capacity_seconds}s").wait() != 0:
        return None
    return read_stats(args.out / "soak_capacity")["Aggregated"]["rps"]


def drive_and_sample(server, workers: dict, soak: Soak, args: argparse.Namespace) -> bool:
    """Drive the service at soak.target for the duration, sampling every worker's RSS; False if locust failed."""
    print(f"capacity {soak.capacity:.0f} req/s; soaking at {soak.target:.0f} req/s for {args.duration}", flush=True)
    prefix = args.out / "soak"
    load = locust(server.url, prefix, args.users, args.duration, rate=soak.target / args.users)
    start = time.monotonic()
    try:
        while load.poll() is None:
            time.sleep(args.every)
            current = {w.pid: w for w in server.workers()}
            rss = {pid: rss_mib(w) for pid, w in current.items() if pid in workers}
            sample = {"t": time.monotonic() - start, "failures": failures_so_far(prefix), "rss": rss}
            soak.samples.append(sample)
            memory = " ".join(f"{mb:.1f}" for mb in rss.values())
            print(f"{sample['t']:6.0f} s  RSS MiB {memory}  failures {sample['failures']}", flush=True)
            soak.replaced = soak.replaced or set(current) != set(workers)
    finally:
        if load.poll() is None:
            load.terminate()
    if load.returncode != 0:
        return False
    soak.stats = read_stats(prefix)["Aggregated"]
    return True


def write_samples(path: Path, soak: Soak, workers: list[int]) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seconds", "failures", *(f"rss_mib_worker_{pid}" for pid in workers)])
        for s in soak.samples:
            writer.writerow([f"{s['t']:.0f}", s["failures"], *(f"{s['rss'].get(pid, 0):.1f}" for pid in workers)])


def memory_growth(soak: Soak, workers: list[int], warmup: float) -> tuple[dict[int, tuple], int]:
    """Per worker (RSS after warm-up, at the end, growth, highest sample), and the window used; empty if the run
    left fewer than three samples after the warm-up.

    Window medians, not single samples: a large upload lifts a worker's RSS for a while (the allocator keeps freed
    memory a time), which is not growth. A leak lifts every window after the first."""
    settled = [s for s in soak.samples if s["t"] >= warmup]
    if len(settled) < 3:
        return {}, 0
    window = max(3, len(settled) // 4)
    growth = {}
    for pid in workers:
        rss = [s["rss"].get(pid, 0) for s in settled]
        first, last = statistics.median(rss[:window]), statistics.median(rss[-window:])
        growth[pid] = (first, last, last / first - 1 if first else float("inf"), max(rss))
    return growth, window


def report(
    soak: Soak, growth: dict, window: int, verdict: bool, memory_csv: Path, args: argparse.Namespace
) -> list[str]:
    stats = soak.stats
    return [
        f"Soak of {args.duration} at {soak.target:.0f} req/s ({100 * args.fraction:.0f} % of the "
        f"{soak.capacity:.0f} req/s measured first), {args.service_workers} workers, locust's mix with {args.users} "
        f"users on the same machine; measured {time.strftime('%Y-%m-%d')}:",
        "",
        f"- requests: {stats['requests']:,.0f} at {stats['rps']:.0f} req/s, failed: {int(stats['failures'])}, p50 "
        f"{stats['p50_ms']:.0f} ms, p99 {stats['p99_ms']:.0f} ms; workers replaced: "
        f"{'yes' if soak.replaced else 'none'}",
        *(
            f"- worker {i}: RSS {first:.1f} MiB after the {args.warmup:g} s warm-up, {last:.1f} MiB at the "
            f"end: {100 * g:+.2f} % (limit {100 * args.max_growth:g} %); highest sample {peak:.1f} MiB"
            for i, (first, last, g, peak) in enumerate(growth.values(), 1)
        ),
        f"  (medians of the first and last {window} samples after the warm-up: transient peaks are not growth)",
        f"- verdict: {'PASS' if verdict else 'FAIL'}; samples every {args.every:g} s in {shown(memory_csv)}",
        "",
        f'Command: `make soak SOAK_ARGS="--duration {args.duration}"` (`python loadtests/soak.py --help`).',
    ]


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the service and locust on the way out
    args.out.mkdir(parents=True, exist_ok=True)
    env = {"DIGITSERVE_WORKERS": args.service_workers, "DIGITSERVE_ACCESS_LOG": "false"}
    with serving(env) as server:
        workers = {w.pid: w for w in server.workers()}
        capacity = measure_capacity(server.url, args)
        if capacity is None:
            return 2
        soak = Soak(capacity, args.fraction * capacity)
        if not drive_and_sample(server, workers, soak, args):
            return 2

    memory_csv = args.out / "soak_memory.csv"
    write_samples(memory_csv, soak, list(workers))
    growth, window = memory_growth(soak, list(workers), args.warmup)
    if not growth:
        print(f"fewer than three samples after the {args.warmup:g} s warm-up: lengthen --duration", file=sys.stderr)
        return 2
    verdict = (
        soak.stats["failures"] == 0 and not soak.replaced and all(g < args.max_growth for _, _, g, _ in growth.values())
    )
    lines = report(soak, growth, window, verdict, memory_csv, args)
    print("\n".join(lines))
    if args.record:
        write_section(ROOT / "docs" / "reliability.md", "\n".join([START, *lines, END]), START, END, "## Soak")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
