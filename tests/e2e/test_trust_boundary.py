"""Issue 24, the bundle side of the trust boundary: engines built here or refused (S2), ``plan``'s honest link
and range-checked run.json (R8), ranking candidates without ``rank`` (R9), goldens read as needed (R10).

One real bundle (the trained digits CNN, target jetson: TensorRT build plans and int8 pairs, exported with
``--link wifi``) is built once by the real CLI; each test works on a copy and runs the real CLI.

TensorRT stand-in (CPU machines have no TensorRT): :func:`_trt_standin` puts a ``tensorrt`` package on
PYTHONPATH that fakes only the API the code calls (a version, ``Builder``, ``Logger``, ``Runtime``), whose
``deserialize_cuda_engine`` appends the sha256 of the bytes it is handed to a log file and returns None
(so a load that gets that far ends in "cannot load", exit 2), and a ``sitecustomize`` that replaces only
the TensorRT build inside :func:`trt_backend.build_engine` with a writer of fixed bytes, as the
build-engines tests of ``test_contract.py`` do. Everything else (build-engines' paths and record, the
trust file, verify, run's head) is the real code. The log proves whether an engine reached TensorRT.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.support.helpers import DIGITS, run_cli

ROOT = Path(__file__).resolve().parents[2]


def _env(tmp: Path, state: str = "state", **extra: str) -> dict[str, str]:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "XDG_STATE_HOME": str(tmp / state), **extra}
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT), *([extra["PYTHONPATH"]] if "PYTHONPATH" in extra else [])]
    )
    return env


def cli(
    *args: object, env: dict[str, str] | None = None, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """The real CLI in a child process."""
    return subprocess.run(
        [sys.executable, "-m", "isplit_export.cli", *map(str, args)],
        env=env or {**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def one_line(p: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert p.returncode == code, (p.returncode, p.stdout[-2000:], p.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert "Traceback" not in p.stderr and "internal failure" not in p.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])
    return lines[0]


def manifest(b: Path) -> dict[str, Any]:
    return dict(json.loads((b / "manifest.json").read_text()))


def rehash(b: Path, *rels: str) -> None:
    """What an attacker (or a careless tool) does after editing files: record their new sha256."""
    m = manifest(b)
    for rel in rels:
        data = (b / rel).read_bytes()
        m["files"][rel] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (b / "manifest.json").write_text(json.dumps(m, indent=2))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory, digits_weights: Path, digits_dir: Path) -> Path:
    out = tmp_path_factory.mktemp("trust") / "bundle"
    p = cli(
        DIGITS,
        "--weights",
        digits_weights,
        "--data",
        digits_dir,
        "--target",
        "jetson",
        "--top",
        "1",
        "--link",
        "wifi",
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
    )
    assert p.returncode == 0, p.stderr
    return out


@pytest.fixture
def b(tmp_path: Path, built: Path) -> Path:
    dst = tmp_path / "bundle"
    shutil.copytree(built, dst)
    return dst


# --------------------------------------------------------------------------------------------------
# S2: engines are built here or refused


def _trt_standin(where: Path) -> Path:
    pkg = where / "tensorrt"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(
        "import hashlib, os\n\n"
        '__version__ = "10.3.0.30"\n\n\n'
        "class Builder:  # noqa\n    pass\n\n\n"
        "class Logger:  # noqa\n    WARNING = 2\n\n    def __init__(self, *a):\n        pass\n\n\n"
        "class Runtime:  # noqa\n"
        "    def __init__(self, logger):\n        pass\n\n"
        "    def deserialize_cuda_engine(self, data):\n"
        "        with open(os.environ['STANDIN_TRT_LOG'], 'a') as f:\n"
        "            f.write(hashlib.sha256(data).hexdigest() + '\\n')\n"
        "        return None\n"
    )
    (where / "sitecustomize.py").write_text(
        "from pathlib import Path\n"
        "from isplit_export import contract\n"
        "from isplit_export.targets import trt_backend\n\n\n"
        "def build_engine(onnx_path, engine_path, *, timing_cache, **kw):\n"
        "    contract.write_output(engine_path, b'stand-in engine for ' + Path(onnx_path).name.encode())\n"
        "    contract.write_output(timing_cache, b'stand-in timing cache')\n"
        "    return {'onnx': Path(onnx_path).name, 'sha256': None, 'bytes': engine_path.stat().st_size}\n\n\n"
        "trt_backend.build_engine = build_engine\n"
    )
    return where


@pytest.fixture
def trt(tmp_path: Path) -> dict[str, Any]:
    """The stand-in's PYTHONPATH and its deserialisation log."""
    log = tmp_path / "deserialised.log"
    log.write_text("")
    return {"path": str(_trt_standin(tmp_path / "standin")), "log": log}


