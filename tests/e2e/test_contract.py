"""Bundles are untrusted artefacts: every hole of the 76-probe hostile review (issue 17), closed and tested.

One real bundle (the trained digits CNN, target jetson: int8 pairs and TensorRT build plans) is built
once per session by the real CLI. Each test mutates a copy the way an attacker who edits a bundle in
transit would (often re-hashing the manifest, so the hash check alone cannot catch it), runs the real
CLI in a child process, and asserts the exit code, the one line on stderr and that nothing outside
the bundle changed.

TensorRT stand-in: CPU machines have no TensorRT, so ``build-engines`` would stop at "not installed".
To reach its own path handling (which plan and ONNX files it reads, where it writes engines, the
timing cache and ``engines/build.json``), :func:`_trt_standin` puts a tiny ``tensorrt`` module and a
``sitecustomize`` on PYTHONPATH that replace only :func:`trt_backend.build_engine` (the TensorRT build
itself) with a writer of fixed bytes through the very paths it was given. Everything else in
``build-engines`` (manifest, hashes, plan validation, output paths, build.json) is the real code.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.helpers import DIGITS

ROOT = Path(__file__).resolve().parents[2]


# --------------------------------------------------------------------------------------------------
# helpers


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", **extra}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *([extra["PYTHONPATH"]] if "PYTHONPATH" in extra else [])]
    )
    return env


def cli(
    *args: object, cwd: Path | None = None, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "isplit_export.cli", *map(str, args)],
        cwd=cwd,
        env=env or _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line(p: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """Assert exit ``code`` and exactly one ``error:`` line on stderr containing ``needles``; return it."""
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == code, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr and "internal failure" not in p.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def snapshot(root: Path, skip: Path | None = None) -> dict[str, str]:
    """sha256 (or 'dir'/'link') of everything under ``root`` except under ``skip``."""
    out = {}
    for p in sorted(root.rglob("*")):
        if skip is not None and (p == skip or skip in p.parents):
            continue
        rel = p.relative_to(root).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def manifest(b: Path) -> dict[str, Any]:
    return json.loads((b / "manifest.json").read_text())


def write_manifest(b: Path, m: Any, raw: str | None = None) -> None:
    (b / "manifest.json").write_text(raw if raw is not None else json.dumps(m, indent=2))


def rehash(b: Path, *rels: str) -> None:
    """What an attacker does after editing files: record their new sha256 in the manifest."""
    m = manifest(b)
    for rel in rels:
        data = (b / rel).read_bytes()
        m["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    write_manifest(b, m)


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


# --------------------------------------------------------------------------------------------------
# the bundle, built once


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory, digits_weights: Path, digits_dir: Path) -> dict[str, Any]:
    """A real bundle made by the real CLI (digits CNN, jetson target, 2 splits) and its CI summary."""
    root = tmp_path_factory.mktemp("built")
    out, summary = root / "bundle", root / "summary.json"
    p = cli(
        DIGITS,
        "--weights",
        digits_weights,
        "--data",
        digits_dir,
        "--target",
        "jetson",
        "--top",
        "2",
        "--out",
        out,
        "--verify-images",
        "32",
        "--golden",
        "2",
        "--latency-runs",
        "3",
        "--bootstrap",
        "0",
        "--summary-json",
        summary,
        cwd=root,
    )
    assert p.returncode == 0, p.stderr
    return {
        "bundle": out,
        "summary": json.loads(summary.read_text()),
        "weights": digits_weights,
        "data": digits_dir,
    }


@pytest.fixture
def work(tmp_path: Path, built: dict[str, Any]) -> Iterator[tuple[Path, Path]]:
    """``(area, bundle)``: a fresh copy of the bundle inside ``area``; after the test, nothing in ``area``
    outside the bundle may have changed (apart from what the test declares by removing it)."""
    area = tmp_path / "area"
    area.mkdir()
    (area / "precious.txt").write_text("keep me\n")
    b = area / "bundle"
    shutil.copytree(built["bundle"], b, symlinks=True)
    yield area, b


def outside_unchanged(area: Path, b: Path, before: dict[str, str]) -> None:
    assert snapshot(area, skip=b) == before


def split1(b: Path) -> dict[str, Any]:
    return manifest(b)["splits"][0]


# --------------------------------------------------------------------------------------------------
# 1. build-engines trusts the bundle (high)


def _trt_standin(where: Path) -> Path:
    """A ``tensorrt`` stand-in (see the module docstring): real path handling, fake TensorRT build."""
    (where / "tensorrt").mkdir(parents=True)
    (where / "tensorrt" / "__init__.py").write_text(
        '__version__ = "10.3.0.30"\n\n\nclass Builder:  # noqa\n    pass\n'
    )
    (where / "sitecustomize.py").write_text(
        "from pathlib import Path\n"
        "from isplit_export import contract\n"
        "from isplit_export.targets import trt_backend\n\n\n"
        "def build_engine(onnx_path, engine_path, *, timing_cache, **kw):\n"
        "    assert Path(onnx_path).is_file()\n"
        "    contract.write_output(engine_path, b'stand-in engine for ' + Path(onnx_path).name.encode())\n"
        "    contract.write_output(timing_cache, b'stand-in timing cache')\n"
        "    return {'onnx': Path(onnx_path).name, 'sha256': None, 'bytes': engine_path.stat().st_size}\n\n\n"
        "trt_backend.build_engine = build_engine\n"
    )
    return where


def test_build_engines_with_standin_writes_only_inside_engines(
    work: tuple[Path, Path], tmp_path: Path
) -> None:
    area, b = work
    before = snapshot(area, skip=b)
    env = _env(PYTHONPATH=str(_trt_standin(tmp_path / "standin")))
    p = cli("build-engines", b, env=env)
    assert p.returncode == 0, p.stderr
    for s in manifest(b)["splits"]:
        engines = b / s["dir"] / "engines"
        assert (engines / "build.json").is_file() and (engines / "timing.cache").is_file()
        assert sorted(x.name for x in engines.glob("*.engine")) == ["head.fp16.engine", "tail.fp16.engine"]
    assert cli("verify", b, "--no-write").returncode == 0  # engines/ is output, not part of the hashed bundle
    outside_unchanged(area, b, before)


@pytest.mark.parametrize(
    "field,value,code,needle",
    [
        ("timing_cache", "../../../precious.txt", 1, "leaves the bundle"),
        ("timing_cache", "/tmp/isplit-victim", 1, "not a path inside the bundle"),
        ("engine_head", "../../../precious.txt", 1, "leaves the bundle"),
        ("engine_head", "../../01-features_4.head.onnx", 1, "outside splits/"),
        ("onnx_head", "/etc/hostname", 1, "not a path inside the bundle"),
        ("onnx_head", "../../../precious.txt", 1, "leaves the bundle"),
        ("onnx_head", "../../full.onnx.not-listed", 1, "not listed"),
        ("workspace_mib", "lots", 2, "workspace_mib"),
        ("record", "../head.onnx", 1, "outside splits/"),
    ],
)
def test_build_engines_refuses_tampered_plan_paths(
    work: tuple[Path, Path], tmp_path: Path, field: str, value: str, code: int, needle: str
) -> None:
    area, b = work
    sdir = split1(b)["dir"]
    plan_rel = f"{sdir}/engine_plan.json"
    plan = json.loads((b / plan_rel).read_text())
    if field == "engine_head":
        plan["engines"]["head"]["engine"] = value
    elif field == "onnx_head":
        plan["engines"]["head"]["onnx"] = value
    else:
        plan[field] = value
    (b / plan_rel).write_text(json.dumps(plan))
    rehash(b, plan_rel)  # the attacker re-hashes: the hash check alone would not stop this
    before = snapshot(area, skip=b)
    inside = snapshot(b)
    env = _env(PYTHONPATH=str(_trt_standin(tmp_path / "standin")))
    one_line(cli("build-engines", b, env=env), code, needle)
    outside_unchanged(area, b, before)
    assert snapshot(b) == inside  # refused before writing anything, even inside
    assert not Path("/tmp/isplit-victim").exists()


def test_build_engines_refuses_unhashed_plan_and_bad_dir(work: tuple[Path, Path], tmp_path: Path) -> None:
    area, b = work
    env = _env(PYTHONPATH=str(_trt_standin(tmp_path / "standin")))
    before = snapshot(area, skip=b)
    plan_rel = f"{split1(b)['dir']}/engine_plan.json"
    plan = json.loads((b / plan_rel).read_text())
    plan["engines"]["head"]["onnx"] = "../../02-features_1.head.onnx"
    (b / plan_rel).write_text(json.dumps(plan))  # not re-hashed
    one_line(cli("build-engines", b, env=env), 1, plan_rel, "modified")
    m = manifest(b)
    m["splits"][0]["dir"] = "../../elsewhere"
    write_manifest(b, m)
    one_line(cli("build-engines", b, env=env), 1, "not a path inside the bundle")
    outside_unchanged(area, b, before)


def test_engine_record_file_cannot_point_outside(work: tuple[Path, Path]) -> None:
    """verify --backend tensorrt reads engines/build.json (an output, unhashed): its paths stay inside."""
    from isplit_export.contract import bundle_path
    from isplit_export.errors import GateFailedError

    _, b = work
    sdir = b / split1(b)["dir"]
    with pytest.raises(GateFailedError, match="not a path inside"):
        bundle_path(sdir, "../../../precious.txt", "engines/build.json")


# --------------------------------------------------------------------------------------------------
# 2. "passed" only means self-consistent: --expect-sha256


def test_poisoned_rehashed_bundle_passes_plain_verify_but_fails_expect_sha256(
    work: tuple[Path, Path], built: dict[str, Any], tmp_path: Path
) -> None:
    area, b = work
    env = _env(PYTHONPATH=str(_trt_standin(tmp_path / "standin")))
    published = built["summary"]["manifest_sha256"]
    assert published == sha(b / "manifest.json")
    p = cli("verify", b, "--expect-sha256", published, "--no-write")
    assert p.returncode == 0 and "matches --expect-sha256" in p.stdout and "self-consistency" in p.stdout
    # poison: new golden labels and report, then re-hash, as an attacker in transit would
    g = split1(b)["files"]["golden"]
    with np.load(b / g) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["labels"] = (arrays["labels"] + 1) % 10
    np.savez(b / g, **arrays)
    rehash(b, g)
    before = snapshot(area, skip=b)
    plain = cli("verify", b, "--no-write")
    assert plain.returncode == 0, plain.stderr  # self-consistent: "passed" cannot see the poisoning
    assert "does not prove where the bundle came from" in plain.stdout
    for cmd in (["verify", b], ["plan", b, "--link", "wifi"], ["build-engines", b]):
        one_line(cli(*cmd, "--expect-sha256", published, env=env), 1, "not the bundle CI published")
    one_line(cli("verify", b, "--expect-sha256", "abc"), 2, "is not a sha256")
    outside_unchanged(area, b, before)


# --------------------------------------------------------------------------------------------------
# 3. npz bombs


def _bomb(path: Path, mib: int) -> None:
    """A deflated ``input.npy`` of ``mib`` MiB of zeros (a few hundred KB on disk), plus small members."""
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        n = mib << 20
        header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
        header["shape"] = (n // 4,)
        with zf.open("input.npy", "w", force_zip64=True) as f:
            np.lib.format.write_array_header_1_0(f, header)
            chunk = bytes(1 << 20)
            for _ in range(mib):
                f.write(chunk)
        for k in ("boundary", "logits"):
            buf = __import__("io").BytesIO()
            np.lib.format.write_array(buf, np.zeros((1, 2), np.float32))
            zf.writestr(f"{k}.npy", buf.getvalue())


@pytest.mark.e2e
@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="peak RSS read from /proc (Linux)")
def test_npz_bomb_is_refused_before_decompressing(work: tuple[Path, Path]) -> None:
    area, b = work
    g = split1(b)["files"]["golden"]
    _bomb(b / g, 2048)
    assert (b / g).stat().st_size < 4 << 20
    rehash(b, g)
    before = snapshot(area, skip=b)
    rss = area.parent / "rss.txt"
    # VmHWM: this process's peak RSS (ru_maxrss would include the forking pytest's, kept across exec)
    code = (
        "import re, sys\nfrom isplit_export.cli import main\nrc = main(sys.argv[2:])\n"
        "hwm = re.search(r'VmHWM:\\s+(\\d+)', open('/proc/self/status').read()).group(1)\n"
        "open(sys.argv[1], 'w').write(hwm)\nsys.exit(rc)\n"
    )
    t0 = time.perf_counter()
    p = subprocess.run(
        [sys.executable, "-c", code, str(rss), "verify", str(b), "--no-write"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    rss_mib = int(rss.read_text()) / 1024
    one_line(p, 2, "zip bomb", g)
    assert rss_mib < 512, rss_mib  # on main: 2.24 GB for a 2 GiB member
    assert time.perf_counter() - t0 < 120
    outside_unchanged(area, b, before)


def test_npy_header_lying_about_its_shape_is_refused(work: tuple[Path, Path]) -> None:
    _, b = work
    g = split1(b)["files"]["golden"]
    with zipfile.ZipFile(b / g, "w") as zf:
        buf = __import__("io").BytesIO()
        header = np.lib.format.header_data_from_array_1_0(np.zeros(1, np.float32))
        header["shape"] = (1 << 40,)
        np.lib.format.write_array_header_1_0(buf, header)
        zf.writestr("input.npy", buf.getvalue() + bytes(64))
    rehash(b, g)
    one_line(cli("verify", b, "--no-write"), 2, "declares")


def test_pickled_golden_is_refused(work: tuple[Path, Path]) -> None:
    _, b = work
    g = split1(b)["files"]["golden"]
    np.savez(b / g, input=np.array([{"x": 1}], dtype=object), boundary=np.zeros(1), logits=np.zeros(1))
    rehash(b, g)
    one_line(cli("verify", b, "--no-write"), 2, "pickle")


# --------------------------------------------------------------------------------------------------
# 4. symlinks


def test_symlinked_golden_outside_is_refused(work: tuple[Path, Path]) -> None:
    area, b = work
    g = split1(b)["files"]["golden"]
    outside = area / "outside.npz"
    shutil.copy(b / g, outside)
    (b / g).unlink()
    (b / g).symlink_to(outside)
    rehash(b, g)
    before = snapshot(area, skip=b)
    one_line(cli("verify", b, "--no-write"), 1, "symlink")
    outside_unchanged(area, b, before)


def test_symlinked_ranking_leaks_nothing(work: tuple[Path, Path]) -> None:
    area, b = work
    secret = area / "shadow"
    secret.write_text("root:$6$secret-hash-material:19000:0:99999:7:::\n")
    digest = sha(secret)
    (b / "ranking.json").unlink()
    (b / "ranking.json").symlink_to(secret)
    before = snapshot(area, skip=b)
    for cmd in (["verify", b, "--no-write"], ["plan", b, "--link", "wifi", "--no-write"]):
        line = one_line(cli(*cmd), 1, "symlink")
        assert digest[:8] not in line and "secret" not in line
    outside_unchanged(area, b, before)


def test_symlinked_split_dir_is_refused(work: tuple[Path, Path]) -> None:
    area, b = work
    sdir = b / split1(b)["dir"]
    moved = area / "moved"
    shutil.move(str(sdir), moved)
    sdir.symlink_to(moved, target_is_directory=True)
    one_line(cli("verify", b, "--no-write"), 1, "crosses a symlink")


def test_triton_hard_links_keep_the_bundle_contract(work: tuple[Path, Path], built: dict[str, Any]) -> None:
    """The export hard-links the weight packs into triton/ (stored once); hashes, the closed bundle and
    verify hold with the links, and a copy (links turned into files) verifies the same."""
    m = manifest(built["bundle"])
    links: dict[str, int] = {}
    for model in m["triton"]["models"]:
        assert model["weights_stored"] == "hard link"
        for rel in model["weights"]:
            pack = f"weights/{Path(rel).name}"
            assert (built["bundle"] / rel).samefile(built["bundle"] / pack)
            assert m["files"][rel] == m["files"][pack]
            links[pack] = links.get(pack, 1) + 1
    assert links and all((built["bundle"] / p).stat().st_nlink == n for p, n in links.items())
    for bundle in (built["bundle"], work[1]):  # the exported bundle, and the copy the fixture made
        p = cli("verify", bundle, "--no-write")
        assert p.returncode == 0, p.stderr


def test_hard_linked_output_is_replaced_not_written_through(work: tuple[Path, Path]) -> None:
    """verify.json hard-linked to a file outside: verify replaces the bundle's name, the outside file stays."""
    area, b = work
    outside = area / "outside.json"
    outside.write_text('{"keep": "me"}\n')
    os.link(outside, b / "verify.json")
    before = snapshot(area, skip=b)
    p = cli("verify", b)
    assert p.returncode == 0, p.stderr
    outside_unchanged(area, b, before)
    assert not (b / "verify.json").samefile(outside) and json.loads((b / "verify.json").read_text())


