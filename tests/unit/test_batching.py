"""The adaptive batcher with the real model: concurrent requests share ONNX Runtime calls, answers unchanged."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from harness.digits import sample_digits
from service.batching import SLICE, Batcher
from service.errors import ClientError
from service.runtime import ModelRuntime
from tests.conftest import MODEL


@pytest.fixture(scope="module")
def runtime() -> ModelRuntime:
    return ModelRuntime(MODEL, provider="cpu")


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return sample_digits()[0][:200]


class Recorder:
    """The real model, remembering the size of every batch it was given."""

    def __init__(self, runtime: ModelRuntime) -> None:
        self.runtime = runtime
        self.sizes: list[int] = []

    def __call__(self, pixels: np.ndarray) -> np.ndarray:
        self.sizes.append(len(pixels))
        return self.runtime.probabilities(pixels)


async def serve(batcher: Batcher, requests: list[np.ndarray]) -> list[np.ndarray]:
    async def one(pixels: np.ndarray) -> np.ndarray:
        with batcher.request():
            return await batcher(pixels)

    return await asyncio.gather(*(one(r) for r in requests))


def test_concurrent_requests_share_batches_and_get_their_own_answers(runtime, images):
    model = Recorder(runtime)
    batcher = Batcher(model, max_batch_size=64, max_latency_ms=5000)
    # 120 single images and 8 requests of 10, all at once, as a busy worker sees them.
    requests = [images[i : i + 1] for i in range(120)] + [images[120 + 10 * i : 130 + 10 * i] for i in range(8)]
    answers = asyncio.run(serve(batcher, requests))

    direct = Recorder(runtime)(images)
    for request, answer, start in zip(requests, answers, [*range(120), *range(120, 200, 10)], strict=True):
        assert answer.shape == (len(request), 10)
        np.testing.assert_allclose(answer, direct[start : start + len(request)], atol=1e-5)
    assert sum(model.sizes) == 200
    assert max(model.sizes) > 1, "no two requests were batched together"
    assert max(model.sizes) <= 64


def test_a_lone_request_runs_at_once(runtime, images):
    model = Recorder(runtime)
    batcher = Batcher(model, max_batch_size=64, max_latency_ms=5000)
    for i in range(5):
        asyncio.run(serve(batcher, [images[i : i + 1]]))
    assert model.sizes == [1] * 5


def test_a_lone_request_takes_the_alone_call_and_concurrent_ones_the_batch_call(runtime, images):
    batched, alone = Recorder(runtime), Recorder(runtime)
    batcher = Batcher(batched, max_batch_size=64, max_latency_ms=5000, infer_alone=alone)
    asyncio.run(serve(batcher, [images[:1]]))
    asyncio.run(serve(batcher, [images[i : i + 1] for i in range(10)]))
    assert alone.sizes == [1] and sum(batched.sizes) == 10


def test_full_batches_run_on_the_loop_and_partial_ones_in_the_inference_thread(runtime, images):
    threads: list[tuple[int, str]] = []

    def model(pixels: np.ndarray) -> np.ndarray:
        threads.append((len(pixels), threading.current_thread().name))
        return runtime.probabilities(pixels)

    batcher = Batcher(model, max_batch_size=16, max_latency_ms=5000)
    full = asyncio.run(serve(batcher, [images[:16], images[16:32]]))
    assert threads == [(16, "MainThread"), (16, "MainThread")]
    np.testing.assert_allclose(np.concatenate(full), runtime.probabilities(images[:32]), atol=1e-5)
    threads.clear()
    asyncio.run(serve(batcher, [images[:4], images[4:8]]))  # one batch of 8
    assert threads == [(8, "infer_0")]


def test_unseen_requests_run_in_the_thread_and_batch_with_those_arriving_meanwhile(runtime, images):
    """gRPC's calls (`seen=False`): the calls behind one are not yet counted, so even a lone one leaves the loop
    free for them; one that stays alone still takes the alone call."""
    calls: list[tuple[str, int, str]] = []

    def recorded(kind: str):
        def model(pixels: np.ndarray) -> np.ndarray:
            calls.append((kind, len(pixels), threading.current_thread().name))
            time.sleep(0.02)  # long enough for the calls behind it to arrive
            return runtime.probabilities(pixels)

        return model

    batcher = Batcher(recorded("batch"), max_batch_size=64, max_latency_ms=5000, infer_alone=recorded("alone"))

    async def call(pixels: np.ndarray, delay: float) -> np.ndarray:
        await asyncio.sleep(delay)  # arriving later, as gRPC hands calls over one by one
        with batcher.request():
            return await batcher(pixels, seen=False)

    async def scenario() -> list[np.ndarray]:
        return await asyncio.gather(*(call(images[i : i + 1], 0.005 * (i > 0)) for i in range(6)))

    answers = asyncio.run(scenario())
    np.testing.assert_allclose(np.concatenate(answers), runtime.probabilities(images[:6]), atol=1e-5)
    assert calls == [("alone", 1, "infer_0"), ("batch", 5, "infer_0")]


@pytest.mark.parametrize("max_batch_size", [1, 4], ids=["full batches, on the loop", "batches, in the thread"])
def test_requests_past_the_latency_limit_are_shed_with_503(runtime, images, max_batch_size):
    def slow(pixels: np.ndarray) -> np.ndarray:
        time.sleep(0.05)
        return runtime.probabilities(pixels)

    batcher = Batcher(slow, max_batch_size=max_batch_size, max_latency_ms=20)

    async def flood() -> list[object]:
        async def one(i: int) -> object:
            with batcher.request():
                try:
                    return await batcher(images[i : i + 1])
                except ClientError as exc:
                    return exc

        return await asyncio.gather(*(one(i) for i in range(40)))

    outcomes = asyncio.run(flood())
    shed = [o for o in outcomes if isinstance(o, ClientError)]
    served = [o for o in outcomes if isinstance(o, np.ndarray)]
    assert shed and all(e.status == 503 for e in shed)
    assert served, "the batcher shed everything"


def test_a_request_larger_than_a_batch_is_served_in_slices_with_other_requests_between(runtime, images):
    """A number's candidate digits (hundreds where its digits touch) go to the model in slices of SLICE, one slice in
    each batch, whichever request it is of: single images that arrive meanwhile are answered between them, not after
    them all."""
    sizes: list[int] = []

    def model(pixels: np.ndarray) -> np.ndarray:
        sizes.append(len(pixels))
        time.sleep(0.002)  # as a slice takes: long enough for the single images to arrive while they run
        return runtime.probabilities(pixels)

    batcher = Batcher(model, max_batch_size=64, max_latency_ms=5000)
    done: list[str] = []

    async def call(name: str, pixels: np.ndarray, delay: float) -> np.ndarray:
        await asyncio.sleep(delay)
        with batcher.request():
            answer = await batcher(pixels)
        done.append(name)
        return answer

    async def scenario() -> list[np.ndarray]:
        large = [call("large", images[:90], 0), call("large", images[90:180], 0)]
        return await asyncio.gather(*large, *(call(f"single {i}", images[180 + i : 181 + i], 0.005) for i in range(3)))

    answers = asyncio.run(scenario())
    np.testing.assert_allclose(np.concatenate(answers), runtime.probabilities(images[:183]), atol=1e-5)
    assert done[-2:] == ["large", "large"], done
    assert max(sizes) <= SLICE + 3 and sum(sizes) == 183, sizes


def test_a_lone_request_larger_than_a_batch_is_served_in_slices(runtime, images):
    model = Recorder(runtime)
    batcher = Batcher(model, max_batch_size=64, max_latency_ms=5000)
    (answer,) = asyncio.run(serve(batcher, [images[:100]]))
    np.testing.assert_allclose(answer, runtime.probabilities(images[:100]), atol=1e-5)
    assert model.sizes == [SLICE] * (100 // SLICE) + [100 % SLICE]
