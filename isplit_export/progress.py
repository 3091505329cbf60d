"""Progress for every stage of a job, through one API: a bar on a terminal, one plain line per stage otherwise.

The command line opens a display around a job; the job marks its stages::

    with progress.stages(quiet=quiet):            # the CLI (or any caller that wants progress)
        export(options)

    progress.expect(4)                            # inside the job: the stages it is about to run
    progress.stage("load model")                  # a stage lasts until the next one starts ...
    with progress.stage("importance", total=n, unit="img") as s:   # ... or its `with` ends
        s.advance(len(batch))
    progress.done()                               # end the running stage (before printing results)

On a terminal (stderr a TTY) each stage draws a ``rich`` bar (with counts where it has a total) and
leaves one finished line; otherwise (CI logs, pipes) each stage prints one line when it ends,
``stage k/n: name (elapsed 12.3 s)``, on stderr. A stage given ``every`` seconds also prints a line that
often while it runs (``run --duration``: requests and rate as they go). Without an open display (library
use) and with ``quiet`` every call is a no-op. ``k/n`` counts the stages the jobs announced with
:func:`expect` (a job that runs another, such as export running rank, adds its own to theirs); under a
torchrun job only process 0 reports. Torch-free (``rich`` comes with ``typer``, a core dependency):
``verify`` and ``run`` use it on the device.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from types import TracebackType
from typing import TYPE_CHECKING, TextIO

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

QUIET_ENV = "ISPLIT_QUIET"
"""Set to 1: every command as with ``--quiet`` (scripts; the test suite, whose error checks count stderr lines)."""

_ACTIVE: ContextVar[Display | None] = ContextVar("isplit_progress", default=None)


class Stage:
    """One running stage: :meth:`advance` its count; it ends at :meth:`close`, its ``with`` or the next stage."""

    def __init__(
        self,
        display: Display | None,
        name: str,
        total: int | None,
        unit: str,
        every: float | None,
    ) -> None:
        self.name, self.total, self.unit, self.every = name, total, unit, every
        self.done = 0
        self.start = time.perf_counter()
        self._display = display
        self._last_line = self.start
        self._task: TaskID | None = None
        self.index = 0 if display is None else display.begin(self)

    def advance(self, n: int = 1) -> None:
        """Count ``n`` more items (images, splits, requests) done."""
        if self._display is None:
            return
        self.done += n
        self._display.update(self)

    def close(self, *, stopped: bool = False) -> None:
        """End the stage (its finished line is printed once; ``stopped``: it did not finish)."""
        if self._display is not None:
            display, self._display = self._display, None
            display.end(self, stopped=stopped)

    def counts(self, *, rate: bool = True) -> str:
        """``40/40 img, 7.8/s`` (the count, its total and the rate), or '' for a stage without a unit."""
        if not self.unit:
            return ""
        done = f"{self.done}/{self.total}" if self.total is not None else str(self.done)
        elapsed = time.perf_counter() - self.start
        if not rate or elapsed <= 0:
            return f"{done} {self.unit}"
        rate_text = f", {self.done / elapsed:.1f}/s"
        return f"{done} {self.unit}{rate_text}"

    def line(self, n_stages: int, *, stopped: bool = False) -> str:
        """``stage k/n: name (counts, elapsed 12.3 s)``; ``stopped``: the job failed or was interrupted in it."""
        elapsed = time.perf_counter() - self.start
        counts = self.counts()
        when = f"stopped after {elapsed:.1f} s" if stopped else f"elapsed {elapsed:.1f} s"
        inside = f"{counts}, {when}" if counts else when
        return f"stage {self.index}/{max(n_stages, self.index)}: {self.name} ({inside})"

    def __enter__(self) -> Stage:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close(stopped=err is not None)


class Display:
    """Where the stages of one command are reported: a ``rich`` bar (``tty``) or plain lines on ``stream``."""

    def __init__(self, stream: TextIO, tty: bool) -> None:
        self.stream, self.tty = stream, tty
        self.total = 0
        self.count = 0
        self.current: Stage | None = None
        self._bar: Progress | None = None

    def open(self) -> None:
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self._bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.fields[counts]}"),  # '12/40 img', '' for a stage without a count
                TimeElapsedColumn(),
                console=Console(file=self.stream, force_terminal=True),
                transient=True,
                redirect_stdout=False,  # stdout stays the results' (it may be a file while stderr is a terminal)
                redirect_stderr=False,
            )
            self._bar.start()

    def close(self, *, stopped: bool = False) -> None:
        if self.current is not None:
            self.current.close(stopped=stopped)
        if self._bar is not None:
            self._bar.stop()
            self._bar = None

    def begin(self, stage: Stage) -> int:
        if self.current is not None:
            self.current.close()
        self.count += 1
        self.current = stage
        if self._bar is not None:
            stage._task = self._bar.add_task(
                f"stage {self.count}/{max(self.total, self.count)}: {stage.name}",
                total=stage.total,
                counts=stage.counts(rate=stage.every is not None),
            )
        return self.count

    def update(self, stage: Stage) -> None:
        if self._bar is not None and stage._task is not None:
            counts = stage.counts(rate=stage.every is not None)  # a live rate where the job asked for one
            self._bar.update(stage._task, completed=stage.done, counts=counts)
        elif not self.tty and stage.every is not None:
            now = time.perf_counter()
            if now - stage._last_line >= stage.every:
                stage._last_line = now
                elapsed = now - stage.start
                self._print(f"  {stage.name}: {stage.counts()} (elapsed {elapsed:.1f} s)")

    def end(self, stage: Stage, *, stopped: bool = False) -> None:
        if self.current is stage:
            self.current = None
        line = stage.line(self.total, stopped=stopped)
        if self._bar is not None and stage._task is not None:
            self._bar.remove_task(stage._task)
            self._bar.console.print(line, highlight=False, markup=False)
        else:
            self._print(line)

    def _print(self, text: str) -> None:
        print(text, file=self.stream, flush=True)


@contextmanager
def stages(
    total: int = 0, *, quiet: bool = False, stream: TextIO | None = None, tty: bool | None = None
) -> Iterator[None]:
    """Open the display the stages inside report to (``total``: stages known up front; more via :func:`expect`).

    ``stream`` defaults to stderr and ``tty`` to whether it is a terminal; inside an open display this
    joins it. ``quiet`` (``--quiet``), ``ISPLIT_QUIET=1`` in the environment, or a torchrun process
    other than 0 reports nothing.
    """
    if _ACTIVE.get() is not None:
        expect(total)
        yield
        return
    if quiet or os.environ.get(QUIET_ENV, "0") not in ("", "0") or os.environ.get("RANK", "0") != "0":
        yield
        return
    out = stream if stream is not None else sys.stderr
    display = Display(out, out.isatty() if tty is None else tty)
    display.total = total
    token = _ACTIVE.set(display)
    display.open()
    stopped = True
    try:
        yield
        stopped = False
    finally:
        display.close(stopped=stopped)  # a failed or interrupted job's last line says where it stopped
        _ACTIVE.reset(token)


def expect(n: int) -> None:
    """Announce ``n`` more stages of this job (the ``n`` of ``stage k/n``)."""
    display = _ACTIVE.get()
    if display is not None:
        display.total += n


def stage(
    name: str,
    *,
    total: int | None = None,
    unit: str = "",
    every: float | None = None,
    report: bool = True,
) -> Stage:
    """Start stage ``name`` (ending the one running); ``total`` items of ``unit`` (``img``) if it counts them.

    ``every``: without a terminal, also print the count and rate every that many seconds while it runs.
    ``report=False`` gives a stage that reports nothing (a job told not to report, ``progress=False``).
    """
    return Stage(_ACTIVE.get() if report else None, name, total, unit, every)


def done() -> None:
    """End the running stage, if any (a job calls it before it prints its results)."""
    display = _ACTIVE.get()
    if display is not None and display.current is not None:
        display.current.close()


def active() -> bool:
    """Whether a display is open (a job may skip work that only feeds progress)."""
    return _ACTIVE.get() is not None
