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
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_ready(url: str, process: subprocess.Popen, log, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"bentoml serve exited with {process.returncode}:\n{log.read()}")
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            raise TimeoutError(f"service not ready on {url} after {timeout} s")
        time.sleep(0.5)


BENTOML = str(Path(sys.executable).with_name("bentoml"))


def log_with(log, line: str, timeout: float = 10.0) -> str:
    """The server's log once it holds `line` (or after `timeout`): its output arrives through circus's pipes."""
    deadline = time.monotonic() + timeout
    while True:
        log.seek(0)
        text = log.read()
        if line in text or time.monotonic() > deadline:
            return text
        time.sleep(0.2)


@contextmanager
def running_service(
    env: dict[str, str] | None = None,
    timeout: float = 90.0,
    target: str = "service.service:DigitService",
    cwd: Path = ROOT,
    log=None,
):
    """`bentoml serve TARGET` (the repo's service, or a Bento tag) on a free port; yields its URL.

    The server's output goes to `log` (an open text file) if given, else to a temporary file: a file, not a
    pipe, since nobody reads the access log while tests run and a full pipe would stall the server."""
    port = free_port()
    environment = {**os.environ, "BENTOML_DO_NOT_TRACK": "true", **(env or {})}
    with tempfile.TemporaryFile(mode="w+") if log is None else nullcontext(log) as log:
        process = subprocess.Popen(
            [BENTOML, "serve", target, "--host", "127.0.0.1", "--port", str(port)],
            cwd=cwd,
            env=environment,
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url, process, log, timeout)
            yield url
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait()
