"""`make bench-container`: the CPU image against the same service outside it, on this machine, in one run.

    python benchmarks/bench_container.py [--rounds 3] [--seconds 8] [--connections 8] [--starts 3]

Both serve with 2 workers (the image's default and the Kubernetes pod's), one at a time: start to `/readyz`
(`--starts` times each, the container from `podman run`, the service from `bentoml serve`), then `/classify` with
a 28x28 PNG under wrk, taking turns (`--rounds` runs of each, the ones not measured paused), each with the access
log on (the default) and off: in a container every log line goes through a pipe to the engine's logger (podman's
conmon, Kubernetes' container runtime), outside it to a file. Writes its section of docs/containers.md: the image
sizes, the medians and the ratios.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

from deploy.container.build import FLAVOURS, build
from deploy.container.check import Started, start_container
from deploy.container.engine import ROOT, Engine, find_engine
from harness.digits import as_png, sample_digits
from harness.load import Target, alternate
from harness.report import machine, write_section
from harness.server import serving

OUT = ROOT / "docs" / "containers.md"
START, END = "<!-- bench_container:start -->", "<!-- bench_container:end -->"
WORKERS = "2"


def container_start(engine: Engine, image: str, env: dict[str, str] | None = None) -> Started:
    """`run` to ready, with WORKERS workers: the container's id, its URLs and the seconds it took."""
    return start_container(engine, image, {"DIGITSERVE_WORKERS": WORKERS, **(env or {})})


def start_times(engine: Engine, image: str, starts: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {"container": [], "outside": []}
    for _ in range(starts):
        container, _, seconds, _ = container_start(engine, image)
        engine.run("rm", "--force", container)
        times["container"].append(seconds)
        started = time.monotonic()
        with serving({"DIGITSERVE_WORKERS": WORKERS}):
            times["outside"].append(time.monotonic() - started)
    return times


def throughput(engine: Engine, image: str, args: argparse.Namespace) -> dict[str, dict]:
    """wrk on /classify, in turns: the container and the service outside, each with the access log on and off."""
    quiet = {"DIGITSERVE_ACCESS_LOG": "false"}
    with tempfile.TemporaryDirectory() as scratch, ExitStack() as stack:
        png = Path(scratch) / "digit.png"
        png.write_bytes(as_png(sample_digits()[0][0]))
        targets = {}
        for name, env in (("container", {}), ("container, no access log", quiet)):
            container, url, _, _ = container_start(engine, image, env)
            stack.callback(engine.run, "rm", "--force", container, check=False)
            pid = int(engine.run("inspect", "--format", "{{.State.Pid}}", container))
            targets[name] = Target(f"{url}/classify", png, "image/png", pid)
        for name, env in (("outside", {}), ("outside, no access log", quiet)):
            outside = stack.enter_context(serving({"DIGITSERVE_WORKERS": WORKERS, **env}))
            targets[name] = Target(f"{outside.url}/classify", png, "image/png", outside.process.pid)
        return alternate(targets, args.rounds, args.seconds, args.connections)


def report(engine: Engine, sizes: dict, starts: dict, results: dict, args: argparse.Namespace) -> str:
    lines = [
        START,
        f"Machine: {machine()}; {engine.name} {engine.run('--version').split()[-1]}; {WORKERS} workers each.",
        "",
        f"| | image size | start to `/readyz` (median of {args.starts}) | `/classify` 28×28 PNG, "
        f"{args.connections} connections: requests/s, median of {args.rounds} (each run) | p50 / p99 ms |",
        "|---|---|---|---|---|",
    ]
    for name, result in results.items():
        size = f"{sizes.get('digitserve', 0):,.0f} MB" if name == "container" else ""
        start = f"{statistics.median(starts[name]):.1f} s" if name in starts else ""
        each = ", ".join(f"{r:,.0f}" for r in result["rounds_rps"])
        lines.append(
            f"| {name} | {size} | {start} | {result['rps']:,.0f} ({each}) | {result['p50_ms']:.1f} / "
            f"{result['p99_ms']:.1f} |"
        )
    lines.append("")
    for suffix in ("", ", no access log"):
        inside, outside = results[f"container{suffix}"], results[f"outside{suffix}"]
        paired = [a / b for a, b in zip(inside["rounds_rps"], outside["rounds_rps"], strict=True)]
        lines.append(
            f"In the container{suffix or ', access log on (the default)'}: **{inside['rps'] / outside['rps']:.2f}×** "
            f"the requests per second outside it (median of each round's ratio: {statistics.median(paired):.2f})."
        )
    if "digitserve-gpu" in sizes:
        lines.append(f"GPU image (`make container-gpu`, built on this machine): {sizes['digitserve-gpu']:,.0f} MB.")
    lines += ["", "Command: `make bench-container` (`python benchmarks/bench_container.py --help`).", END]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--starts", type=int, default=3)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    engine, why = find_engine()
    if engine is None:
        raise SystemExit(f"no container engine: {why}")
    image = build(engine, "cpu")
    sizes = {}
    for _, name, _ in FLAVOURS.values():
        if engine.has_image(f"{name}:latest"):
            sizes[name] = engine.image_mb(f"{name}:latest")
    starts = start_times(engine, image, args.starts)
    section = report(engine, sizes, starts, throughput(engine, image, args), args)
    print(section)
    write_section(args.out, section, START, END, "## Measured (`make bench-container`)", title="# Containers")


if __name__ == "__main__":
    main()
