"""The one progress API (isplit_export.progress): plain stage lines off a terminal, a rich bar on one, silence
when quiet or outside a display."""

from __future__ import annotations

import io
import os
import pty
import re
import time

import pytest

from isplit_export import progress


@pytest.fixture(autouse=True)
def _progress_on(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(progress.QUIET_ENV, raising=False)  # the suite runs quiet (tests/support/fixtures.py)


LINE = re.compile(r"^stage (\d+)/(\d+): (.+) \((?:(.+), )?elapsed (\d+\.\d) s\)$")


def _workload(items: int = 3) -> None:
    """A tiny job: three stages, the second counting items, as a job marks them."""
    progress.expect(3)
    progress.stage("load")
    with progress.stage("work", total=items, unit="img") as s:
        for _ in range(items):
            s.advance()
    progress.stage("write")
    progress.done()


def test_plain_lines_one_per_stage_with_counts() -> None:
    stream = io.StringIO()
    with progress.stages(stream=stream, tty=False):
        _workload()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 3, lines
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), lines
    assert [(m.group(1), m.group(2), m.group(3)) for m in parsed if m] == [
        ("1", "3", "load"),
        ("2", "3", "work"),
        ("3", "3", "write"),
    ]
    assert lines[1].startswith("stage 2/3: work (3/3 img, ")


def test_quiet_and_no_display_print_nothing() -> None:
    stream = io.StringIO()
    with progress.stages(stream=stream, tty=False, quiet=True):
        _workload()
    _workload()  # library use: no display open, every call is a no-op
    assert stream.getvalue() == ""
    assert not progress.active()


def test_isplit_quiet_in_the_environment_is_quiet(monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setenv(progress.QUIET_ENV, "1")
    with progress.stages(stream=stream, tty=False):
        _workload()
    monkeypatch.setenv(progress.QUIET_ENV, "0")
    with progress.stages(stream=stream, tty=False):
        progress.stage("shown")
    assert stream.getvalue().startswith("stage 1/1: shown (") and len(stream.getvalue().splitlines()) == 1


def test_nested_job_joins_the_open_display() -> None:
    """A job that runs another (export runs rank) adds its stages to the same count."""
    stream = io.StringIO()
    with progress.stages(1, stream=stream, tty=False):
        progress.stage("outer")
        with progress.stages(quiet=True):  # the inner job's own display request joins the open one
            _workload()
    lines = stream.getvalue().splitlines()
    assert [line.split(":")[0] for line in lines] == ["stage 1/4", "stage 2/4", "stage 3/4", "stage 4/4"]


def test_every_prints_the_count_and_rate_as_it_goes() -> None:
    stream = io.StringIO()
    with progress.stages(stream=stream, tty=False):
        s = progress.stage("requests", unit="req", every=0.05)
        for _ in range(3):
            time.sleep(0.06)
            s.advance()
    lines = stream.getvalue().splitlines()
    live = [line for line in lines if line.startswith("  requests: ")]
    assert len(live) >= 2, lines
    assert re.match(r"^  requests: \d+ req, \d+\.\d/s \(elapsed \d+\.\d s\)$", live[0])
    assert lines[-1].startswith("stage 1/1: requests (3 req, ")


def test_a_failing_job_says_where_it_stopped() -> None:
    stream = io.StringIO()
    with pytest.raises(KeyboardInterrupt), progress.stages(2, stream=stream, tty=False):
        progress.stage("load")
        progress.stage("train")
        raise KeyboardInterrupt
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("stage 1/2: load (elapsed ")
    assert re.match(r"^stage 2/2: train \(stopped after \d+\.\d s\)$", lines[1]), lines


def test_unreported_stage_is_silent() -> None:
    stream = io.StringIO()
    with (
        progress.stages(stream=stream, tty=False),
        progress.stage("hidden", total=2, unit="img", report=False) as s,
    ):
        s.advance(2)
    assert stream.getvalue() == ""


def test_bar_on_a_pseudo_terminal() -> None:
    """On a terminal the stages draw a rich bar (with the count) and leave one finished line each."""
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", encoding="utf-8", closefd=False) as tty_stream:
            assert tty_stream.isatty()
            with progress.stages(stream=tty_stream):
                progress.expect(2)
                with progress.stage("work", total=4, unit="img") as s:
                    for _ in range(4):
                        s.advance()
                        time.sleep(0.15)  # rich refreshes the live bar 10 times a second
                progress.stage("write")
        os.close(slave)
        slave = -1
        chunks = []
        while True:
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other end is closed and drained
                break
            if not data:
                break
            chunks.append(data)
    finally:
        os.close(master)
        if slave >= 0:
            os.close(slave)
    text = b"".join(chunks).decode("utf-8", errors="replace")
    assert "\x1b[" in text  # cursor control: a live display, not plain lines
    assert "━" in text  # the bar
    assert re.search(r"[0-4]/4", text)  # the count next to it
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert re.search(r"stage 1/2: work \(4/4 img, [\d.]+/s, elapsed \d+\.\d s\)", plain), plain
    assert re.search(r"stage 2/2: write \(elapsed \d+\.\d s\)", plain), plain
