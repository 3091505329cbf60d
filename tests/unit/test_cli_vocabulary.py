"""One CLI vocabulary: ``-h`` everywhere, "did you mean" for a mistyped command or model, choices listed in
``--help`` and refused while the flags are parsed, before PyTorch is imported, and one meaning per flag."""

from __future__ import annotations

import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support.helpers import run_cli

COMMANDS = ("export", "rank", "study", "verify", "plan", "serve", "run", "build-engines", "targets", "models")


def _cli_child(*args: str) -> tuple[subprocess.CompletedProcess[str], float, float, list[str]]:
    """Run ``python -X importtime -m isplit_export ARGS`` in a child: (process, wall s, CPU s, modules imported)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "isplit_export", *args],
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    modules = [
        line.rsplit("|", 1)[1].strip() for line in p.stderr.splitlines() if line.startswith("import time:")
    ]
    p.stderr = "\n".join(line for line in p.stderr.splitlines() if not line.startswith("import time:"))
    return p, wall, cpu, modules


@pytest.mark.parametrize("args", [["-h"], ["--help"], *([c, "-h"] for c in COMMANDS)])
def test_h_is_help_on_the_app_and_every_command(capsys: pytest.CaptureFixture[str], args: list[str]) -> None:
    code, out, err = run_cli(capsys, *args)
    assert (code, err) == (0, "")
    assert "Usage: isplit-export" in out and "<bool>" not in out
    if args == ["-h"]:
        assert all(c in out for c in COMMANDS)


def test_a_mistyped_command_is_refused_with_did_you_mean_before_torch(tmp_path: Path) -> None:
    """``verfy b`` used to be taken for a model name and fail seconds later; now one line, exit 2."""
    p, _, _, modules = _cli_child("verfy", str(tmp_path / "b"))
    assert p.returncode == 2, p.stderr
    assert p.stderr.strip().splitlines() == [
        "error: unknown command 'verfy': did you mean 'verify'? (isplit-export -h lists them)"
    ]
    assert "torch" not in modules


def test_a_mistyped_model_is_refused_with_did_you_mean(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "rank", "resnet05")
    assert code == 2
    assert err.strip().splitlines() == [
        "error: unknown model 'resnet05': did you mean 'resnet50'? (isplit-export models lists them; "
        "or pass package.module:factory)"
    ]
    code, _, err = run_cli(capsys, "vgg61", "--top", "1")  # the export, without its command name
    assert code == 2 and "did you mean 'vgg19'?" in err


def test_a_path_or_a_known_model_next_to_a_command_name_is_no_typo(tmp_path: Path) -> None:
    """A first word close to a command is still a model when it is one (or a path): only then is it export."""
    from isplit_export.cli_names import check_command

    commands = list(COMMANDS)
    (tmp_path / "plna").mkdir()
    check_command(str(tmp_path / "plna"), commands)  # a path: no error
    check_command("vgg16", commands)
    check_command("isplit_export.zoo:digits_cnn", commands)
    from isplit_export.errors import BadInputError

    with pytest.raises(BadInputError, match="did you mean 'plan'"):
        check_command("plna", commands)


@pytest.mark.parametrize(
    ("args", "line"),
    [
        (["--target", "nosuch"], "error: unknown --target 'nosuch': choose one of cpu, jetson,"),
        (
            ["vgg16", "--boundary", "int4"],
            "error: unknown --boundary 'int4': did you mean 'int8'? choose one of",
        ),
    ],
)
def test_an_unknown_target_or_boundary_is_refused_in_under_2_s_without_torch(
    args: list[str], line: str
) -> None:
    """``isplit-export --target nosuch``: exit 2 while the flags are parsed, the targets listed, torch never
    imported. The 2 s bound is on the child's CPU time (user + sys), which other load cannot inflate."""
    p, wall, cpu, modules = _cli_child(*args)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith(line)
    assert "torch" not in modules and "torchvision" not in modules
    assert cpu < 2.0, f"{cpu:.2f} s CPU ({wall:.2f} s wall)"