def test_hard_linked_secret_in_a_read_bundle_leaks_nothing(work: tuple[Path, Path]) -> None:
    """A listed file swapped for a hard link to a secret: a hash mismatch naming the file, not its bytes."""
    area, b = work
    secret = area / "shadow"
    secret.write_text("root:$6$secret-hash-material:19000:0:99999:7:::\n")
    rel = manifest(b)["triton"]["models"][0]["weights"][0]
    (b / rel).unlink()
    os.link(secret, b / rel)
    before = snapshot(area, skip=b)
    line = one_line(cli("verify", b, "--no-write"), 1, rel)
    assert sha(secret)[:8] not in line and "secret" not in line
    outside_unchanged(area, b, before)


# --------------------------------------------------------------------------------------------------
# 5. plan: ranking.file anywhere, unhashed ranking, verify.json figures


@pytest.mark.parametrize(
    "value,needle",
    [
        ("../outside.json", "not a path inside"),
        ("/etc/hostname", "not a path inside"),
        ("notes.json", "not listed"),
    ],
)
def test_plan_ranking_file_must_be_a_hashed_bundle_file(
    work: tuple[Path, Path], value: str, needle: str
) -> None:
    area, b = work
    (area / "outside.json").write_text((b / "ranking.json").read_text())
    (b / "notes.json").write_text((b / "ranking.json").read_text())
    m = manifest(b)
    m["ranking"]["file"] = value
    write_manifest(b, m)
    before = snapshot(area, skip=b)
    one_line(cli("plan", b, "--link", "wifi", "--no-write"), 1, needle)
    outside_unchanged(area, b, before)


