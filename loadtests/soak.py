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
   Exit 0 on pass, 1 on fail, 2 when locust itself failed.
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
from pathlib import Path

import psutil

from harness.report import write_section
from harness.server import serving
from loadtests.run import LOCUST, read_stats

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

START, END = "<!-- soak:start -->", "<!-- soak:end -->"


def seconds(text: str) -> float:
    """'90', '90s', '10m', '1h' -> seconds."""
    units = {"s": 1, "m": 60, "h": 3600}
    return float(text[:-1]) * units[text[-1]] if text[-1] in units else float(text)


def locust(host: str, prefix: Path, users: int, duration: float, rate: float = 0.0) -> subprocess.Popen:
    command = [LOCUST, "-f", str(HERE / "locustfile.py"), "--headless", "--host", host, "--csv", str(prefix)]
    command += ["--csv-full-history", "--only-summary", "-u", str(users), "-r", str(users), "-t", f"{duration:.0f}s"]
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration", default="10m", help="steady-load time: 600, 600s, 10m, 1h")
    parser.add_argument("--fraction", type=float, default=0.7, help="of the measured capacity")
    parser.add_argument("--users", type=int, default=20)
    parser.add_argument("--capacity-seconds", type=float, default=30)
    parser.add_argument("--warmup", default="2m", help="memory growth is measured from here on")
    parser.add_argument("--every", type=float, default=10, help="seconds between memory samples")
    parser.add_argument("--max-growth", type=float, default=0.05, help="most RSS growth per worker after warm-up")
    parser.add_argument("--service-workers", default="2")
    parser.add_argument("--out", type=Path, default=ROOT / "reports")
    parser.add_argument("--record", action="store_true", help="write the figures to docs/reliability.md")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the service and locust on the way out
    duration, warmup = seconds(args.duration), seconds(args.warmup)
    if warmup + 3 * args.every > duration:
        parser.error("--duration must leave at least three samples after --warmup")
    args.out.mkdir(parents=True, exist_ok=True)

    env = {"DIGITSERVE_WORKERS": args.service_workers, "DIGITSERVE_ACCESS_LOG": "false"}
    with serving(env) as server:
        workers = {w.pid: w for w in server.workers()}
        print(f"capacity: locust mix, {args.users} users, no think time, {args.capacity_seconds:g} s", flush=True)
        if locust(server.url, args.out / "soak_capacity", args.users, args.capacity_seconds).wait() != 0:
            return 2
        capacity = read_stats(args.out / "soak_capacity")["Aggregated"]["rps"]
        target = args.fraction * capacity
        print(f"capacity {capacity:.0f} req/s; soaking at {target:.0f} req/s for {duration:g} s", flush=True)

        prefix = args.out / "soak"
        load = locust(server.url, prefix, args.users, duration, rate=target / args.users)
        samples: list[dict] = []  # one per sample: time, failures so far, RSS per worker pid
        start, replaced = time.monotonic(), False
        try:
            while load.poll() is None:
                time.sleep(args.every)
                current = {w.pid: w for w in server.workers()}
                rss = {pid: rss_mib(w) for pid, w in current.items() if pid in workers}
                sample = {"t": time.monotonic() - start, "failures": failures_so_far(prefix), "rss": rss}
                samples.append(sample)
                memory = " ".join(f"{mb:.1f}" for mb in rss.values())
                print(f"{sample['t']:6.0f} s  RSS MiB {memory}  failures {sample['failures']}", flush=True)
                replaced = replaced or set(current) != set(workers)
        finally:
            if load.poll() is None:
                load.terminate()
        if load.returncode != 0:
            return 2
        stats = read_stats(prefix)["Aggregated"]

    memory_csv = args.out / "soak_memory.csv"
    with open(memory_csv, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["seconds", "failures", *(f"rss_mib_worker_{pid}" for pid in workers)])
        for s in samples:
            writer.writerow([f"{s['t']:.0f}", s["failures"], *(f"{s['rss'].get(pid, 0):.1f}" for pid in workers)])

    # Window medians, not single samples: a large upload lifts a worker's RSS by ~20 MiB for a while (the
    # allocator keeps freed memory a time), which is not growth. A leak lifts every window after the first.
    settled = [s for s in samples if s["t"] >= warmup]
    window = max(3, len(settled) // 4)
    growth = {}
    for pid in workers:
        rss = [s["rss"].get(pid, 0) for s in settled]
        first, last = statistics.median(rss[:window]), statistics.median(rss[-window:])
        growth[pid] = (first, last, last / first - 1 if first else float("inf"), max(rss))
    failed = int(stats["failures"])
    verdict = failed == 0 and not replaced and all(g < args.max_growth for _, _, g, _ in growth.values())
    lines = [
        f"Soak of {duration / 60:.3g} min at {target:.0f} req/s ({100 * args.fraction:.0f} % of the {capacity:.0f} "
        f"req/s measured first), {args.service_workers} workers, locust's mix with {args.users} users on the same "
        f"machine; measured {time.strftime('%Y-%m-%d')}:",
        "",
        f"- requests: {stats['requests']:,.0f} at {stats['rps']:.0f} req/s, failed: {failed}, p50 "
        f"{stats['p50_ms']:.0f} ms, p99 {stats['p99_ms']:.0f} ms; workers replaced: {'yes' if replaced else 'none'}",
        *(
            f"- worker {i}: RSS {first:.1f} MiB after the {warmup:g} s warm-up, {last:.1f} MiB at the end: "
            f"{100 * g:+.2f} % (limit {100 * args.max_growth:g} %); highest sample {peak:.1f} MiB"
            for i, (first, last, g, peak) in enumerate(growth.values(), 1)
        ),
        f"  (medians of the first and last {window} samples after the warm-up: transient peaks are not growth)",
        f"- verdict: {'PASS' if verdict else 'FAIL'}; samples every {args.every:g} s in {shown(memory_csv)}",
        "",
        f'Command: `make soak SOAK_ARGS="--duration {args.duration}"` (`python loadtests/soak.py --help`).',
    ]
    print("\n".join(lines))
    if args.record:
        write_section(ROOT / "docs" / "reliability.md", "\n".join([START, *lines, END]), START, END, "## Soak")
    return 0 if verdict else 1


if __name__ == "__main__":
    sys.exit(main())