@pytest.mark.parametrize(
    ("args", "flag"),
    [
        (["--boundary", "int4"], "--boundary"),
        (["--objective", "speed"], "--objective"),
        (["rank", "--probe-cuts", "some"], "--probe-cuts"),
        (["verify", "b", "--backend", "tflite"], "--backend"),
        (["run", "b", "--url", "h:1", "--protocol", "udp"], "--protocol"),
    ],
)
def test_a_bad_choice_is_refused_while_parsing(
    capsys: pytest.CaptureFixture[str], args: list[str], flag: str
) -> None:
    code, _, err = run_cli(capsys, *args)
    assert code == 2
    assert err.startswith(f"error: unknown {flag} '{args[-1]}': ") and "choose one of " in err
    assert len(err.strip().splitlines()) == 1


def test_choices_are_listed_in_help(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from isplit_export.target_names import target_names

    monkeypatch.setenv("COLUMNS", "400")  # one line per option
    code, out, _ = run_cli(capsys, "export", "-h")
    assert code == 0
    lines = {line.split()[1]: line for line in out.splitlines() if line.startswith("│ --")}
    targets = "<" + "|".join(target_names()) + ">"  # every profile and alias
    assert targets in lines["--target"] and targets in lines["--server"]
    assert (
        "<fp32|fp16|int8>" in lines["--boundary"] and "<cui|latency|balanced|probe>" in lines["--objective"]
    )
    assert not [
        f for f, line in lines.items() if "<bool>" in line
    ]  # on/off flags, -h included, take no value
    assert "[default: 3]" in lines["--top"] and "[default: (the target's)]" in lines["--boundary"]


def test_verify_backends_are_the_backend_registry() -> None:
    from typing import get_args

    from isplit_export.options import VerifyBackend
    from isplit_export.verification.backends import BACKENDS

    assert set(get_args(VerifyBackend)) == set(BACKENDS)


def test_study_refuses_an_existing_out_without_force(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    out = tmp_path / "study"
    out.mkdir()
    (out / "study.json").write_text("{}")
    code, stdout, err = run_cli(capsys, "study", "--out", out)
    assert code == 2 and stdout == ""
    assert err.strip().splitlines() == [
        f"error: study output {out} already exists: pass --force to replace it, or choose another --out"
    ]
    assert (out / "study.json").read_text() == "{}"


def test_run_takes_url_and_the_old_server_spelling_with_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code, _, err = run_cli(capsys, "run", tmp_path / "b")
    assert code == 2 and err.strip() == (
        "error: run needs the server's address: pass --url HOST:PORT (e.g. 127.0.0.1:8001)"
    )
    code, _, err = run_cli(capsys, "run", tmp_path / "b", "--server", "127.0.0.1:1")
    lines = err.strip().splitlines()
    assert lines[0] == "warning: --server is deprecated: use --url"
    assert code == 2 and "bundle directory" in lines[1]  # went on with the address, to the missing bundle
    code, _, err = run_cli(capsys, "run", tmp_path / "b", "--url", "nohost")
    assert code == 2 and "--url 'nohost': pass HOST:PORT" in err


def test_verify_out_and_no_write_contradict(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """``--out`` is the result file of verify and plan (``--report``, its old spelling, still works)."""
    for cmd in ("verify", "plan"):
        code, _, err = run_cli(capsys, cmd, tmp_path, "--out", tmp_path / "r.json", "--no-write")
        assert code == 2 and "--out and --no-write contradict each other" in err
        code, _, err = run_cli(capsys, cmd, tmp_path, "--report", tmp_path / "r.json", "--no-write")
        assert code == 2
        assert err.strip().splitlines()[0] == "warning: --report is deprecated: use --out"


def test_split_is_a_number_in_serve_too(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run_cli(capsys, "serve", tmp_path, "--split", "all")
    assert (code, err) == (2, "error: --split 'all': pass a whole number\n")
    code, _, err = run_cli(capsys, "run", tmp_path, "--url", "h:1", "--timeout-ms=soon")
    assert (code, err) == (2, "error: --timeout-ms 'soon': pass a number\n")


def test_a_near_miss_choice_gets_a_did_you_mean(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_cli(capsys, "--target", "jetsn")
    assert code == 2
    assert err.startswith("error: unknown --target 'jetsn': did you mean 'jetson'? choose one of cpu, ")
