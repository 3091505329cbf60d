"""The request schedule that ``run``'s workers share."""

from __future__ import annotations

import threading
import time

from isplit_export.serving.schedule import Schedule


def test_schedule_hands_out_each_request_once() -> None:
    """The workers of ``--concurrency`` share one schedule: every request number exactly once."""
    sched = Schedule(100, None)
    got: list[int] = []
    lock = threading.Lock()

    def take() -> None:
        while (n := sched.next()) is not None:
            with lock:
                got.append(n)

    threads = [threading.Thread(target=take) for _ in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(timeout=10)
    assert sorted(got) == list(range(100))
    assert sched.issued == 100


def test_a_deadline_or_a_stop_ends_the_schedule() -> None:
    past = Schedule(None, time.monotonic() - 1)
    assert past.next() is None and past.issued == 0
    open_ended = Schedule(None, None)
    assert [open_ended.next() for _ in range(3)] == [0, 1, 2]
    open_ended.stop.set()
    assert open_ended.next() is None and open_ended.issued == 3
