"""Where numbers were measured: the machine block of the manifest (``machine``) and of ``verify.json``.

An INT8 graph's results depend on the CPU's integer kernels (x86 without VNNI saturates u8 x s8
products unless onnxruntime's exact mode is on; ARM uses its dot-product kernels), so a bundle says on
which machine its gates were measured, and ``verify`` says on which machine it replayed them.
:class:`Machine` is that description; :func:`cpu_model` and :func:`cpu_isa` read this machine's CPU
(stdlib only: ``/proc/cpuinfo``, or :mod:`platform` elsewhere). The onnxruntime half is filled in by
:func:`isplit_export.exporting.onnx_utils.this_machine`.
"""

from __future__ import annotations

import os
import platform
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isplit_export.contract import jsonio
from isplit_export.errors import BadInputError

ISA_FLAGS = (
    "sse4_1",
    "avx2",
    "avx512f",
    "avx512bw",
    "avx512_vnni",
    "avx_vnni",
    "amx_int8",
    "neon",
    "asimd",
    "asimddp",
    "i8mm",
    "sve",
)
"""The CPU features that choose onnxruntime's / PyTorch's integer and vector kernels, as Linux names
them in ``/proc/cpuinfo`` (x86 ``flags``, ARM ``Features``; ``asimddp`` is the ARM dot product)."""
_MAX_TEXT = 200
_MAX_LIST = 64
_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,64}$")
_CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class Machine:
    """One machine as far as numeric results go: CPU, its kernel-relevant features, onnxruntime, threads.

    ``threads`` is the intra-op thread count the sessions were given (0: onnxruntime's default, one per
    physical core); ``cpus`` the logical CPUs the process saw; ``exact_int8`` whether the sessions ran
    with onnxruntime's exact integer mode (``session.x64quantprecision``).
    """

    cpu: str
    arch: str
    isa: tuple[str, ...]
    onnxruntime: str
    providers: tuple[str, ...]
    threads: int
    cpus: int
    exact_int8: bool

    def to_json(self) -> dict[str, Any]:
        """JSON form as stored in ``manifest.json`` (``machine``) and ``verify.json``."""
        return {
            "cpu": self.cpu,
            "arch": self.arch,
            "isa": list(self.isa),
            "onnxruntime": self.onnxruntime,
            "providers": list(self.providers),
            "threads": self.threads,
            "cpus": self.cpus,
            "exact_int8": self.exact_int8,
        }

    @classmethod
    def from_json(cls, data: Any, src: str = "machine") -> Machine:
        """Inverse of :meth:`to_json`, for hostile input: bounded strings and lists, typed fields."""
        if not isinstance(data, Mapping):
            raise _bad(src, "", "an object", data)
        return cls(
            cpu=_text(data, "cpu", src),
            arch=_text(data, "arch", src),
            isa=_names(data, "isa", src),
            onnxruntime=_text(data, "onnxruntime", src),
            providers=_names(data, "providers", src),
            threads=_count(data, "threads", src),
            cpus=_count(data, "cpus", src),
            exact_int8=_flag(data, "exact_int8", src),
        )

    def describe(self) -> str:
        """One line: CPU, arch, features, onnxruntime and its mode."""
        isa = " ".join(self.isa) or "no listed features"
        mode = "exact int8" if self.exact_int8 else "default int8 kernels"
        threads = "default threads" if self.threads == 0 else f"{self.threads} threads"
        return f"{self.cpu} ({self.arch}; {isa}), onnxruntime {self.onnxruntime} ({mode}, {threads}, {self.cpus} cpus)"

    def same_kernels(self, other: Machine) -> bool:
        """True when the two would pick the same integer kernels: same arch, features, onnxruntime and mode."""
        mine = (self.arch, set(self.isa), self.onnxruntime, self.exact_int8)
        return mine == (other.arch, set(other.isa), other.onnxruntime, other.exact_int8)


def _bad(src: str, key: str, what: str, value: Any) -> BadInputError:
    return jsonio._bad(src, f"machine.{key}" if key else "machine", what, value)


def _text(data: Mapping[str, Any], key: str, src: str) -> str:
    v = data.get(key)
    if not isinstance(v, str) or not 0 < len(v) <= _MAX_TEXT or not v.isprintable():
        raise _bad(src, key, f"a printable string of 1..{_MAX_TEXT} characters", v)
    return v


def _names(data: Mapping[str, Any], key: str, src: str) -> tuple[str, ...]:
    v = data.get(key)
    if (
        not isinstance(v, list)
        or len(v) > _MAX_LIST
        or not all(isinstance(x, str) and _NAME.match(x) for x in v)
    ):
        raise _bad(src, key, f"a list of at most {_MAX_LIST} names", v)
    return tuple(v)


def _count(data: Mapping[str, Any], key: str, src: str) -> int:
    v = data.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= 1 << 16:
        raise _bad(src, key, "an integer in [0, 65536]", v)
    return v


def _flag(data: Mapping[str, Any], key: str, src: str) -> bool:
    v = data.get(key)
    if not isinstance(v, bool):
        raise _bad(src, key, "true or false", v)
    return v


def _cpuinfo() -> dict[str, str]:
    """The first processor's ``key: value`` lines of ``/proc/cpuinfo`` ({} where there is none)."""
    try:
        text = _CPUINFO.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return {}
    info: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip() and info:
            break
        key, sep, value = line.partition(":")
        if sep:
            info.setdefault(key.strip(), value.strip())
    return info


def cpu_model() -> str:
    """This CPU's model name (``/proc/cpuinfo``, else :func:`platform.processor`), printable, bounded."""
    info = _cpuinfo()
    arm = (
        f"ARM CPU implementer {info.get('CPU implementer', '?')} part {info['CPU part']}"
        if "CPU part" in info
        else ""
    )
    name = info.get("model name") or info.get("Model") or info.get("Hardware") or arm or platform.processor()
    name = " ".join(name.split()) or "unknown CPU"
    return "".join(c for c in name if c.isprintable())[:_MAX_TEXT]


def cpu_isa() -> tuple[str, ...]:
    """Which of :data:`ISA_FLAGS` this CPU has (as Linux reports them; empty where it reports none)."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    if platform.machine().lower() in ("aarch64", "arm64"):
        flags |= {"neon"} if "asimd" in flags or not flags else set()
    return tuple(f for f in ISA_FLAGS if f in flags)


def cpu_count() -> int:
    """Logical CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
