"""Adaptive batching: concurrent requests in one worker share one ONNX Runtime call.

Greedy, as Triton's dynamic batcher with no queue delay: while one batch runs (in the worker's inference thread,
ONNX Runtime releasing the GIL, so that the event loop keeps reading requests), the requests that arrive wait; the
next batch takes all of them, up to `max_batch_size` images. Under load the batches grow by themselves, and no
request ever waits for a timer: a lone request runs at once, on the loop (the hop to a thread would cost an idle
service more than the call), with `infer_alone` (the service's takes the idle cores when the other workers are idle
too). A full batch (a 64-image request) runs on the loop too: nothing could join it. A request still waiting for
its batch after `max_latency_ms` is answered 503: under overload the service sheds load rather than queueing it
without bound. A request of more images than a batch holds goes in slices (SLICE), one slice a batch, so that the
requests arriving meanwhile are served between them.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from service.errors import ClientError

# A request of more images than a batch holds is served in slices of this many, each queued behind the requests
# that arrived meanwhile: a number whose digits touch has hundreds of candidate digits (1,231 for one of 12, 0.3 s of
# the model), and one call of them all would hold the worker that long. The model's cost per image at 16 is within
# 4 % of its cost at 64 (219 and 211 us, 2 cores); at 8, 18 % above. A batch takes one slice at most, and the
# requests that fit beside it, whenever they came: a /classify waits for a slice or two, not for a number's worth.
# Measured with 4 clients reading 12-digit touching numbers and a fifth sending small /classify requests, one
# worker (2 cores): slices of 16, small p50 10.5 ms, 5.7 numbers/s; of 32, 17.1 ms, 5.7/s; of 64 (a full batch,
# run on the loop), 85 ms, 6.3/s; no slices, 362 ms, 6.7/s.
SLICE = 16
OVERLOADED = "overloaded: the request could not be served within the latency limit; retry later"


@dataclass
class Job:
    images: np.ndarray
    answer: asyncio.Future
    since: float  # the loop's clock when it started waiting
    part: bool = False  # a slice of a request larger than a batch


class Batcher:
    """`await batcher(images)`: `infer` on these images, together with those of other requests in flight."""

    def __init__(
        self,
        infer: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int,
        max_latency_ms: int,
        infer_alone: Callable[[np.ndarray], np.ndarray] | None = None,
    ) -> None:
        """`infer_alone`: what a request alone in the worker runs instead of `infer` (default `infer`)."""
        self.infer = infer
        self.infer_alone = infer_alone or infer
        self.max_batch_size = max_batch_size
        self.max_wait = max_latency_ms / 1000
        self.waiting: deque[Job] = deque()
        self.runner: asyncio.Task | None = None  # runs batches while requests wait
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="infer")
        self.requests = 0  # requests this worker is handling now, counted by `request()`

    @contextmanager
    def request(self) -> Iterator[None]:
        """Wrap the handling of each request: how many overlap tells whether batching can pay."""
        self.requests += 1
        try:
            yield
        finally:
            self.requests -= 1

    @property
    def busy(self) -> bool:
        """A batch is running: new requests wait for the next one."""
        return self.runner is not None and not self.runner.done()

    async def __call__(self, images: np.ndarray, seen: bool = True) -> np.ndarray:
        """`seen`: whether the requests arriving are all counted by `request()` as soon as they arrive. False for
        gRPC's: a call reaches its handler only after two hops through gRPC's poller thread, so that the calls
        arriving behind it are not yet counted, and a lone call run on the loop would keep them waiting. Such a
        request runs in the inference thread, and those that arrive meanwhile join the next batch (docs/benchmarks.md,
        "Open Inference Protocol"). More images than a batch: in slices (SLICE), one after another."""
        if len(images) > self.max_batch_size:
            slices = [images[start : start + SLICE] for start in range(0, len(images), SLICE)]
            return np.concatenate([await self.batched(part, seen, part=True) for part in slices])
        return await self.batched(images, seen)

    async def batched(self, images: np.ndarray, seen: bool, part: bool = False) -> np.ndarray:
        """`__call__` for images that fit in one batch; `part`: a slice of a larger request's."""
        # Requests that arrived together were all scheduled at once: let them reach this point first.
        await asyncio.sleep(0)
        if self.requests <= 1 and not self.busy and seen:
            return self.infer_alone(images)  # alone: nothing to batch with
        loop = asyncio.get_running_loop()
        job = Job(images, loop.create_future(), loop.time(), part)
        self.waiting.append(job)
        if not self.busy:
            self.runner = loop.create_task(self.run_batches())  # referenced: a task nobody holds may be collected
        return await job.answer

    def on_the_loop(self, images: np.ndarray) -> bool:
        """A full batch runs on the event loop, not in the inference thread: nothing could join it while it ran.
        Measured with 2 workers, /classify_pixels (64 images a request): the same throughput, a lower p99
        (docs/benchmarks.md, "Per-request overhead")."""
        return len(images) >= self.max_batch_size

    def next_batch(self, now: float) -> list[Job]:
        """The waiting jobs that fit in one batch (at least one), of them one slice at most (SLICE: the others wait
        in turn for the next batches); those waited too long: 503."""
        batch, size, held = [], 0, []
        while self.waiting and (not batch or size + len(self.waiting[0].images) <= self.max_batch_size):
            job = self.waiting.popleft()
            if job.answer.done():  # its client is gone (the request was cancelled)
                continue
            if now - job.since > self.max_wait:
                job.answer.set_exception(ClientError(503, OVERLOADED))
                continue
            if job.part and any(taken.part for taken in batch):
                held.append(job)
                continue
            batch.append(job)
            size += len(job.images)
        self.waiting.extendleft(reversed(held))
        return batch

    async def run_batches(self) -> None:
        loop = asyncio.get_running_loop()
        while self.waiting:
            batch = self.next_batch(loop.time())
            if not batch:
                continue
            try:
                # One request's images as they are: no copy (a 64-image request is 200 kB).
                images = batch[0].images if len(batch) == 1 else np.concatenate([job.images for job in batch])
                here = self.on_the_loop(images)
                # A request alone here came unseen (`seen`): it may still take the idle cores.
                infer = self.infer_alone if len(batch) == 1 and self.requests <= 1 else self.infer
                if here:
                    probabilities = infer(images)
                else:
                    probabilities = await loop.run_in_executor(self.thread, infer, images)
            except Exception as exc:  # the model failed: every request of the batch gets that error
                for job in batch:
                    if not job.answer.done():
                        job.answer.set_exception(exc)
                continue
            start = 0
            for job in batch:
                if not job.answer.done():
                    job.answer.set_result(probabilities[start : start + len(job.images)])
                start += len(job.images)
            if here:
                await asyncio.sleep(0)  # its answers go out, and arrivals are read, before the next batch