def test_plan_checks_the_ranking_hash(work: tuple[Path, Path]) -> None:
    _, b = work
    r = json.loads((b / "ranking.json").read_text())
    r["candidates"][0]["cui"] = 1e9
    (b / "ranking.json").write_text(json.dumps(r))
    one_line(cli("plan", b, "--link", "wifi", "--no-write"), 1, "ranking.json", "modified")


@pytest.mark.parametrize("value", [-500.0, 0.0, "fast", 1e300, None])
def test_plan_validates_measured_figures(work: tuple[Path, Path], value: Any) -> None:
    _, b = work
    sdir = split1(b)["dir"]
    verify = {
        "schema": "isplit.verify/1",
        "manifest_sha256": sha(b / "manifest.json"),
        "rows": [
            {
                "dir": sdir,
                "backend": "tensorrt",
                "precision": "fp16",
                "latency_ms": {"head_ms": value, "tail_ms": 1.0},
            }
        ],
    }
    (b / "verify.json").write_text(json.dumps(verify))
    p = cli("plan", b, "--link", "wifi", "--no-write")
    if value is None:  # no figure: the estimate stands
        assert p.returncode == 0, p.stderr
        return
    one_line(p, 2, "verify.json", "head_ms")
    # the same figures in the manifest's own run block
    (b / "verify.json").unlink()
    m = manifest(b)
    m["run"]["latency_ms"][sdir]["head_ms"] = value
    write_manifest(b, m)
    one_line(cli("plan", b, "--link", "wifi", "--no-write"), 2, "head_ms")


