"""Start the real service with `bentoml serve` on a free port, and stop it."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(ready: str, process: subprocess.Popen, log, timeout: float) -> None:
    """Until GET `ready` answers 200; the process's output in the error if it exits first."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"{Path(process.args[0]).name} exited with {process.returncode}:\n{log.read()}")
        try:
            if httpx.get(ready, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"{ready} not ready after {timeout} s")
        time.sleep(0.1)  # a refused connection costs nothing: every start is ready sooner


@contextmanager
def started(
    command: list[str], ready: str, env: dict[str, str] | None = None, cwd: Path = ROOT, log=None, timeout=90.0
):
    """`command` in its own process group until the block ends, once GET `ready` answers 200; yields the process.

    Its output goes to `log` (an open text file) if given, else to a temporary file: a file, not a pipe, since
    nobody reads it while the block runs and a full pipe would stall the server. Stopped with SIGTERM to the
    whole group (SIGKILL after 30 s)."""
    with tempfile.TemporaryFile(mode="w+") if log is None else nullcontext(log) as log:
        process = subprocess.Popen(
            command, cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True
        )
        try:
            wait_ready(ready, process, log, timeout)
            yield process
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()


# BentoML's command: its script beside this interpreter, or the module where an install put no script there (pip
# --target, a wheelhouse unpacked onto PYTHONPATH: how the GPU check ran on a lent machine).
_SCRIPT = Path(sys.executable).with_name("bentoml")
BENTOML = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "bentoml"]


def address(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    return parts.hostname, parts.port


def post_head(host: str, path: str, content_type: str, length: int, close: bool = False) -> bytes:
    """The head of an HTTP/1.1 POST of `length` body bytes, for tests that write requests on raw sockets."""
    connection = "Connection: close\r\n" if close else ""
    return (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {length}\r\n"
        f"{connection}\r\n"
    ).encode()


def trickled_classify(url: str, image: bytes, seconds: float, pieces: int) -> str:
    """POST /classify on a raw socket, its PNG body sent in `pieces` spread over `seconds`; the answer's status
    line. A server that gives up first (a timeout) may close the socket mid-upload: its answer is read anyway."""
    host, port = address(url)
    with socket.create_connection((host, port), timeout=60) as sock:
        sock.sendall(post_head(host, "/classify", "image/png", len(image)))
        try:
            for i in range(pieces):
                sock.sendall(image[i * len(image) // pieces : (i + 1) * len(image) // pieces])
                time.sleep(seconds / pieces)
        except OSError:
            pass
        return sock.recv(4096).split(b"\r\n", 1)[0].decode()


def log_with(log, line: str, timeout: float = 10.0) -> str:
    """The server's log once it holds `line` (or after `timeout`): its output arrives through circus's pipes."""
    deadline = time.monotonic() + timeout
    while True:
        log.seek(0)
        text = log.read()
        if line in text or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


@dataclass
class Server:
    url: str
    process: subprocess.Popen  # `bentoml serve`, the arbiter; its workers are its children
    log: IO[str]
    grpc: str = ""  # host:port of its gRPC server (service/grpc_server.py)

    def workers(self) -> list[psutil.Process]:
        """The live worker processes (a killed one, not yet reaped, is left out)."""
        found = []
        for process in psutil.Process(self.process.pid).children(recursive=True):
            try:
                if process.status() != psutil.STATUS_ZOMBIE and "_bentoml_impl" in " ".join(process.cmdline()):
                    found.append(process)
            except psutil.Error:  # gone meanwhile
                pass
        return found


@contextmanager
def serving(
    env: dict[str, str] | None = None,
    timeout: float = 90.0,
    target: str = "service.app:DigitService",
    cwd: Path = ROOT,
    log=None,
):
    """`bentoml serve TARGET` (the repo's service, or a Bento tag) on a free port; yields a `Server`. Stopping
    drains for DIGITSERVE_DRAIN_SECONDS, 0 here unless `env` sets it: tests that do not test shutdown need not
    wait. `log`: as `started`'s."""
    port, grpc_port = free_port(), free_port()
    # A gRPC port of its own too: gRPC binds with SO_REUSEPORT, so servers on one port would share its calls.
    environment = {
        **os.environ,
        "BENTOML_DO_NOT_TRACK": "true",
        "DIGITSERVE_DRAIN_SECONDS": "0",
        "DIGITSERVE_GRPC_PORT": str(grpc_port),
        **(env or {}),
    }
    url = f"http://127.0.0.1:{port}"
    command = [*BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    with (
        tempfile.TemporaryFile(mode="w+") if log is None else nullcontext(log) as log,
        # A BENTOML_HOME of its own unless `env` names one (a Bento's store): BentoML keeps the workers' Prometheus
        # files in $BENTOML_HOME/prometheus_multiproc_dir and empties it when a server starts, so servers sharing
        # one would wipe, and sum, each other's metrics.
        nullcontext(env["BENTOML_HOME"]) if env and "BENTOML_HOME" in env else tempfile.TemporaryDirectory() as home,
        started(command, f"{url}/readyz", {**environment, "BENTOML_HOME": home}, cwd, log, timeout) as process,
    ):
        yield Server(url, process, log, f"127.0.0.1:{environment['DIGITSERVE_GRPC_PORT']}")


@contextmanager
def running_service(env: dict[str, str] | None = None, **kwargs):
    """`serving`, yielding only the URL."""
    with serving(env, **kwargs) as server:
        yield server.url
