"""Where numbers were measured: this machine's CPU as the manifest records it, from /proc/cpuinfo."""

from __future__ import annotations

from pathlib import Path

import pytest

from isplit_export.contract import Machine, machine
from isplit_export.errors import BadInputError

ORIN = """processor\t: 0
BogoMIPS\t: 62.50
Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp uscat ilrcpc flagm
CPU implementer\t: 0x41
CPU architecture: 8
CPU part\t: 0xd42

processor\t: 1
Features\t: fp asimd
"""

ZEN3 = """processor\t: 0
model name\t: AMD EPYC 7763 64-Core Processor
flags\t\t: fpu sse4_1 sse4_2 avx avx2 fma bmi2 sha_ni

processor\t: 1
flags\t\t: fpu avx512f avx512_vnni
"""


def _cpu(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, arch: str
) -> tuple[str, tuple[str, ...]]:
    info = tmp_path / "cpuinfo"
    info.write_text(text)
    monkeypatch.setattr(machine, "_CPUINFO", info)
    monkeypatch.setattr(machine.platform, "machine", lambda: arch)
    return machine.cpu_model(), machine.cpu_isa()


def test_an_avx2_cpu_without_vnni_reads_as_such(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """The first processor's block only: a later block's flags do not leak in."""
    name, isa = _cpu(monkeypatch, tmp_path, ZEN3, "x86_64")
    assert name == "AMD EPYC 7763 64-Core Processor" and isa == ("sse4_1", "avx2")


def test_a_jetson_orin_reads_its_dot_product(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    name, isa = _cpu(monkeypatch, tmp_path, ORIN, "aarch64")
    assert name == "ARM CPU implementer 0x41 part 0xd42" and isa == ("neon", "asimd", "asimddp")


def test_no_cpuinfo_still_describes_the_machine(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(machine, "_CPUINFO", tmp_path / "missing")
    monkeypatch.setattr(machine.platform, "processor", lambda: "")
    assert machine.cpu_model() == "unknown CPU"


def test_the_block_round_trips_and_compares_kernels() -> None:
    a = Machine("AMD EPYC", "x86_64", ("avx2",), "1.32.0", ("CPUExecutionProvider",), 0, 2, True)
    assert Machine.from_json(a.to_json()) == a
    vnni = Machine(
        "AMD EPYC", "x86_64", ("avx2", "avx512_vnni"), "1.32.0", ("CPUExecutionProvider",), 0, 2, True
    )
    assert not a.same_kernels(vnni) and a.same_kernels(Machine(**{**a.__dict__, "cpus": 16}))
    with pytest.raises(BadInputError, match=r"machine\.providers"):
        Machine.from_json({**a.to_json(), "providers": "CPUExecutionProvider"}, "manifest.json")
