"""The container engine that answers on this machine, podman or Docker, and how to call it.

podman gets deploy/container/containers.conf through CONTAINERS_CONF (never the machine's own config): runc, cgroups
without systemd, and container ulimits at or below the host's. Where this host's hard limits (open files,
processes) are below the file's, a copy with the host's limits is written to runs/container/ and used instead.
"""

from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
RUNS = ROOT / "runs" / "container"
CONF = HERE / "containers.conf"


@dataclass
class Engine:
    name: str  # "podman" or "docker"
    env: dict[str, str]

    def command(self, *args: str) -> list[str]:
        return [self.name, *args]

    def run(self, *args: str, check: bool = True, capture: bool = True, timeout: float | None = None) -> str:
        """The engine's command; its stdout (stripped) when captured. On failure, raises with its stderr."""
        done = subprocess.run(
            self.command(*args), env=self.env, capture_output=capture, text=True, timeout=timeout, check=False
        )
        if check and done.returncode != 0:
            raise RuntimeError(f"{' '.join(self.command(*args))} failed ({done.returncode}):\n{done.stderr or ''}")
        return (done.stdout or "").strip()

    def ok(self, *args: str, timeout: float | None = None) -> bool:
        try:
            done = subprocess.run(self.command(*args), env=self.env, capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return False
        return done.returncode == 0

    def logs(self, container: str) -> str:
        """The container's output, stdout and stderr together (the engine replays them on its own two)."""
        command = self.command("logs", container)
        done = subprocess.run(command, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        return done.stdout

    def has_image(self, tag: str) -> bool:
        return self.ok("image", "inspect", tag)

    def image_mb(self, tag: str) -> float:
        """The image's size, uncompressed, in MB."""
        return int(self.run("image", "inspect", "--format", "{{.Size}}", tag)) / 1e6


LIMITS = {"nofile": resource.RLIMIT_NOFILE, "nproc": resource.RLIMIT_NPROC}


def podman_conf() -> Path:
    """containers.conf, or a copy of it with this host's hard limits where those are lower than the file's."""
    text = original = CONF.read_text()
    for name, soft, hard in re.findall(r'"(nofile|nproc)=(\d+):(\d+)"', original):
        host = resource.getrlimit(LIMITS[name])[1]
        if host != resource.RLIM_INFINITY and host < int(hard):
            low = min(int(soft), host)
            text = text.replace(f'"{name}={soft}:{hard}"', f'"{name}={low}:{host}"')
    if text == original:
        return CONF
    RUNS.mkdir(parents=True, exist_ok=True)
    (RUNS / "containers.conf").write_text(text)
    return RUNS / "containers.conf"


def find_engine() -> tuple[Engine | None, str]:
    """The first of podman and Docker that can talk to its engine, and why none could otherwise."""
    why = []
    for name in ("podman", "docker"):
        if not shutil.which(name):
            why.append(f"no {name}")
            continue
        env = {**os.environ}
        if name == "podman":
            env["CONTAINERS_CONF"] = str(podman_conf())
        engine = Engine(name, env)
        if engine.ok("info", timeout=60):
            return engine, ""
        why.append(f"{name} cannot reach its engine (`{name} info` fails)")
    return None, "; ".join(why)
