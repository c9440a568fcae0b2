"""`make rollout`: the cluster's replicas restarted one at a time under locust load, then one killed, and what the
clients saw: a rolling restart must fail no request; a killed replica may fail at most the requests it held.

    python deploy/local/rollout.py [--replicas 2] [--users 10] [--record]

It starts a cluster of its own (deploy/local/cluster.py, in runs/rollout/) and locust against HAProxy, with every
answer logged (loadtests/locustfile.py, DIGITSERVE_ANSWER_LOG). Then, for each replica: SIGTERM to its arbiter
(as Kubernetes signals PID 1) -> it drains (/readyz 503, still serving) -> HAProxy takes it out of rotation ->
it exits -> a new one starts on its port -> ready -> HAProxy puts it back. Then SIGKILL to one replica's processes:
HAProxy's checks find it down, a replacement starts and serves. Prints the figures (failures, the longest gap
between answers, how long each step took); --record writes them into docs/scaling.md. Exits 1 if the rolling
restart failed any request, or the kill failed more requests than were in flight when it died or any sent after.
"""

from __future__ import annotations

import argparse
import itertools
import os
import signal
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from deploy.local.cluster import ROOT, Cluster, kill_tree, new_cluster, process_tree, wait_gone
from harness.report import write_section

FOLDER = ROOT / "runs" / "rollout"


@dataclass
class Answer:
    time: float  # unix time it arrived
    sent: float  # unix time its request was sent
    ok: bool
    status: int
    name: str


def read_answers(path: Path) -> list[Answer]:
    answers = []
    for line in path.read_text().splitlines():
        stamp, milliseconds, outcome, status, name = line.split(" ", 4)
        answers.append(
            Answer(float(stamp), float(stamp) - float(milliseconds) / 1000, outcome == "ok", int(status), name)
        )
    return sorted(answers, key=lambda a: a.time)