def _deserialised(trt: dict[str, Any]) -> list[str]:
    return trt["log"].read_text().split()


def _sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_engines_built_elsewhere_or_forged_are_refused_built_here_accepted(
    b: Path, tmp_path: Path, trt: dict[str, Any]
) -> None:
    sdir = b / manifest(b)["splits"][0]["dir"]
    elsewhere = _env(tmp_path, "elsewhere", PYTHONPATH=trt["path"], STANDIN_TRT_LOG=str(trt["log"]))
    here = _env(tmp_path, "here", PYTHONPATH=trt["path"], STANDIN_TRT_LOG=str(trt["log"]))
    # the bundle arrives with engines and a self-consistent build.json, built on another machine
    assert cli("build-engines", b, env=elsewhere).returncode == 0
    head, tail = sdir / "engines/head.fp16.engine", sdir / "engines/tail.fp16.engine"
    assert head.is_file() and tail.is_file()
    line = one_line(
        cli("verify", b, "--backend", "tensorrt", "--no-write", env=here),
        2,
        "build-engines",
        "--trust-engines",
        str(head),
    )
    assert "was not built on this machine" in line
    assert _deserialised(trt) == []  # refused before TensorRT saw a byte
    # a forged engine with a build.json re-hashed to match it: refused too
    head.write_bytes(b"attacker's engine")
    record = json.loads((sdir / "engines/build.json").read_text())
    record["engines"]["head"]["sha256"] = _sha(head)
    (sdir / "engines/build.json").write_text(json.dumps(record))
    one_line(cli("verify", b, "--backend", "tensorrt", "--no-write", env=elsewhere), 2, "build-engines")
    one_line(
        cli(
            "run",
            b,
            "--url",
            "127.0.0.1:9",
            "--backend",
            "tensorrt",
            "--wait",
            "0",
            "--no-write",
            env=elsewhere,
        ),
        2,
        "build-engines",
    )
    assert _deserialised(trt) == []
    # --trust-engines: the explicit opt-in hands them to TensorRT (whose stand-in then cannot load them)
    one_line(
        cli("verify", b, "--backend", "tensorrt", "--no-write", "--trust-engines", env=here), 2, "cannot load"
    )
    assert _deserialised(trt) == [_sha(head)]
    # built here by build-engines: accepted without the flag, by verify and by run's head
    trt["log"].write_text("")
    assert cli("build-engines", b, env=here).returncode == 0
    assert _sha(head) != hashlib.sha256(b"attacker's engine").hexdigest()
    one_line(cli("verify", b, "--backend", "tensorrt", "--no-write", env=here), 2, "cannot load")
    assert _deserialised(trt) == [_sha(head)]
    one_line(
        cli(
            "run",
            b,
            "--url",
            "127.0.0.1:9",
            "--backend",
            "tensorrt",
            "--wait",
            "0",
            "--no-write",
            env=here,
        ),
        2,
        "cannot load",
        "head.fp16.engine",
    )
    assert _deserialised(trt) == [_sha(head)] * 2
    # the record lives outside the bundle, private to the user
    state = tmp_path / "here" / "isplit-export" / "engines.json"
    assert stat.S_IMODE(state.stat().st_mode) == 0o600 and stat.S_IMODE(state.parent.stat().st_mode) == 0o700
    assert {_sha(head), _sha(tail)} <= set(json.loads(state.read_text())["engines"])
    assert not any(p.name == "engines.json" for p in b.rglob("*"))


