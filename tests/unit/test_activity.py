"""The workers' table (service/activity.py): what one worker writes, the others see; when a worker is crowded."""

from __future__ import annotations

import numpy as np

from service.activity import FILE, LOOK_EVERY, MARGIN, SLOTS, WINDOW, Activity


def test_a_worker_sees_the_others_requests_not_its_own(tmp_path):
    first, second = Activity(tmp_path, 1), Activity(tmp_path, 2)
    assert first.others_idle() and second.others_idle()
    first.set(3)
    assert first.others_idle() and not second.others_idle()
    second.set(1)
    assert not first.others_idle()
    first.set(0)
    second.set(0)
    assert first.others_idle() and second.others_idle()
    table = np.frombuffer((tmp_path / FILE).read_bytes()).reshape(SLOTS, 3)
    assert table[1:3, :2].tolist() == [[1, 0], [1, 0]]  # live and idle: requests stored plus one, no connections


def test_a_replacement_worker_clears_the_row_its_crashed_predecessor_left(tmp_path):
    crashed, other = Activity(tmp_path, 1), Activity(tmp_path, 2)
    crashed.set(5)
    crashed.request_from(("10.0.0.1", 1000), 0.0)
    assert not other.others_idle()
    Activity(tmp_path, 1)  # the worker started in its place, with its index
    assert other.others_idle()
    assert other.table[1, :2].tolist() == [1, 0]


def test_without_a_shared_folder_there_are_no_others():
    alone = Activity(None, 0)
    alone.set(1)
    for port in range(10):
        alone.request_from(("10.0.0.1", port), 0.0)
    assert alone.others_idle() and not alone.crowded(0.0)


def test_connections_are_the_clients_seen_within_the_window(tmp_path):
    worker = Activity(tmp_path, 1)
    for port in range(4):
        worker.request_from(("10.0.0.1", port), 0.0)
    worker.request_from(("10.0.0.1", 0), 0.1)  # the same connection's next request
    assert worker.table[1, 1] == 4
    worker.closing(("10.0.0.1", 3))
    assert worker.table[1, 1] == 3
    worker.request_from(("10.0.0.2", 7), WINDOW + 0.05)  # the others sent nothing for longer than the window
    assert worker.table[1, 1] == 2  # ("10.0.0.1", 0), seen at 0.1, and the new one


def test_a_worker_is_crowded_past_the_mean_by_the_margin(tmp_path):
    busy, light = Activity(tmp_path, 1), Activity(tmp_path, 2)
    client = iter(("10.0.0.1", port) for port in range(100))
    for _ in range(2 * MARGIN - 1):
        busy.request_from(next(client), 0.0)
    assert not busy.crowded(0.0), "3 against 0: 1.5 over the mean"
    busy.request_from(next(client), 0.0)
    assert busy.crowded(0.0) and not light.crowded(0.0), "4 against 0: 2 over the mean"
    light.request_from(next(client), 0.0)
    assert busy.crowded(0.0), "the others' rows are looked at every LOOK_EVERY seconds, not at every answer"
    assert not busy.crowded(LOOK_EVERY), "4 against 1"
    third = Activity(tmp_path, 3)  # a third worker, idle: the mean falls to 5/3
    assert busy.crowded(2 * LOOK_EVERY)
    for port in range(10):
        third.request_from(("10.0.0.3", port), 2 * LOOK_EVERY)
    assert not busy.crowded(3 * LOOK_EVERY)
    for _ in range(3):  # 4 connections send to it within a window; the others get no request: theirs are gone
        busy.request_from(next(client), 1.5 * WINDOW)
    busy.request_from(next(client), 2 * WINDOW)
    assert busy.table[1, 1] == 4 and busy.crowded(2 * WINDOW)
