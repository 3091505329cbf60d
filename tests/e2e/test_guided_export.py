"""A guided export on the digits CNN: one progress line per stage off a terminal, a bar on one, --quiet,
and the next steps (stdout's last lines, report.md) that really run."""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import pty
import re
import subprocess
import sys
from pathlib import Path

import pytest

from isplit_export import contract
from isplit_export.cli import main
from isplit_export.progress import QUIET_ENV
from tests.support.helpers import digits_onnx_args, run_cli

pytestmark = pytest.mark.e2e

STAGE = re.compile(r"^stage (\d+)/(\d+): (.+) \((?:.+, )?elapsed \d+\.\d s\)$")


@pytest.fixture(scope="module")
def guided(
    tmp_path_factory: pytest.TempPathFactory, digits_weights: Path, digits_dir: Path
) -> dict[str, object]:
    """The export's exit code, stdout and stderr (not a terminal under capture) and its bundle."""
    out = tmp_path_factory.mktemp("guided") / "b"
    # capsys is function-scoped: this module-scoped run is captured here; the suite runs quiet
    # (tests/support/fixtures.py) and this test is about the progress
    err, std = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stderr(err), contextlib.redirect_stdout(std):
        mp.delenv(QUIET_ENV)
        code = main(
            [
                *digits_onnx_args(digits_weights, digits_dir),
                "--triton",
                "--out",
                str(out),
                "--latency-runs",
                "2",
            ]
        )
    return {"code": code, "out": std.getvalue(), "err": err.getvalue(), "bundle": out}


def test_export_prints_one_stage_line_per_stage_off_a_terminal(guided: dict[str, object]) -> None:
    assert guided["code"] == 0, guided["err"]
    lines = [line for line in str(guided["err"]).splitlines() if line.startswith("stage ")]
    parsed = [STAGE.match(line) for line in lines]
    assert all(parsed), lines
    ks = [int(m.group(1)) for m in parsed if m]
    ns = {int(m.group(2)) for m in parsed if m}
    assert ks == list(range(1, len(lines) + 1)) and ns == {len(lines)}, lines  # each stage once, k of n
    names = [m.group(3) for m in parsed if m]
    # rank (model, graph, importance, ranking), the reference, the plots, 3 per split, weights, Triton, the write
    assert len(names) == 4 + 2 + 2 * 3 + 1 + 1 + 1, names
    assert "importance over the images" in names
    imp = lines[names.index("importance over the images")]
    assert re.search(r"\(200/200 img, [\d.]+/s, elapsed", imp), imp
    for pos in (1, 2):
        assert any(n.startswith(f"split {pos} (") and "export the ONNX head and tail" in n for n in names)
        assert f"split {pos}: latency (2 runs each)" in names
    assert names[-3:] == [
        "share the weights (weights/)",
        "write the Triton repository (triton/)",
        "hash the files, write report.md and manifest.json",
    ]


def test_export_ends_with_the_next_steps_and_they_run(
    guided: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    b = Path(str(guided["bundle"]))
    sha = hashlib.sha256((b / "manifest.json").read_bytes()).hexdigest()
    out = str(guided["out"]).splitlines()
    start = out.index(f"next steps (manifest sha256 {sha}):")
    written = re.fullmatch(
        rf"bundle written to {re.escape(str(b))} \(verified\): ([\d.]+) MB on disk, ([\d.]+) MB without triton/",
        out[start - 1],
    )
    assert written, out[start - 1]
    files = [p for p in b.rglob("*") if p.is_file()]
    total = {p.stat().st_ino: p.stat().st_size for p in files}  # a hard link counts once
    outside = {p.stat().st_ino: p.stat().st_size for p in files if not p.is_relative_to(b / "triton")}
    assert float(written.group(1)) == pytest.approx(sum(total.values()) / 1e6, abs=0.05)
    assert float(written.group(2)) == pytest.approx(sum(outside.values()) / 1e6, abs=0.05)
    steps = [line.strip() for line in out[start + 1 : -1]]
    assert out[-1] == f"see {b}/report.md, docs/serving.md"
    verify = f"isplit-export verify {b} --expect-sha256 {sha}"
    assert [s for s in steps if s.endswith(verify)], steps
    for command in (
        f"isplit-export serve {b}",
        f"tritonserver --model-repository {b}/triton",
        f"isplit-export plan {b} --link lte",
    ):
        assert any(s.endswith(command) for s in steps), (command, steps)
    assert not any("build-engines" in s for s in steps)  # onnx target: no TensorRT engines
    # the printed verify and plan commands run as printed
    code, _, err = run_cli(capsys, *verify.split()[1:], "--no-write")
    assert code == 0, err
    code, stdout, err = run_cli(capsys, "plan", b, "--link", "lte", "--no-write")
    assert code == 0 and "splitting does not pay here: all on device" in stdout, err


def test_report_explains_the_files_and_the_next_steps(guided: dict[str, object]) -> None:
    b = Path(str(guided["bundle"]))
    report = (b / "report.md").read_text()
    files = report[report.index("## Files") :]
    m = contract.read_manifest(b)
    for split in m.splits:
        for key, path in split.files.items():
            assert f"| `{split.dir}` | `{path}` |" in files, (key, path)
    steps = report[report.index("## Next steps") :]
    assert "isplit-export verify <bundle> --expect-sha256" in steps and "isplit-export run <bundle>" in steps
    assert "`triton/`" in steps and "docs/jetson.md" in steps and "docs/serving.md" in steps


def test_verify_stages_and_quiet(
    guided: dict[str, object], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(QUIET_ENV)
    b = guided["bundle"]
    code, _, err = run_cli(capsys, "verify", b, "--no-write")
    assert code == 0
    names = [STAGE.match(line).group(3) for line in err.splitlines() if STAGE.match(line)]  # type: ignore[union-attr]
    assert names == [
        "hash the bundle's files",
        "load the onnxruntime models",
        "split 1: goldens and latency on onnxruntime",
        "split 2: goldens and latency on onnxruntime",
    ]
    code, _, err = run_cli(capsys, "verify", b, "--no-write", "--quiet")
    assert code == 0 and "stage " not in err


def test_a_terminal_gets_the_bar(guided: dict[str, object]) -> None:
    """verify with its stderr on a pseudo-terminal: rich's live display, then one finished line per stage."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "isplit_export", "verify", str(guided["bundle"]), "--no-write"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=slave,
        env={k: v for k, v in os.environ.items() if k != QUIET_ENV},
    )
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    assert proc.wait(timeout=120) == 0
    text = b"".join(chunks).decode("utf-8", errors="replace")
    assert "\x1b[?25l" in text  # the live display hides the cursor: a bar, not plain lines
    plain = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
    assert re.search(r"stage 1/4: hash the bundle's files \(elapsed \d+\.\d s\)", plain), plain
    assert re.search(r"stage 4/4: split 2: goldens and latency on onnxruntime \(elapsed", plain), plain
