"""Checkpoints loaded one ahead (score/loading.py): the next load overlaps the current work, the
order and results are those of a sequential loop, a failed load surfaces on its own turn, and no
more than ``ahead + 1`` loaded items are alive at once."""
from __future__ import annotations

import threading
import time
import weakref

import pytest

from grokscope.score.loading import Ahead


class Loaded:
    def __init__(self, i: int) -> None:
        self.i = i


def test_results_and_order_equal_a_sequential_loop():
    items = list(range(7))
    for ahead in (0, 1, 2):
        got = [(i, get().i) for i, get in Ahead(items, Loaded, ahead)]
        assert got == [(i, i) for i in items]


def test_next_load_overlaps_the_current_work():
    """5 items, 0.15 s to load each and 0.15 s to use each: sequential 1.5 s, one ahead ~0.9 s."""
    def load(i):
        time.sleep(0.15)
        return Loaded(i)

    def run(ahead):
        t0 = time.perf_counter()
        for _, get in Ahead(range(5), load, ahead):
            get()
            time.sleep(0.15)
        return time.perf_counter() - t0

    sequential, overlapped = run(0), run(1)
    assert sequential >= 1.5
    assert overlapped < sequential - 0.4  # ideal 0.9 s


def test_a_failed_load_surfaces_on_its_turn_and_the_rest_still_load():
    def load(i):
        if i == 2:
            raise ValueError("corrupt checkpoint 2")
        return Loaded(i)

    seen, failed = [], []
    for i, get in Ahead(range(5), load, 1):
        try:
            seen.append(get().i)
        except ValueError as e:
            failed.append((i, str(e)))
    assert seen == [0, 1, 3, 4] and failed == [(2, "corrupt checkpoint 2")]


@pytest.mark.parametrize("ahead", [1, 2])
def test_at_most_ahead_plus_one_items_alive(ahead):
    alive: weakref.WeakSet[Loaded] = weakref.WeakSet()
    lock = threading.Lock()
    peak = 0

    def load(i):
        nonlocal peak
        x = Loaded(i)
        with lock:
            alive.add(x)
            peak = max(peak, len(alive))
        return x

    for _, get in Ahead(range(8), load, ahead):
        x = get()
        time.sleep(0.02)  # let the loader run ahead as far as it may
        del x
    assert peak <= ahead + 1


def test_stopping_early_cancels_what_was_not_started():
    started = []

    def load(i):
        started.append(i)
        time.sleep(0.05)
        return Loaded(i)

    for i, get in Ahead(range(10), load, 1):
        get()
        if i == 1:
            break
    time.sleep(0.2)
    assert max(started) <= 3