def test_plan_refuses_a_verify_json_of_another_manifest(work: tuple[Path, Path]) -> None:
    _, b = work
    (b / "verify.json").write_text(json.dumps({"manifest_sha256": "0" * 64, "rows": []}))
    one_line(cli("plan", b, "--link", "wifi", "--no-write"), 2, "another manifest")
    assert cli("plan", b, "--link", "wifi", "--no-write", "--estimated").returncode == 0


# --------------------------------------------------------------------------------------------------
# 6. plan / verify input validation: deep nesting, single-field mutations (property test below)


def test_deeply_nested_manifest_is_one_line_exit_2(work: tuple[Path, Path], tmp_path: Path) -> None:
    _, b = work
    env = _env(PYTHONPATH=str(_trt_standin(tmp_path / "standin")))
    raw = manifest(b)
    text = json.dumps(raw)[:-1] + ', "deep": ' + "[" * 100_000 + "]" * 100_000 + "}"
    write_manifest(b, None, text)
    for cmd in (
        ["verify", b, "--no-write"],
        ["plan", b, "--link", "wifi", "--no-write"],
        ["build-engines", b],
    ):
        one_line(cli(*cmd, env=env), 2, "nests", "levels deep")


def test_non_strict_json_is_refused(work: tuple[Path, Path]) -> None:
    _, b = work
    text = (b / "manifest.json").read_text().replace('"schema"', '"x": NaN, "schema"', 1)
    write_manifest(b, None, text)
    one_line(cli("verify", b, "--no-write"), 2, "not strict JSON")
    write_manifest(b, None, text.replace('"x": NaN, ', '"schema": "x", '))
    one_line(cli("verify", b, "--no-write"), 2, "duplicate key")