def test_run_auto_backend_takes_the_head_engine_built_here(
    b: Path, tmp_path: Path, trt: dict[str, Any]
) -> None:
    """``run``'s default ``--backend auto``: TensorRT's head engine when build-engines built it here, else
    onnxruntime (then, with no server, exit 5 after the head was set up)."""
    env = _env(tmp_path, PYTHONPATH=trt["path"], STANDIN_TRT_LOG=str(trt["log"]))
    args = ("run", b, "--url", "127.0.0.1:9", "--wait", "0", "--no-write")
    assert cli(*args, env=env).returncode == 5  # no engine: onnxruntime, no server
    assert cli("build-engines", b, env=_env(tmp_path, "elsewhere", PYTHONPATH=trt["path"])).returncode == 0
    assert cli(*args, env=env).returncode == 5 and _deserialised(trt) == []  # built elsewhere: not taken
    assert cli("build-engines", b, env=env).returncode == 0
    one_line(cli(*args, env=env), 2, "cannot load", "head.fp16.engine")  # built here: the engine is taken
    head = b / manifest(b)["splits"][0]["dir"] / "engines/head.fp16.engine"
    assert _deserialised(trt) == [_sha(head)]
    assert cli(*args, env=_env(tmp_path)).returncode == 5  # TensorRT not importable: onnxruntime


# --------------------------------------------------------------------------------------------------
# R8: plan derives no bandwidth from a loopback run; run.json range-checked against the manifest


def _run_entry(b: Path, **over: Any) -> dict[str, Any]:
    s = manifest(b)["splits"][0]
    entry: dict[str, Any] = {
        "split": s["dir"],
        "index": s["index"],
        "backend": "tensorrt",
        "host": "device",
        "server": {"address": "127.0.0.1:8001", "protocol": "grpc", "address_class": "loopback"},
        "images": {"ok": 20},
        "server_compute": {"ms": {"p50": 0.5}},
        "link_ms_p50": 4.67,
        "latency_ms": {"head": {"p50": 0.25}},
        "bytes": {"bundle_bytes_per_image": s["boundary"]["bytes_per_image"]},
    }
    entry.update(over)
    return entry


def _write_runs(b: Path, runs: dict[str, Any]) -> None:
    from isplit_export.contract import RUN_SCHEMA

    doc = {"schema": RUN_SCHEMA, "manifest_sha256": _sha(b / "manifest.json"), "runs": runs}
    (b / "run.json").write_text(json.dumps(doc))


def test_plan_derives_no_bandwidth_from_a_loopback_run(capsys: pytest.CaptureFixture[str], b: Path) -> None:
    sdir = manifest(b)["splits"][0]["dir"]
    _write_runs(b, {sdir: _run_entry(b)})
    code, out, err = run_cli(capsys, "plan", b, "--no-write")
    assert code == 0, err
    head = out.splitlines()[0]
    assert "link wifi" in head and "link measured" not in head  # the export's named link stays
    assert "loopback 127.0.0.1:8001" in out and "no bandwidth is derived" in out
    assert "measured device+server" in out  # the server's compute and the head are used, the link is not
    code, _, err = run_cli(capsys, "plan", b, "--link", "measured", "--no-write")
    assert code == 2 and "server on this machine" in err and len(err.strip().splitlines()) == 1
    # the same figures from a server on another machine: a measured link
    _write_runs(
        b,
        {
            sdir: _run_entry(
                b, server={"address": "10.0.0.2:8001", "protocol": "grpc", "address_class": "remote"}
            )
        },
    )
    code, out, err = run_cli(capsys, "plan", b, "--no-write")
    assert code == 0, err
    assert out.splitlines()[0].startswith("objective") and "link measured" in out.splitlines()[0]
    assert "measured device+link+server" in out


