"""The CLI's last line when a signal lands after a command returned: one line, exit 130, says what is on disk."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.mark.parametrize("put_in_place", [False, True])
def test_a_signal_after_the_command_is_one_line_that_says_what_is_on_disk(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, put_in_place: bool
) -> None:
    """Ctrl-C (or SIGTERM) landing after the command returned, before ``main`` did, ends like any other:
    one line, exit 130, and the line says whether --out had been put in place (then it is complete)."""
    from isplit_export import cli
    from isplit_export.outdir import atomic_directory

    def command_then_signal(args: list[str], terminated: object) -> int:
        if put_in_place:
            with atomic_directory(tmp_path / "o", force=False) as d:
                (d / "ranking.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_main", command_then_signal)
    assert cli.main(["rank"]) == 130
    err = capsys.readouterr().err.strip().splitlines()
    done = "--out was complete before the signal" if put_in_place else "nothing was written to --out"
    assert err == [f"error: interrupted: {done}"]
    assert sorted(p.name for p in tmp_path.iterdir()) == (["o"] if put_in_place else [])