# --------------------------------------------------------------------------------------------------
# 7. --force deletes only a bundle; 11. uncreatable --out; 13. --summary-json; 16. --server; 12. --link


def _export_args(built: dict[str, Any], out: Path, *extra: object) -> list[object]:
    return [
        DIGITS,
        "--weights",
        built["weights"],
        "--data",
        built["data"],
        "--top",
        "1",
        "--out",
        out,
        "--verify-images",
        "16",
        "--golden",
        "2",
        "--latency-runs",
        "2",
        "--bootstrap",
        "0",
        *extra,
    ]


def test_force_refuses_a_directory_that_is_not_a_bundle(tmp_path: Path, built: dict[str, Any]) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("\\documentclass{article}\n")
    before = snapshot(tmp_path)
    one_line(cli(*_export_args(built, precious, "--force"), cwd=tmp_path), 2, "--force replaces only")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("where", ["/proc/isplit-x", "file/x"])
def test_uncreatable_out_is_refused_before_any_work(
    tmp_path: Path, built: dict[str, Any], where: str
) -> None:
    (tmp_path / "file").write_text("a file\n")
    out = Path(where) if where.startswith("/") else tmp_path / where
    t0 = time.perf_counter()
    one_line(cli(*_export_args(built, out), cwd=tmp_path), 2, "cannot create --out")
    assert time.perf_counter() - t0 < 60
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_out_dot_force_is_refused_and_leaves_nothing(tmp_path: Path, built: dict[str, Any]) -> None:
    shutil.copytree(built["bundle"], tmp_path / "b")
    before = snapshot(tmp_path)
    one_line(cli(*_export_args(built, Path("."), "--force"), cwd=tmp_path / "b"), 2, "current directory")
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--summary-json", "DIR"], "is a directory"),
        (["--summary-json", "FILE/summary.json"], "cannot write --summary-json"),
        (["--server", "nosuch"], "unknown --server 'nosuch'"),
        (["--link", "1e-320"], "bandwidth"),
        (["--link", "10,1e300"], "RTT"),
    ],
)
def test_options_are_validated_before_any_work(
    tmp_path: Path, built: dict[str, Any], extra: list[str], needle: str
) -> None:
    (tmp_path / "DIR").mkdir()
    (tmp_path / "FILE").write_text("x\n")
    args = [a.replace("DIR", str(tmp_path / "DIR")).replace("FILE", str(tmp_path / "FILE")) for a in extra]
    t0 = time.perf_counter()
    one_line(cli(*_export_args(built, tmp_path / "out", *args), cwd=tmp_path), 2, needle)
    assert time.perf_counter() - t0 < 60  # no ranking ran
    assert sorted(p.name for p in tmp_path.iterdir()) == ["DIR", "FILE"]


