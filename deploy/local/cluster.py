"""`make cluster`: replicas of the service behind HAProxy, with Prometheus scraping them, on this machine.

    python deploy/local/cluster.py start [--replicas 2] [--port 8080]    # returns once every replica is in rotation
    python deploy/local/cluster.py status
    python deploy/local/cluster.py stop

Each replica is `bentoml serve` with one worker on a port of its own (and a gRPC port), draining for
DIGITSERVE_DRAIN_SECONDS on SIGTERM (longer than HAProxy takes to see /readyz fail). HAProxy (Debian's haproxy;
deploy/local/haproxy.cfg) balances them, health-checked on /readyz, with the per-client timeouts the service leaves
to a proxy; its gRPC frontend (--grpc-port) balances gRPC calls over the replicas' gRPC ports, call by call. Prometheus
(Debian's prometheus) scrapes every replica as job "digitserve" and HAProxy's exporter as job "haproxy", with
deploy/prometheus/rules.yml loaded. Their configs, logs and the cluster's state (ports, process ids) are in
runs/cluster/; the processes outlive this command until `stop`. deploy/local/rollout.py restarts and kills
replicas under load; `make ops-tools` installs haproxy and prometheus (as root or with sudo).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from string import Template

import httpx
import psutil

from harness.server import BENTOML, ROOT, free_port

HERE = Path(__file__).resolve().parent
FOLDER = ROOT / "runs" / "cluster"
CHECK_MS = 500  # HAProxy's /readyz check interval: a replica leaves the rotation within 2 checks (fall 2)


@dataclass
class Replica:
    name: str
    port: int
    grpc_port: int = 0  # its gRPC server's (service/grpc_server.py); 0: none
    pid: int = 0


@dataclass
class Cluster:
    """What runs: read from and written to runs/cluster/state.json, so that any command can act on it."""

    host: str
    port: int  # HAProxy's frontend: the cluster's URL (0: a free one, chosen as HAProxy starts)
    stats_port: int  # HAProxy's stats page and Prometheus exporter (0: likewise)
    grpc_port: int  # HAProxy's gRPC frontend (0: likewise)
    prometheus_port: int  # 0: no Prometheus
    drain_seconds: float
    replicas: list[Replica] = field(default_factory=list)
    haproxy: int = 0
    prometheus: int = 0
    folder: Path = FOLDER

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def grpc(self) -> str:
        """host:port of the cluster's gRPC frontend."""
        return f"{self.host}:{self.grpc_port}"

    # State ---------------------------------------------------------------------------------------------------

    def save(self) -> None:
        state = {**asdict(self), "folder": str(self.folder)}
        (self.folder / "state.json").write_text(json.dumps(state, indent=2))

    @classmethod
    def load(cls, folder: Path = FOLDER) -> Cluster:
        path = folder / "state.json"
        if not path.exists():
            sys.exit(f"no cluster in {folder}: `make cluster` starts one")
        state = json.loads(path.read_text())
        replicas = [Replica(**r) for r in state.pop("replicas")]
        return cls(**{**state, "folder": Path(state["folder"])}, replicas=replicas)

    # Processes -----------------------------------------------------------------------------------------------

    def spawn(self, command: list[str], log: str, env: dict[str, str] | None = None) -> int:
        """Start `command` in its own session (it outlives this process), its output appended to `log`."""
        with open(self.folder / log, "a") as out:
            process = subprocess.Popen(
                command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        return process.pid

    def start_replica(self, replica: Replica) -> None:
        env = {
            **os.environ,
            "BENTOML_DO_NOT_TRACK": "true",
            "DIGITSERVE_WORKERS": "1",
            "DIGITSERVE_DRAIN_SECONDS": str(self.drain_seconds),
            "DIGITSERVE_GRPC_PORT": str(replica.grpc_port),
            # Its own: BentoML keeps the workers' Prometheus files in $BENTOML_HOME/prometheus_multiproc_dir and
            # empties it when a server starts, so replicas sharing one would wipe, and sum, each other's metrics.
            "BENTOML_HOME": str(self.folder / replica.name),
        }
        command = [*BENTOML, "serve", "service.app:DigitService", "--host", self.host, "--port", str(replica.port)]
        replica.pid = self.spawn(command, f"{replica.name}.log", env)

    def wait_ready(self, replica: Replica) -> None:
        self.wait_answering(f"http://{self.host}:{replica.port}/readyz", replica.pid, f"{replica.name}.log")

    def wait_answering(self, url: str, pid: int, log: str, timeout: float = 120) -> None:
        """Until GET `url` answers 200; exits, naming the process's log, if it dies or times out first."""
        deadline = time.monotonic() + timeout
        while not ready(url):
            if not alive(pid):
                sys.exit(f"{url}: its process exited; its log: {self.folder / log}")
            if time.monotonic() > deadline:
                sys.exit(f"{url} not ready after {timeout} s; its log: {self.folder / log}")
            time.sleep(0.2)

    def wait_in_rotation(
        self, names: set[str], up: bool = True, timeout: float = 30, backends: tuple[str, ...] = ("replicas",)
    ) -> float:
        """Until HAProxy reports each of `names` UP with its last health check passed (a server starts UP before
        any check) or, with up=False, not UP, in each of `backends` (HTTP's; the gRPC one is `replicas_grpc`,
        checked apart); the seconds it took."""
        start = time.monotonic()
        while True:
            if not alive(self.haproxy):
                raise HAProxyExited(self.log_tail("haproxy.log"))
            states = [self.server_states(backend) for backend in backends]
            found = [state.get(name, "") for state in states for name in names]
            if all(f == "UP L7OK" for f in found) if up else not any(f.startswith("UP") for f in found):
                return time.monotonic() - start
            if time.monotonic() - start > timeout:
                raise TimeoutError(f"HAProxy still reports {states} after {timeout} s")
            time.sleep(0.05)

    def log_tail(self, log: str, lines: int = 20) -> str:
        text = (self.folder / log).read_text(errors="replace").splitlines()
        return f"its log, {self.folder / log}, ends:\n" + "\n".join(text[-lines:])

    # HAProxy -------------------------------------------------------------------------------------------------

    def start_haproxy(self, attempts: int = 3) -> None:
        """HAProxy in front of the replicas, once each one is UP in it. A port left as 0 is chosen now, not at
        `new_cluster`: a free port chosen minutes before, while replicas start and open connections, can be taken
        by then (CI, once: HAProxy exited and `wait_in_rotation` waited 30 s on a socket that never came). Such a
        port is chosen again if HAProxy cannot bind it; a port the user gave is not."""
        chosen = {"port": not self.port, "stats_port": not self.stats_port, "grpc_port": not self.grpc_port}
        for attempt in range(attempts):
            for name, free in chosen.items():
                if free:
                    setattr(self, name, free_port())
            config = self.write_haproxy_config()
            self.haproxy = self.spawn(["haproxy", "-db", "-f", str(config)], "haproxy.log")
            self.save()
            try:
                self.wait_haproxy_answering()
                # Both frontends' backends: each checks the replicas on its own (CI, once: every gRPC call of a
                # test went to one replica, the other not yet UP for gRPC).
                self.wait_in_rotation({r.name for r in self.replicas}, backends=("replicas", "replicas_grpc"))
                return
            except HAProxyExited as exited:
                wait_gone(self.haproxy, 5)  # reaped
                lost_a_port = "cannot bind" in str(exited) and any(chosen.values())
                if not lost_a_port or attempt == attempts - 1:
                    raise

    def wait_haproxy_answering(self, timeout: float = 30) -> None:
        """Until HAProxy answers on its runtime API: it binds every listener before, and exits if one fails."""
        deadline = time.monotonic() + timeout
        while True:
            if not alive(self.haproxy):
                raise HAProxyExited(self.log_tail("haproxy.log"))
            with contextlib.suppress(OSError):
                self.haproxy_command("show info")
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"HAProxy not answering after {timeout} s; {self.log_tail('haproxy.log')}")
            time.sleep(0.05)

    def write_haproxy_config(self) -> Path:
        servers = "\n".join(f"    server {r.name} {self.host}:{r.port} check" for r in self.replicas)
        # gRPC to each replica's gRPC port, its readiness checked on its HTTP port, in HTTP/1.1 (the check would
        # speak the server's h2 otherwise, which the HTTP port refuses: every replica DOWN after two checks).
        grpc_servers = "\n".join(
            f"    server {r.name} {self.host}:{r.grpc_port} proto h2 check port {r.port} check-proto h1"
            for r in self.replicas
        )
        text = Template((HERE / "haproxy.cfg").read_text()).substitute(
            folder=self.folder,
            host=self.host,
            port=self.port,
            stats_port=self.stats_port,
            grpc_port=self.grpc_port,
            check_ms=CHECK_MS,
            servers=servers,
            grpc_servers=grpc_servers,
        )
        path = self.folder / "haproxy.cfg"
        path.write_text(text)
        return path

    def haproxy_command(self, what: str, *args: str) -> str:
        """One command on HAProxy's runtime API (its stats socket)."""
        with socket.socket(socket.AF_UNIX) as sock:
            sock.connect(str(self.folder / "haproxy.sock"))
            sock.sendall(f"{what} {' '.join(args)}\n".encode())
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode()

    def server_stats(self, backend: str = "replicas") -> dict[str, dict[str, str]]:
        """HAProxy's `show stat` for the replicas in `backend`: status (UP, DOWN, ...), scur (connections now),
        stot, ..."""
        text = self.haproxy_command("show stat").lstrip("# ")
        rows = csv.DictReader(io.StringIO(text))
        return {r["svname"]: r for r in rows if r["pxname"] == backend and r["svname"] not in ("BACKEND",)}

    def server_states(self, backend: str = "replicas") -> dict[str, str]:
        """Each replica's state in `backend` and its last check's outcome: "UP L7OK", "DOWN L7STS", ..."""
        try:
            stats = self.server_stats(backend).items()
            return {name: f"{row['status'].split()[0]} {row['check_status'].lstrip('* ')}" for name, row in stats}
        except OSError:  # HAProxy not (yet) listening on its socket
            return {}

    # Prometheus ----------------------------------------------------------------------------------------------

    def write_prometheus_config(self) -> Path:
        config = {
            "global": {"scrape_interval": "5s", "evaluation_interval": "5s"},
            "rule_files": [str(ROOT / "deploy" / "prometheus" / "rules.yml")],
            "scrape_configs": [
                {
                    "job_name": "digitserve",
                    "static_configs": [{"targets": [f"{self.host}:{r.port}" for r in self.replicas]}],
                },
                {"job_name": "haproxy", "static_configs": [{"targets": [f"{self.host}:{self.stats_port}"]}]},
            ],
        }
        path = self.folder / "prometheus.yml"
        path.write_text(json.dumps(config, indent=2))  # JSON is YAML
        return path

    def prometheus_query(self, query: str) -> list[dict]:
        url = f"http://{self.host}:{self.prometheus_port}/api/v1/query"
        return httpx.get(url, params={"query": query}, timeout=10).json()["data"]["result"]

    # The whole ---------------------------------------------------------------------------------------------

    def start(self) -> None:
        for tool in ("haproxy", *(["prometheus"] if self.prometheus_port else [])):
            if not shutil.which(tool):
                sys.exit(
                    f"{tool} not found: `make ops-tools` (Debian's haproxy and prometheus), or without root "
                    "a static build from haproxy.org / prometheus.io on PATH"
                )
        self.folder.mkdir(parents=True, exist_ok=True)
        for replica in self.replicas:
            self.start_replica(replica)
        self.save()  # from here `stop` finds them, whatever fails next
        for replica in self.replicas:
            self.wait_ready(replica)
        self.start_haproxy()
        if self.prometheus_port:
            shutil.rmtree(self.folder / "prometheus-data", ignore_errors=True)  # no series of an earlier cluster
            command = [
                "prometheus",
                f"--config.file={self.write_prometheus_config()}",
                f"--storage.tsdb.path={self.folder / 'prometheus-data'}",
                f"--web.listen-address={self.host}:{self.prometheus_port}",
                "--log.level=warn",
            ]
            self.prometheus = self.spawn(command, "prometheus.log")
            self.save()
            self.wait_answering(f"http://{self.host}:{self.prometheus_port}/-/ready", self.prometheus, "prometheus.log")

    def stop(self) -> None:
        stop_groups([self.prometheus, self.haproxy, *(r.pid for r in self.replicas)])
        (self.folder / "state.json").unlink(missing_ok=True)


