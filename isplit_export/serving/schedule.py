"""The request schedule of ``run``: its ``--concurrency`` workers draw request numbers from one schedule."""

from __future__ import annotations

import threading
import time


class Schedule:
    """Hands out request numbers to the workers: ``total`` of them, or until ``deadline``; thread-safe.

    Each number is handed out once; after :attr:`stop` is set (an interrupt) or the total or the deadline
    is reached, :meth:`next` returns None.
    """

    def __init__(self, total: int | None, deadline: float | None) -> None:
        self.total, self.deadline = total, deadline
        self.issued = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def next(self) -> int | None:
        with self._lock:
            if self.stop.is_set():
                return None
            if self.total is not None and self.issued >= self.total:
                return None
            if self.deadline is not None and time.monotonic() >= self.deadline:
                return None
            n = self.issued
            self.issued += 1
            return n