@pytest.mark.parametrize(
    "over,needle",
    [
        ({"bytes": {"bundle_bytes_per_image": 0}}, "bundle_bytes_per_image"),
        ({"bytes": {"bundle_bytes_per_image": 7}}, "bundle_bytes_per_image"),
        ({"link_ms_p50": 5e-324}, "link_ms_p50"),
        ({"link_ms_p50": -1}, "link_ms_p50"),
        ({"server_compute": {"ms": {"p50": 1e300}}}, "server_compute.ms.p50"),
        ({"index": 999}, "index"),
        ({"split": "splits/99-evil"}, "split"),
        ({"server": {"address": "x:1", "protocol": "grpc", "address_class": "moon"}}, "address_class"),
    ],
)
def test_plan_range_checks_run_json(
    capsys: pytest.CaptureFixture[str], b: Path, over: dict[str, Any], needle: str
) -> None:
    sdir = manifest(b)["splits"][0]["dir"]
    remote = {"address": "10.0.0.2:8001", "protocol": "grpc", "address_class": "remote"}
    _write_runs(b, {sdir: _run_entry(b, server=remote) | over})
    code, out, err = run_cli(capsys, "plan", b, "--no-write")
    lines = err.strip().splitlines()
    assert code == 2 and out == "" and len(lines) == 1, (code, out, err)
    assert needle in lines[0] and "run.json" in lines[0] and "--estimated" in lines[0]


def test_plan_refuses_a_run_entry_for_a_split_not_in_the_manifest(
    capsys: pytest.CaptureFixture[str], b: Path
) -> None:
    sdir = manifest(b)["splits"][0]["dir"]
    _write_runs(b, {sdir: _run_entry(b), "splits/09-forged": _run_entry(b, split="splits/09-forged")})
    code, _, err = run_cli(capsys, "plan", b, "--no-write")
    assert code == 2 and "'splits/09-forged' names no split" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------------------------------
# R9: a candidate without rank (the contract allows it), and a small fuzz of ranking.json and run.json


def _ranking_rel(b: Path) -> str:
    return str((manifest(b).get("ranking") or {}).get("file") or "ranking.json")


def test_plan_copes_with_candidates_without_rank(capsys: pytest.CaptureFixture[str], b: Path) -> None:
    rel = _ranking_rel(b)
    r = json.loads((b / rel).read_text())
    ranked = [c for c in r["candidates"] if c.get("rank") is not None]
    assert len(ranked) >= 2, "the fixture's ranking should have several candidates"
    del ranked[-1]["rank"]  # no longer a candidate: one fewer row, no KeyError
    (b / rel).write_text(json.dumps(r))
    rehash(b, rel)
    code, out, err = run_cli(capsys, "plan", b, "--no-write", "--link", "wifi")
    assert code == 0, err
    assert out.count("\n") >= 4
    for c in r["candidates"]:  # none left: one line, exit 2
        c.pop("rank", None)
    (b / rel).write_text(json.dumps(r))
    rehash(b, rel)
    code, _, err = run_cli(capsys, "plan", b, "--no-write", "--link", "wifi")
    assert code == 2 and "no candidate split" in err and len(err.strip().splitlines()) == 1


_VALUES: list[Any] = [None, "x", -1, 0, 1e308, 5e-324, [], {}, True]


def test_plan_fuzz_never_fails_internally(capsys: pytest.CaptureFixture[str], b: Path) -> None:
    """Every field of the first candidate of ranking.json (re-hashed) and of a run.json entry, removed or set
    to each odd value: plan answers 0 or one line with exit 1/2, never an internal failure (exit 3)."""
    rel = _ranking_rel(b)
    original = (b / rel).read_text()
    sdir = manifest(b)["splits"][0]["dir"]
    codes: dict[int, int] = {}
    cand = json.loads(original)["candidates"][0]
    for key in sorted(cand):
        for v in ["<removed>", *_VALUES]:
            r = json.loads(original)
            if v == "<removed>":
                del r["candidates"][0][key]
            else:
                r["candidates"][0][key] = v
            (b / rel).write_text(json.dumps(r))
            rehash(b, rel)
            code, _, err = run_cli(capsys, "plan", b, "--no-write", "--link", "5g")
            assert code in (0, 1, 2) and "internal failure" not in err, (key, v, code, err)
            codes[code] = codes.get(code, 0) + 1
    (b / rel).write_text(original)
    rehash(b, rel)
    base = _run_entry(b, server={"address": "10.0.0.2:8001", "protocol": "grpc", "address_class": "remote"})
    for key in sorted(base):
        for v in ["<removed>", *_VALUES]:
            entry = dict(base)
            if v == "<removed>":
                del entry[key]
            else:
                entry[key] = v
            _write_runs(b, {sdir: entry})
            code, _, err = run_cli(capsys, "plan", b, "--no-write")
            assert code in (0, 1, 2) and "internal failure" not in err, (key, v, code, err)
            codes[code] = codes.get(code, 0) + 1
    assert codes.get(0) and codes.get(2)  # the fuzz reached both answers


