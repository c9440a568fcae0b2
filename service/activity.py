"""What each worker of this server is serving now, in a small table that they all map, in the folder `bentoml serve`
gives every worker for its Prometheus files (PROMETHEUS_MULTIPROC_DIR, emptied when the server starts): per worker,
its requests in flight and its clients' connections. Two uses:
- A request alone in its worker takes the idle cores (runtime.py's alone session) only when no other worker is
  busy: otherwise its extra threads would take a core from a worker that is serving.
- A worker holding well over its share of the clients' connections is `crowded`: the request middleware then
  closes a connection after its answer, and the client's next connection goes to whichever worker accepts it
  first. Workers share one listening socket, and which of them accepts a keep-alive connection is chance that
  lasts as long as the connection: 16 clients were seen split 2/14 between two workers for a whole benchmark
  round, the lighter worker idling while the other queued (docs/benchmarks.md).

Connections are counted from the requests: a client address seen within the last WINDOW seconds is an open
connection (ASGI tells an application nothing of connections themselves). A worker that has had no request for
that long holds none that count, whatever its row last said.
"""

from __future__ import annotations

import mmap
import os
import time
from pathlib import Path

import numpy as np

SLOTS = 256  # workers a server may have (a worker past it shares a slot, and sees the table wrongly)
FILE = "digitserve_workers"  # not *.db: prometheus_client's collector reads only those
# The table's columns: requests in flight, stored plus one for a live worker (0: no worker); connections; when the
# row was last written (time.monotonic(): one clock for all processes).
REQUESTS, CONNECTIONS, WRITTEN = 0, 1, 2
WINDOW = 1.0  # seconds: a connection with no request for longer is no longer counted
# Crowded: this many connections over the workers' mean. A split within it is left alone: redoing it would cost
# the clients new connections for little.
MARGIN = 2
LOOK_EVERY = 0.05  # seconds between looks at the other workers' rows: far cheaper than a request (docs/benchmarks.md,
# "Measured by hand")


class Activity:
    """This worker's row of the table, and a look at the others'. Without a shared folder (one process, the tests
    in process) there are no others."""

    def __init__(self, folder: str | os.PathLike | None, worker: int) -> None:
        self.slot = worker % SLOTS
        self.table = np.zeros((SLOTS, 3))  # this worker's alone, unless the shared file maps below
        if folder:
            try:
                fd = os.open(Path(folder) / FILE, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    if os.fstat(fd).st_size < self.table.nbytes:  # the first worker to come sizes it (zeros)
                        os.ftruncate(fd, self.table.nbytes)
                    mapped = mmap.mmap(fd, self.table.nbytes)
                    self.table = np.frombuffer(mapped).reshape(SLOTS, 3)
                finally:
                    os.close(fd)
            except OSError:  # no shared file: this worker keeps to itself (the alone session may overlap others)
                pass
        self.clients: dict[object, float] = {}  # client address -> when its last request came
        self.pruned = 0.0
        self.looked, self.others = -LOOK_EVERY, (1, 0)  # when, and what: (live workers, the others' connections)
        # A worker replacing a crashed one clears the row its predecessor may have left.
        self.table[self.slot] = (1, 0, time.monotonic())

    @classmethod
    def of_this_worker(cls, worker: int | None) -> Activity:
        """`worker`: BentoML's index of this worker (None outside `bentoml serve`)."""
        return cls(os.environ.get("PROMETHEUS_MULTIPROC_DIR"), worker or 0)

    def set(self, requests: int) -> None:
        """This worker is serving `requests` requests now."""
        self.table[self.slot, REQUESTS] = requests + 1

    def others_idle(self) -> bool:
        requests = self.table[:, REQUESTS]
        others = int(requests.sum()) - int(requests[self.slot])
        return others == np.count_nonzero(requests) - 1

    def request_from(self, client: object, now: float | None = None) -> None:
        """A request came from `client` (ASGI's (host, port): one connection), at `now` (default: time.monotonic())."""
        now = time.monotonic() if now is None else now
        self.clients[client] = now
        if now - self.pruned > WINDOW / 2:
            self.clients = {seen: last for seen, last in self.clients.items() if now - last < WINDOW}
            self.pruned = now
        self.table[self.slot, CONNECTIONS:] = (len(self.clients), now)

    def closing(self, client: object) -> None:
        """This worker closes `client`'s connection after the answer."""
        self.clients.pop(client, None)
        self.table[self.slot, CONNECTIONS] = len(self.clients)

    def crowded(self, now: float | None = None) -> bool:
        """This worker holds at least MARGIN connections more than the server's workers do on average."""
        now = time.monotonic() if now is None else now
        if not 0 <= now - self.looked < LOOK_EVERY:
            self.others, self.looked = self.look(now), now
        workers, others = self.others
        mine = len(self.clients)
        return workers > 1 and mine * workers >= others + mine + MARGIN * workers

    def look(self, now: float) -> tuple[int, int]:
        """The live workers, and the connections of the others that had a request within the window."""
        live = self.table[:, REQUESTS] > 0
        live[self.slot] = False
        fresh = live & (now - self.table[:, WRITTEN] < WINDOW)
        return int(live.sum()) + 1, int(self.table[fresh, CONNECTIONS].sum())