@contextmanager
def locust_load(url: str, users: int, log: Path, folder: Path, rate: float = 0.0):
    """locust (its own process: it gevent-patches whatever imports it) sending the mix to `url` until the block
    ends, each user `rate` requests/s at most (0: as fast as it is answered); every answer appended to `log`."""
    env = {**os.environ, "DIGITSERVE_ANSWER_LOG": str(log), "DIGITSERVE_USER_RATE": f"{rate:.4f}" if rate else ""}
    command = [
        sys.executable,
        *("-m", "locust", "-f", str(ROOT / "loadtests" / "locustfile.py"), "--headless"),
        *("--users", str(users), "--spawn-rate", str(users), "--host", url, "--only-summary"),
    ]
    with open(folder / "locust.log", "w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)  # locust stops its users and exits
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()


def restart_each(cluster: Cluster) -> list[dict]:
    """Each replica in turn: SIGTERM, out of rotation, exited, replaced, ready, back in rotation."""
    steps = []
    for replica in cluster.replicas:
        start = time.monotonic()
        os.kill(replica.pid, signal.SIGTERM)  # the arbiter only: it passes the signal on to its worker
        out_of_rotation = cluster.wait_in_rotation({replica.name}, up=False)
        if not wait_gone(replica.pid, 60):
            raise TimeoutError(f"{replica.name} did not exit within 60 s of SIGTERM")
        exited = time.monotonic() - start
        cluster.start_replica(replica)
        cluster.save()
        cluster.wait_ready(replica)
        ready = time.monotonic() - start
        back = ready + cluster.wait_in_rotation({replica.name})
        steps.append({"replica": replica.name, "out": out_of_rotation, "exited": exited, "ready": ready, "back": back})
        print(
            f"  {replica.name}: out of rotation {out_of_rotation:.1f} s after SIGTERM, exited at {exited:.1f} s, "
            f"replacement ready at {ready:.1f} s, in rotation at {back:.1f} s",
            flush=True,
        )
    return steps


def kill_one(cluster: Cluster) -> dict:
    """SIGKILL to one replica's processes, then a replacement, as a supervisor would."""
    victim = cluster.replicas[0]
    doomed = process_tree(victim.pid)  # the arbiter and its worker (which leads its own session)
    start, at = time.monotonic(), time.time()
    kill_tree(doomed)
    # A killed process holds its sockets until its exit has torn down its memory (ms for a replica): what reaches
    # them until then is in flight on it too. Polled every ms: `dead` bounds which requests count as in flight.
    deadline = time.monotonic() + 10
    for process in doomed:
        wait_gone(process.pid, max(0.0, deadline - time.monotonic()), poll=0.001)
    dead = time.time()
    detected = cluster.wait_in_rotation({victim.name}, up=False)
    cluster.start_replica(victim)
    cluster.save()
    cluster.wait_ready(victim)
    back = time.monotonic() - start + cluster.wait_in_rotation({victim.name})
    served = int(cluster.server_stats()[victim.name]["hrsp_2xx"])  # counted per server since HAProxy started
    deadline = time.monotonic() + 30
    while int(cluster.server_stats()[victim.name]["hrsp_2xx"]) == served and time.monotonic() < deadline:
        time.sleep(0.05)
    serving = time.monotonic() - start
    print(
        f"  SIGKILL {victim.name}: out of rotation after {detected:.1f} s, replacement in rotation at {back:.1f} s, "
        f"answering at {serving:.1f} s",
        flush=True,
    )
    return {
        "replica": victim.name,
        "at": at,
        "dead": dead,
        "detected": detected,
        "back": back,
        "serving": serving,
    }


def at_the_kill(answers: list[Answer], at: float, dead: float) -> dict:
    """The clients' requests in flight (sent, not yet answered) while the replica was being killed, on any replica,
    and the failures sent after it was dead: HAProxy must route those around it, so there should be none."""
    return {
        "in_flight": sum(a.sent <= dead and a.time >= at for a in answers),
        "failed_later": sorted(f"{a.name} {a.status}" for a in answers if not a.ok and a.sent > dead),
    }


def window(answers: list[Answer], start: float, end: float) -> dict:
    """Failures and gaps between successive answers in [start, end] (unix times)."""
    inside = [a for a in answers if start <= a.time <= end]
    ok = [a.time for a in inside if a.ok]
    gaps = [b - a for a, b in itertools.pairwise(ok)]
    return {
        "answers": len(inside),
        "failures": sum(not a.ok for a in inside),
        "failed": sorted({f"{a.name} {a.status}" for a in inside if not a.ok}),
        "longest_gap": max(gaps, default=float("inf")),
        "median_gap": statistics.median(gaps) if gaps else float("inf"),
        "seconds": end - start,
    }


def run(args: argparse.Namespace) -> dict:
    """A cluster of `args.replicas` started, restarted under load (`under_load`), and stopped: the figures."""
    args.folder.mkdir(parents=True, exist_ok=True)
    if (args.folder / "state.json").exists():  # a run that did not finish: its processes
        Cluster.load(args.folder).stop()
    prometheus_port = args.prometheus_port if args.prometheus else 0
    cluster = new_cluster(args.replicas, 0, prometheus_port, args.drain_seconds, args.folder)
    print(f"starting {args.replicas} replicas behind HAProxy ...", flush=True)
    try:
        cluster.start()
        return under_load(cluster, args)
    finally:
        cluster.stop()


def under_load(cluster: Cluster, args: argparse.Namespace) -> dict:
    """On a running cluster, under locust's load: a while of steady load, each replica restarted in turn, then
    (unless args.no_kill) one killed with SIGKILL and replaced. Every answer is logged in args.folder."""
    log = args.folder / "answers.log"
    log.unlink(missing_ok=True)
    with locust_load(cluster.url, args.users, log, args.folder, args.user_rate):
        time.sleep(args.warmup)
        steady_start = time.time() - args.warmup / 2
        steady_end = rollout_start = time.time()
        print("rolling restart under load ...", flush=True)
        steps = restart_each(cluster)
        time.sleep(args.settle)
        rollout_end = kill_start = time.time()
        killed = None
        if not args.no_kill:
            print("one replica killed under load ...", flush=True)
            killed = kill_one(cluster)
            time.sleep(args.settle)
        kill_end = time.time()
    scraped = None
    if cluster.prometheus_port:
        scraped = {r["metric"]["instance"]: r["value"][1] for r in cluster.prometheus_query('up{job="digitserve"}')}
    answers = read_answers(log)
    if killed:
        killed |= at_the_kill(answers, killed["at"], killed["dead"])
    return {
        "replicas": len(cluster.replicas),
        "users": args.users,
        "user_rate": args.user_rate,
        "steady": window(answers, steady_start, steady_end),
        "rollout": window(answers, rollout_start, rollout_end),
        "steps": steps,
        "kill": window(answers, kill_start, kill_end) if killed else None,
        "killed": killed,
        "prometheus_up": scraped,
    }


def report(result: dict) -> list[str]:
    steady, rollout = result["steady"], result["rollout"]
    paced = f", {result['user_rate']:g} requests/s each at most" if result["user_rate"] else ""
    lines = [
        f"{result['replicas']} replicas (1 worker each) behind HAProxy, {result['users']} locust users{paced} "
        "(the mix):",
        "",
        "| phase | seconds | answers | failed | longest gap between answers | median gap |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    phases = {"steady load": steady, "rolling restart": rollout}
    if result["kill"]:
        phases["one replica killed (SIGKILL) and replaced"] = result["kill"]
    for name, w in phases.items():
        lines.append(
            f"| {name} | {w['seconds']:.1f} | {w['answers']} | {w['failures']} | {w['longest_gap'] * 1000:.0f} ms "
            f"| {w['median_gap'] * 1000:.1f} ms |"
        )
    lines += ["", "Each restart, in seconds from its SIGTERM:", ""]
    lines += [
        "| replica | out of rotation | exited | replacement ready | back in rotation |",
        "|---|---:|---:|---:|---:|",
    ]
    for s in result["steps"]:
        lines.append(f"| {s['replica']} | {s['out']:.1f} | {s['exited']:.1f} | {s['ready']:.1f} | {s['back']:.1f} |")
    if killed := result["killed"]:
        failed = ", ".join(result["kill"]["failed"]) or "none"
        lines += [
            "",
            f"The kill: {killed['in_flight']} request(s) in flight on the replicas when {killed['replica']} was "
            f"killed; failed: {failed} ({len(killed['failed_later'])} of them sent after the kill). HAProxy took it "
            f"out of rotation after {killed['detected']:.1f} s; its replacement was in "
            f"rotation at {killed['back']:.1f} s and answering at {killed['serving']:.1f} s.",
        ]
    if result["prometheus_up"]:
        up = ", ".join(f"{instance} {value}" for instance, value in sorted(result["prometheus_up"].items()))
        lines += ["", f'Prometheus\' `up{{job="digitserve"}}` at the end: {up}.']
    return lines


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--users", type=int, default=10, help="locust users")
    parser.add_argument("--user-rate", type=float, default=0.0, help="requests/s per user at most (0: no limit)")
    parser.add_argument("--warmup", type=float, default=10, help="seconds of load before the first restart")
    parser.add_argument("--settle", type=float, default=5, help="seconds of load after each phase")
    parser.add_argument("--drain-seconds", type=float, default=3.0)
    parser.add_argument("--no-kill", action="store_true", help="the rolling restart only")
    parser.add_argument("--no-prometheus", dest="prometheus", action="store_false")
    parser.add_argument("--prometheus-port", type=int, default=9091)
    parser.add_argument("--folder", type=Path, default=FOLDER)
    parser.add_argument("--record", action="store_true", help="write the figures into docs/scaling.md")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    result = run(args)
    text = "\n".join(report(result))
    print(text)
    if args.record:
        section = (
            f"{START}\nMeasured {time.strftime('%Y-%m-%d')} on this machine (2 cores: the replicas, HAProxy, "
            f"Prometheus and locust share them).\n\n{text}\n\nCommand: `make rollout`.\n{END}"
        )
        write_section(
            ROOT / "docs" / "scaling.md",
            section,
            START,
            END,
            "## Rolling restart and a killed replica",
            title="# Scaling out",
        )
    failed = result["rollout"]["failures"] > 0
    if result["killed"]:
        failed |= result["kill"]["failures"] > result["killed"]["in_flight"] or bool(result["killed"]["failed_later"])
    return 1 if failed else 0


START, END = "<!-- rollout:start -->", "<!-- rollout:end -->"


if __name__ == "__main__":
    sys.exit(main())