# --------------------------------------------------------------------------------------------------
# R10: goldens read as needed


def _big_zero_member(zf: zipfile.ZipFile, name: str, nbytes: int) -> None:
    """A ``.npy`` member of ``nbytes`` zeros, deflated while streamed (the test file stays small)."""
    import io

    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        header, {"descr": "<f4", "fortran_order": False, "shape": (nbytes // 4,)}
    )
    info = zipfile.ZipInfo(f"{name}.npy")
    info.compress_type = zipfile.ZIP_DEFLATED
    with zf.open(info, "w", force_zip64=True) as f:
        f.write(header.getvalue())
        block = bytes(1 << 22)
        for _ in range(nbytes // len(block)):
            f.write(block)


def _verify_rss_mib(b: Path) -> tuple[int, float]:
    """(exit code, peak RSS MiB) of ``verify --no-write`` in a child process: its own VmHWM (``ru_maxrss``
    would carry over the forking test process's peak)."""
    code = (
        "import sys\n"
        "from isplit_export.cli import main\n"
        f"rc = main(['verify', {str(b)!r}, '--no-write'])\n"
        "hwm = [ln for ln in open('/proc/self/status') if ln.startswith('VmHWM:')][0]\n"
        "print(int(hwm.split()[1]) / 1024, file=sys.stderr)\n"
        "sys.exit(rc)\n"
    )
    p = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
        env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"},
    )
    return p.returncode, float(p.stderr.strip().splitlines()[-1])


def test_unused_golden_members_are_never_decompressed(b: Path, tmp_path: Path) -> None:
    code, baseline = _verify_rss_mib(b)
    assert code == 0
    rel = manifest(b)["splits"][0]["files"]["golden"]
    src = b / rel
    bomb = tmp_path / "golden.npz"
    with zipfile.ZipFile(src) as old, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as new:
        for info in old.infolist():
            new.writestr(info.filename, old.read(info))
        for name in ("unused_a", "unused_b"):  # inside the documented caps (512 MiB a member, 1 GiB in all)
            _big_zero_member(new, name, 500 << 20)
    assert bomb.stat().st_size < 4 << 20
    shutil.copy(bomb, src)
    rehash(b, rel)
    code, rss = _verify_rss_mib(b)
    assert code == 0
    assert rss < baseline + 64, (baseline, rss)  # 1000 MiB of unused zeros never held


def test_a_used_golden_member_over_the_manifest_budget_is_refused(b: Path) -> None:
    from isplit_export.contract import golden_budget, load_golden, read_manifest

    m = read_manifest(b)
    entry = m.splits[0]
    budget = golden_budget(m, entry)
    assert budget["input"] < 1 << 20  # 2 digits images of 1x16x16: a few KiB
    path = b / entry.files["golden"]
    g = dict(np.load(path))
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for k, v in g.items():
            if k != "input":
                with zf.open(f"{k}.npy", "w") as f:
                    np.lib.format.write_array(f, v)
        _big_zero_member(zf, "input", 64 << 20)
    from isplit_export.errors import BadInputError

    with pytest.raises(BadInputError, match=r"over the .* byte limit .*manifest.s shapes"):
        load_golden(path, "golden.npz", budget)
    assert load_golden(path, "golden.npz").input.nbytes == 64 << 20  # within the generic caps only
