"""What to do with a bundle next (bundle/next_steps): the commands per target kind, real commands of this
CLI, and report.md's "Files" and "Next steps" sections."""

from __future__ import annotations

import shlex

import pytest
import typer

from isplit_export.bundle.next_steps import FILE_ROLES, commands, format_next_steps, manifest_steps
from isplit_export.bundle.report import render_report
from isplit_export.cli import app
from isplit_export.targets.profiles import load_target

SHA = "ab" * 32
PROFILES = [
    "onnx",
    "cpu",
    "jetson",
    "jetson-orin-nx",
    "jetson-orin-nano",
    "jetson-xavier-nx",
    "x86-tensorrt",
    "x86-tensorrt-11",
]


def _steps(profile: str, *, triton: bool = False, link: str | None = None) -> list[str]:
    target = load_target(profile).to_json()
    return commands(manifest_steps(target, {"link": link}, triton, "b", SHA))


@pytest.mark.parametrize("profile", PROFILES)
def test_every_target_gets_verify_serve_run_plan_and_tensorrt_targets_build_engines(profile: str) -> None:
    p = load_target(profile)
    cmds = _steps(profile)
    assert cmds[0] == "rsync -a b/ <device>:b/"
    assert cmds[1] == f"isplit-export verify b --expect-sha256 {SHA}"
    engines = ["isplit-export build-engines b", "isplit-export verify b --backend tensorrt"]
    if p.backend == "tensorrt":
        assert cmds[2:4] == engines
    else:
        assert not set(engines) & set(cmds)
    assert cmds[-3:] == [
        "isplit-export serve b",
        "isplit-export run b --url <server>:8001",
        "isplit-export plan b --link lte",  # no --link at export: plan says whether to split
    ]
    assert not any("triton" in c for c in cmds)


def test_triton_and_the_exports_link() -> None:
    cmds = _steps("jetson", triton=True, link="lte")
    assert "tritonserver --model-repository b/triton" in cmds
    assert cmds[-1] == "isplit-export plan b"  # the export's link is the plan's default


@pytest.mark.parametrize("profile", PROFILES)
def test_each_isplit_export_step_parses_with_this_cli(profile: str) -> None:
    """The steps name real subcommands and flags: click parses each one (nothing runs)."""
    group = typer.main.get_command(app)
    for cmd in _steps(profile, triton=True):
        argv = shlex.split(cmd)
        if argv[0] != "isplit-export":
            continue
        sub = group.get_command(group.context_class(group), argv[1])  # type: ignore[attr-defined]
        assert sub is not None, cmd
        sub.make_context(argv[1], argv[2:])  # raises on an unknown flag or a missing argument


def test_the_exports_last_lines() -> None:
    lines = format_next_steps(load_target("jetson").to_json(), {}, True, "b", SHA)
    assert lines[0] == f"next steps (manifest sha256 {SHA}):"
    assert lines[-1] == "see b/report.md, docs/jetson.md and docs/serving.md"
    assert any(line.endswith(f"isplit-export verify b --expect-sha256 {SHA}") for line in lines)


def _manifest(profile: str, triton: bool) -> dict[str, object]:
    files = {
        "head": "01-conv.head.onnx",
        "tail": "01-conv.tail.onnx",
        "head_int8": "01-conv.head.int8.onnx",
        "golden": "splits/01-conv/golden.npz",
    }
    return {
        "schema": "isplit.bundle/1",
        "files": {},
        "target": load_target(profile).to_json(),
        "options": {},
        "splits": [{"dir": "splits/01-conv", "rank": 1, "node": "conv", "files": files}],
        "weights": {"layout": "shared"},
        **({"triton": {"repository": "triton"}} if triton else {}),
    }


def _section(report: str, heading: str) -> str:
    start = report.index(heading)
    end = report.find("\n## ", start + 1)
    return report[start : end if end >= 0 else len(report)]


@pytest.mark.parametrize(("profile", "guide"), [("jetson", "docs/jetson.md"), ("cpu", "docs/serving.md")])
def test_report_names_the_files_and_the_next_steps(profile: str, guide: str) -> None:
    report = render_report(_manifest(profile, triton=True), {})
    files = _section(report, "## Files")
    for path, key in [
        ("01-conv.head.onnx", "head"),
        ("01-conv.tail.onnx", "tail"),
        ("01-conv.head.int8.onnx", "head_int8"),
    ]:
        assert f"| `splits/01-conv` | `{path}` | {FILE_ROLES[key]} |" in files
    assert "`NN-<node>.<part>[.<variant>].onnx`" in files and "`weights/`" in files
    assert "`int8` = INT8 QDQ" in files and "`trt`" not in files  # only the variants the bundle has
    steps = _section(report, "## Next steps")
    assert report.index("## Next steps") < report.index("## CUI and layer size")  # first, after the header
    assert "isplit-export verify <bundle> --expect-sha256 <sha256 of manifest.json" in steps
    assert "isplit-export serve <bundle>" in steps and "isplit-export run <bundle> --url" in steps
    assert "tritonserver --model-repository <bundle>/triton" in steps and "`triton/`" in steps
    assert guide in steps and "docs/jetson.md" in steps
    assert ("isplit-export build-engines <bundle>" in steps) is (profile == "jetson")
    assert "`triton/`" not in render_report(_manifest(profile, triton=False), {})