def test_plan_link_bounds_and_strict_json(work: tuple[Path, Path]) -> None:
    _, b = work
    one_line(cli("plan", b, "--link", "1e-320"), 2, "bandwidth")
    one_line(cli("plan", b, "--link", "nosuch"), 2, "unknown --link")
    one_line(cli("plan", b, "--link", "wifi", "--server", "nosuch"), 2, "unknown --server 'nosuch'")
    assert cli("plan", b, "--link", "0.001,600000").returncode == 0
    json.loads((b / "plan.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in plan.json"))


# --------------------------------------------------------------------------------------------------
# 8. concurrent exports; 9. SIGTERM / SIGKILL leftovers; 18. permissions


def _wait_for(pred: Any, timeout: float = 300) -> None:
    t0 = time.time()
    while not pred():
        assert time.time() - t0 < timeout, "timed out"
        time.sleep(0.05)


def _popen(args: list[object], cwd: Path) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "isplit_export.cli", *map(str, args)],
        cwd=cwd,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@pytest.mark.e2e
def test_two_exports_to_the_same_out_second_is_refused(tmp_path: Path, built: dict[str, Any]) -> None:
    out = tmp_path / "b"
    # the first holds the lock for seconds (a bottleneck to train), however slowly the second one starts
    first = _popen(_export_args(built, out, "--bottleneck", "1/4", "--train-steps", "1500"), tmp_path)
    _wait_for(lambda: (tmp_path / ".b.lock").exists() or first.poll() is not None)
    second = cli(*_export_args(built, out, "--force"), cwd=tmp_path)
    assert first.wait(timeout=600) == 0, first.stderr.read() if first.stderr else ""
    one_line(second, 2, "another isplit-export run is writing")
    assert cli("verify", out, "--no-write").returncode == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]


@pytest.mark.e2e
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_killed_export_keeps_the_previous_bundle_and_next_run_cleans_up(
    tmp_path: Path, built: dict[str, Any], sig: signal.Signals
) -> None:
    out = tmp_path / "b"
    shutil.copytree(built["bundle"], out)
    before = snapshot(out)
    # a bottleneck trained for seconds inside the temporary directory: the signal lands mid-write (a plain
    # digits export spends only ~0.4 s there, and a signal after the rename finds --out complete)
    slow = _export_args(built, out, "--force", "--bottleneck", "1/4", "--train-steps", "3000")
    proc = _popen(slow, tmp_path)
    _wait_for(lambda: any(tmp_path.glob(".b.tmp-*/*")) or proc.poll() is not None)  # mid-write
    proc.send_signal(sig)
    rc = proc.wait(timeout=120)
    err = proc.stderr.read() if proc.stderr else ""
    assert snapshot(out) == before  # the previous bundle is intact
    if sig == signal.SIGTERM:
        assert (
            rc == 143
            and err.strip().splitlines()[-1] == "error: terminated (SIGTERM): nothing was written to --out"
        ), err
        assert not list(tmp_path.glob(".b.*"))
    else:
        assert rc == -9 and list(tmp_path.glob(".b.tmp-*"))  # SIGKILL cannot be handled: a leftover
    nxt = cli(*_export_args(built, out, "--force"), cwd=tmp_path)
    assert nxt.returncode == 0, nxt.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no .b.tmp-*, .b.old-*, .b.lock


def test_stale_temp_dir_of_a_dead_process_is_removed_but_foreign_ones_stay(tmp_path: Path) -> None:
    import socket

    from isplit_export.outdir import check_out

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale, live, foreign = tmp_path / ".b.tmp-aaa", tmp_path / ".b.tmp-bbb", tmp_path / ".b.tmp-ccc"
    for d in (stale, live, foreign):
        d.mkdir()
        (d / "big.onnx").write_bytes(b"x" * 1000)
    (tmp_path / ".b.tmp-aaa.owner").write_text(f"{dead.pid} {socket.gethostname()}\n")
    (tmp_path / ".b.tmp-bbb.owner").write_text(f"{os.getpid()} {socket.gethostname()}\n")
    from isplit_export.outdir import _unlock

    check_out(tmp_path / "b", force=False)
    _unlock((tmp_path / "b").absolute())
    assert not stale.exists() and not (tmp_path / ".b.tmp-aaa.owner").exists()
    assert live.exists() and foreign.exists()  # a live owner, and one without our marker, stay


