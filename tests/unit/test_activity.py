"""The workers' busy flags (service/activity.py): what one worker marks, the others see."""

from __future__ import annotations

import asyncio

import numpy as np

from service.activity import FILE, Activity
from service.batching import Batcher


def test_a_worker_sees_the_others_busy_flags_not_its_own(tmp_path):
    first, second = Activity(tmp_path, 1), Activity(tmp_path, 2)
    assert first.others_idle() and second.others_idle()
    first.mark(True)
    assert first.others_idle() and not second.others_idle()
    second.mark(True)
    assert not first.others_idle()
    first.mark(False)
    second.mark(False)
    assert first.others_idle() and second.others_idle()
    assert (tmp_path / FILE).read_bytes() == bytes(256)


def test_a_replacement_worker_clears_the_flag_its_crashed_predecessor_left(tmp_path):
    crashed, other = Activity(tmp_path, 1), Activity(tmp_path, 2)
    crashed.mark(True)
    assert not other.others_idle()
    Activity(tmp_path, 1)  # the worker started in its place, with its index
    assert other.others_idle()


def test_without_a_shared_folder_there_are_no_others():
    alone = Activity(None, 0)
    alone.mark(True)
    assert alone.others_idle()


def test_the_batcher_says_when_its_worker_becomes_busy_and_idle_again():
    told: list[bool] = []
    batcher = Batcher(lambda images: np.zeros((len(images), 10)), 64, 5000, on_busy=told.append)

    async def requests(count: int) -> None:
        async def one() -> None:
            with batcher.request():
                await batcher(np.zeros((1, 1, 28, 28), np.float32))

        await asyncio.gather(*(one() for _ in range(count)))

    asyncio.run(requests(1))
    assert told == [True, False]
    asyncio.run(requests(5))  # overlapping: one busy spell
    assert told == [True, False, True, False]