class HAProxyExited(RuntimeError):
    """HAProxy is not running: a bad config, or a port it cannot bind."""


def ready(url: str) -> bool:
    try:
        return httpx.get(url, timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_gone(pid: int, timeout: float, poll: float = 0.05) -> bool:
    """Until the process is gone (or a zombie: its exit is done), reaping it if it is this process's child."""
    deadline = time.monotonic() + timeout
    while True:
        with contextlib.suppress(ChildProcessError):  # started by this process: reap it, or it stays a zombie
            os.waitpid(pid, os.WNOHANG)
        if not alive(pid):
            break
        if time.monotonic() > deadline:
            return False
        time.sleep(poll)
    return True


def stop_groups(pids: list[int], timeout: float = 30) -> None:
    """SIGTERM to each process (an arbiter passes it on to its workers) and its group, all at once (each replica
    drains for its drain seconds: side by side, not one after another); SIGKILL to whatever of their trees is
    still there after `timeout` (BentoML's workers lead sessions of their own)."""
    trees = {pid: process_tree(pid) for pid in pids if pid}
    for pid in trees:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    for pid, tree in trees.items():
        for process in tree:
            wait_gone(process.pid, max(0.0, deadline - time.monotonic()))
        kill_tree(tree)
        wait_gone(pid, 10)  # reaped, if it was this process's child


def process_tree(pid: int) -> list[psutil.Process]:
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def kill_tree(tree: list[psutil.Process]) -> None:
    """SIGKILL to each process of a tree taken before (a dead parent's children are no longer its children)."""
    for process in tree:
        with contextlib.suppress(psutil.NoSuchProcess):
            process.kill()


def new_cluster(
    replicas: int, port: int, prometheus_port: int, drain_seconds: float, folder: Path, grpc_port: int = 0
) -> Cluster:
    host = "127.0.0.1"
    return Cluster(
        host=host,
        port=port,
        stats_port=0,
        grpc_port=grpc_port,
        prometheus_port=prometheus_port,
        drain_seconds=drain_seconds,
        replicas=[Replica(f"replica{n + 1}", free_port(), free_port()) for n in range(replicas)],
        folder=folder,
    )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("start", "status", "stop"))
    parser.add_argument("--replicas", type=int, default=2)
    parser.add_argument("--port", type=int, default=8080, help="HAProxy's port: the cluster's URL")
    parser.add_argument("--grpc-port", type=int, default=8081, help="HAProxy's gRPC port (0: a free one)")
    parser.add_argument("--prometheus-port", type=int, default=9090, help="0: no Prometheus")
    parser.add_argument("--drain-seconds", type=float, default=3.0, help="each replica's DIGITSERVE_DRAIN_SECONDS")
    parser.add_argument("--folder", type=Path, default=FOLDER, help="configs, logs and state")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.command == "start":
        if (args.folder / "state.json").exists():
            sys.exit(f"a cluster runs already ({args.folder / 'state.json'}): `make cluster-stop` first")
        cluster = new_cluster(
            args.replicas, args.port, args.prometheus_port, args.drain_seconds, args.folder, args.grpc_port
        )
        try:
            cluster.start()
        except BaseException:
            cluster.stop()
            raise
        print(f"{len(cluster.replicas)} replicas behind HAProxy at {cluster.url}, gRPC at {cluster.grpc}")
        print(f"HAProxy's stats: http://{cluster.host}:{cluster.stats_port}/")
        if cluster.prometheus_port:
            print(f"Prometheus: http://{cluster.host}:{cluster.prometheus_port}/ (rules: deploy/prometheus/rules.yml)")
        print(f"logs and state: {cluster.folder}; `make cluster-stop` stops it")
    elif args.command == "status":
        cluster = Cluster.load(args.folder)
        print(f"{cluster.url}: " + ", ".join(f"{n} {s}" for n, s in cluster.server_states().items()))
    else:
        Cluster.load(args.folder).stop()
        print("stopped")


if __name__ == "__main__":
    main()