def test_out_that_appears_meanwhile_is_not_replaced(tmp_path: Path) -> None:
    """The re-check at the final rename: a folder someone fills meanwhile survives, nothing is left behind."""
    from isplit_export.errors import BadInputError
    from isplit_export.outdir import atomic_directory

    out = tmp_path / "b"
    with (
        pytest.raises(BadInputError, match="while this run was writing"),
        atomic_directory(out, force=False) as tmp,
    ):
        (tmp / "x").write_text("new\n")
        out.mkdir()
        (out / "theirs.txt").write_text("theirs\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]
    assert [p.name for p in out.iterdir()] == ["theirs.txt"]


@pytest.mark.parametrize("mask,dmode,fmode", [(0o022, 0o755, 0o644), (0o027, 0o750, 0o640)])
def test_bundle_outputs_follow_the_umask(
    work: tuple[Path, Path], tmp_path: Path, mask: int, dmode: int, fmode: int
) -> None:
    from isplit_export.files import write_text_atomic
    from isplit_export.outdir import atomic_directory

    _, b = work
    old = os.umask(mask)
    try:
        with atomic_directory(tmp_path / "new", force=False) as tmp:
            write_text_atomic(tmp / "x.json", "{}\n")
        write_text_atomic(b / "verify.json", "{}\n")
    finally:
        os.umask(old)
    assert (tmp_path / "new").stat().st_mode & 0o777 == dmode
    assert (tmp_path / "new" / "x.json").stat().st_mode & 0o777 == fmode
    assert (b / "verify.json").stat().st_mode & 0o777 == fmode


def test_exported_bundle_is_readable_by_others(built: dict[str, Any]) -> None:
    b = built["bundle"]  # built by the CLI under the test process's umask (022 in CI)
    mask = os.umask(0)
    os.umask(mask)
    assert b.stat().st_mode & 0o777 == 0o777 & ~mask
    assert (b / "manifest.json").stat().st_mode & 0o777 == 0o666 & ~mask


# --------------------------------------------------------------------------------------------------
# 10. read-only bundle: results printed anyway, --out, --no-write


def test_unwritable_bundle_prints_results_then_one_line(work: tuple[Path, Path], tmp_path: Path) -> None:
    _, b = work
    (b / "verify.json").mkdir()  # writing verify.json fails as on a read-only mount (we run as root here)
    p = cli("verify", b)
    assert "onnxruntime: passed" in p.stdout
    one_line(p, 2, "--no-write", "--out PATH")
    (b / "verify.json").rmdir()
    (b / "plan.json").mkdir()
    p = cli("plan", b, "--link", "wifi")
    assert "all on device" in p.stdout
    one_line(p, 2, "--no-write")
    assert cli("verify", b, "--no-write").returncode == 0
    report = tmp_path / "reports" / "verify.json"
    p = cli("verify", b, "--out", report)
    assert p.returncode == 0 and json.loads(report.read_text())["outcome"] == "passed"
    p = cli("plan", b, "--link", "wifi", "--out", tmp_path / "plan.json")
    assert p.returncode == 0 and json.loads((tmp_path / "plan.json").read_text())["schema"] == "isplit.plan/1"
    one_line(cli("verify", b, "--out", tmp_path / "r.json", "--no-write"), 2, "contradict")
    one_line(cli("verify", b, "--out", tmp_path), 2, "is a directory")


# --------------------------------------------------------------------------------------------------
# 14. non-UTF-8 file names with --bottleneck; 15. rank --out; 17. onnxruntime's log


@pytest.mark.e2e
def test_non_utf8_image_name_with_bottleneck(tmp_path: Path, built: dict[str, Any]) -> None:
    data = tmp_path / "data"
    shutil.copytree(built["data"], data)
    first_class = sorted(p for p in data.iterdir() if p.is_dir())[0]
    src = sorted(first_class.iterdir())[0]
    os.rename(bytes(src), bytes(first_class) + b"/\xff\xfe-latin1-\xe9.png")
    p = cli(
        DIGITS,
        "--weights",
        built["weights"],
        "--data",
        data,
        "--top",
        "1",
        "--out",
        tmp_path / "b",
        "--verify-images",
        "32",
        "--golden",
        "2",
        "--latency-runs",
        "2",
        "--bootstrap",
        "0",
        "--bottleneck",
        "1/4",
        "--train-steps",
        "2",
        cwd=tmp_path,
    )
    assert p.returncode in (0, 1), p.stderr
    assert "internal failure" not in p.stderr


def test_split_holdout_takes_non_utf8_names() -> None:
    from isplit_export.bottleneck.holdout import split_holdout

    names = [os.fsdecode(b"\xff%d.png" % i) for i in range(20)]
    train, held = split_holdout(names, 0.25, 0)
    assert sorted(train + held) == list(range(20)) and held


def test_rank_out_refuses_a_bundle_and_a_foreign_folder(tmp_path: Path, built: dict[str, Any]) -> None:
    b = tmp_path / "b"
    shutil.copytree(built["bundle"], b)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.md").write_text("mine\n")
    before = snapshot(tmp_path)
    rank = ["rank", DIGITS, "--weights", built["weights"], "--data", built["data"], "--bootstrap", "0"]
    one_line(cli(*rank, "--out", b, cwd=tmp_path), 2, "already exists")
    one_line(cli(*rank, "--out", other, "--force", cwd=tmp_path), 2, "--force replaces only")
    assert snapshot(tmp_path) == before
    assert cli("verify", b, "--no-write").returncode == 0


def test_broken_model_gives_our_line_only(work: tuple[Path, Path]) -> None:
    _, b = work
    head = split1(b)["files"]["head"]
    (b / head).write_bytes(b"\x08\x07 not an onnx model")
    rehash(b, head)
    line = one_line(cli("verify", b, "--no-write"), 3, "onnxruntime cannot load")
    assert "\x1b[" not in line


# --------------------------------------------------------------------------------------------------
# property test: every single-field mutation of manifest.json and ranking.json


def _paths(obj: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj[:3]):  # the first three items of a list stand for all
            yield from _paths(v, (*prefix, i))


MUTATIONS: list[tuple[str, Any]] = [
    ("delete", None),
    ("null", None),
    ("string", "x"),
    ("int", 7),
    ("negative", -1),
    ("nan", float("nan")),
    ("huge", 1e308),
    ("list", []),
    ("object", {}),
    ("nested", {"a": [[[{"b": None}]]]}),
    ("bool", True),
    ("inf", float("-inf")),
    ("path", "../../../etc/passwd"),
]


def _mutate(doc: Any, path: tuple[Any, ...], kind: str, value: Any) -> Any:
    import copy

    doc = copy.deepcopy(doc)
    parent = doc
    for k in path[:-1]:
        parent = parent[k]
    last = path[-1]
    if kind == "delete":
        if isinstance(parent, dict):
            del parent[last]
        else:
            parent.pop(last)
    else:
        parent[last] = value
    return doc


def _cases(doc: Any, stride: int) -> list[tuple[tuple[Any, ...], str, Any]]:
    """Each field path with a mutation kind cycling through :data:`MUTATIONS` (every kind on the top level)."""
    out = []
    for n, path in enumerate(p for p in _paths(doc) if p):
        kinds = MUTATIONS if len(path) == 1 else [MUTATIONS[(n * stride) % len(MUTATIONS)]]
        out.extend((path, kind, value) for kind, value in kinds)
    return out


def _run_main(*args: object) -> tuple[int, str]:
    import contextlib
    import io

    from isplit_export.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        code = main([str(a) for a in args])
    return code, err.getvalue()


@pytest.mark.e2e
def test_every_single_field_mutation_is_exit_0_1_or_2(tmp_path: Path, built: dict[str, Any]) -> None:
    b = tmp_path / "b"
    shutil.copytree(built["bundle"], b)
    original_m = (b / "manifest.json").read_text()
    original_r = (b / "ranking.json").read_text()
    m0, r0 = json.loads(original_m), json.loads(original_r)
    results: dict[int, int] = {}
    failures = []
    for target, doc, stride in (("manifest", m0, 1), ("ranking", r0, 5)):
        for path, kind, value in _cases(doc, stride):
            (b / "manifest.json").write_text(original_m)
            (b / "ranking.json").write_text(original_r)
            text = json.dumps(_mutate(doc, path, kind, value))  # NaN/Infinity written as JSON5 would
            if target == "manifest":
                (b / "manifest.json").write_text(text)
            else:
                (b / "ranking.json").write_text(text)
                rehash(b, "ranking.json")  # so plan's validation, not the hash, is what is tested
            cmds = [("plan", b, "--link", "wifi", "--no-write")]
            if target == "manifest":
                cmds.append(("verify", b, "--no-write", "--split", "1"))
            for cmd in cmds:
                code, err = _run_main(*cmd)
                results[code] = results.get(code, 0) + 1
                lines = [x for x in err.splitlines() if x.strip()]
                if code not in (0, 1, 2) or "Traceback" in err or (code and len(lines) != 1):
                    failures.append((cmd[0], target, path, kind, code, err.strip()[:300]))
    assert not failures, f"{len(failures)} bad outcomes, e.g. {failures[:5]}"
    assert sum(results.values()) > 300 and results.get(2, 0) > 50, results
