"""A document's LLM wait (engines/llmtiming.py): the union of its calls' intervals, from any thread."""

from __future__ import annotations

import threading
import time

import pytest

from hpc_marker.engines.llmtiming import LlmClock, busy_seconds


@pytest.mark.parametrize(
    ("intervals", "busy"),
    [
        ([], 0.0),
        ([(1.0, 3.0)], 2.0),
        ([(0.0, 1.0), (2.0, 4.0)], 3.0),  # apart: the gap is not waiting
        ([(0.0, 2.0), (1.0, 3.0), (1.5, 2.5)], 3.0),  # overlapping: counted once, not 4.5
        ([(0.0, 10.0), (2.0, 3.0), (4.0, 5.0)], 10.0),  # nested
        ([(5.0, 6.0), (0.0, 1.0), (1.0, 2.0)], 3.0),  # unsorted, touching
        ([(0.0, 1.0), (0.5, 0.7), (0.9, 2.0), (3.0, 3.0)], 2.0),  # a nested one before a longer, an empty one
    ],
)
def test_busy_seconds_is_the_length_of_the_union(intervals, busy):
    assert busy_seconds(intervals) == pytest.approx(busy)


def test_the_clock_takes_the_union_of_calls_from_threads_and_starts_afresh():
    clock = LlmClock()

    def call(seconds: float) -> None:
        with clock.timed():
            time.sleep(seconds)

    threads = [threading.Thread(target=call, args=(0.2,)) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with pytest.raises(RuntimeError), clock.timed():  # a call that fails counts too
        raise RuntimeError("refused")
    waited = clock.take()
    assert 0.2 <= waited < 0.6  # four calls of 0.2 s at once: one wait of 0.2 s, not 0.8 s
    assert clock.take() == 0.0
