"""Which workers of this server are serving requests now: a byte per worker in a small file that they all map, in
the folder `bentoml serve` gives every worker for its Prometheus files (PROMETHEUS_MULTIPROC_DIR, emptied when the
server starts). A request alone in its worker takes the idle cores (runtime.py's alone session) only when no other
worker is busy: otherwise its extra threads would take a core from a worker that is serving.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

SLOTS = 256  # workers a server may have (a worker past it shares a slot, and may wait for an idle core wrongly)
FILE = "digitserve_busy_workers"  # not *.db: prometheus_client's collector reads only those


class Activity:
    """This worker's busy flag, and a look at the others'. Without a shared folder (one process, the tests in
    process) there are no others: they are always idle."""

    def __init__(self, folder: str | os.PathLike | None, worker: int) -> None:
        self.slot = worker % SLOTS
        self.flags: mmap.mmap | None = None
        if folder:
            try:
                fd = os.open(Path(folder) / FILE, os.O_RDWR | os.O_CREAT, 0o600)
                try:
                    if os.fstat(fd).st_size < SLOTS:  # the first worker to come sizes it (zeros: nobody busy)
                        os.ftruncate(fd, SLOTS)
                    self.flags = mmap.mmap(fd, SLOTS)
                finally:
                    os.close(fd)
            except OSError:  # no shared file: this worker keeps to itself (the alone session may overlap others)
                self.flags = None
        self.mark(False)  # a worker replacing a crashed one clears the flag its predecessor may have left

    @classmethod
    def of_this_worker(cls, worker: int | None) -> Activity:
        """`worker`: BentoML's index of this worker (None outside `bentoml serve`)."""
        return cls(os.environ.get("PROMETHEUS_MULTIPROC_DIR"), worker or 0)

    def mark(self, busy: bool) -> None:
        if self.flags is not None:
            self.flags[self.slot] = busy

    def others_idle(self) -> bool:
        if self.flags is None:
            return True
        flags = self.flags[:]
        return flags.count(1) == flags[self.slot]
