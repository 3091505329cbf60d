"""Deployment target profiles: what a device runs (TensorRT / onnxruntime), in which precisions, with DLA or not.

Every target is a JSON data file in ``isplit_export/profiles/`` (package data: the same folder in a
checkout and in an installed wheel); its ``README.md`` explains each field. This module loads and validates
them, so a typo in a profile fails with one line naming the file and the field, never deep inside the
export. The names (and ``ALIASES``) are known without parsing: :mod:`isplit_export.target_names`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from isplit_export.backend_names import ONNXRUNTIME, RUNTIMES, TENSORRT
from isplit_export.errors import BadInputError
from isplit_export.exporting.encoding import ENCODINGS
from isplit_export.target_names import profile_files, profile_name

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

PRECISIONS = ("fp32", "fp16", "int8")
"""Engine / model precisions a target can run (also the TensorRT verification precisions)."""
KINDS = ("jetson", "server", "cpu", "onnx")
BACKENDS = RUNTIMES
"""A target's runtime (``backend`` in its profile); ``verify --backend`` has its own list (verification.backends.BACKENDS)."""
PRECISIONS = ("fp32", "fp16", "int8")
"""Engine precisions a target may support; the gates and ``verify`` read them from here."""
DLA_PRECISIONS = ("fp16", "int8")
"""DLA computes in fp16 or int8 only; an fp32 engine never goes to DLA."""


def _release(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split("."))


def dla_unsupported(tensorrt_version: str, gpu: str) -> str | None:
    """Why TensorRT ``tensorrt_version`` cannot use a Jetson's DLA, or None when it can (isplit_export/profiles/README.md).

    NVIDIA's TensorRT 11.x docs: DLA left after 10.7, was absent from 11.0 to 11.3 (11.4.0: Windows on
    ARM only) and returned in 11.4.1 on Jetson AGX Orin only, under JetPack 7.2.2 or later.
    """
    release = _release(tensorrt_version)
    if (10, 8) <= release < (11,):
        return f"TensorRT {tensorrt_version} has no DLA support (10.7 was the last 10.x release with DLA)"
    if (11,) <= release < (11, 4, 1):
        return f"TensorRT {tensorrt_version} has no Jetson DLA support (it returned in 11.4.1)"
    if release >= (11, 4, 1) and "agx orin" not in gpu.lower():
        return f"TensorRT {tensorrt_version} supports the DLA on Jetson AGX Orin only (gpu is {gpu!r})"
    return None


_VERSION = re.compile(r"^\d+(\.\d+)*$")
_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")


@dataclass(frozen=True)
class CostProfile:
    """What a target costs to run (isplit_export/profiles/README.md gives the source or assumption of every figure).

    ``gflops`` is the effective throughput in GFLOP/s (FLOPs = 2 x MACs, as :mod:`graph` counts them) of
    the GPU (or the CPU, for onnxruntime targets) per precision; ``dla_gflops`` the same for one DLA
    core (fp16/int8), ``None`` without DLA; ``power_w`` the module's power budget in W, ``None`` unknown.
    """

    gflops: tuple[tuple[str, float], ...]
    dla_gflops: tuple[tuple[str, float], ...] | None
    power_w: float | None

    def rate(self, precision: str, *, dla: bool = False) -> float:
        """Effective GFLOP/s for ``precision`` on the GPU/CPU, or on one DLA core with ``dla``."""
        table = dict(self.dla_gflops or ()) if dla else dict(self.gflops)
        if precision not in table:
            unit = "DLA" if dla else "GPU/CPU"
            raise BadInputError(
                f"no {unit} throughput for {precision} in this target's cost profile: choose {', '.join(table)}"
            )
        return table[precision]

    def to_json(self) -> dict[str, Any]:
        return {
            "gflops": dict(self.gflops),
            "dla_gflops": None if self.dla_gflops is None else dict(self.dla_gflops),
            "power_w": self.power_w,
        }


@dataclass(frozen=True)
class TargetProfile:
    """One deployment target, as loaded from ``isplit_export/profiles/<name>.json`` (field meanings: isplit_export/profiles/README.md)."""

    name: str
    description: str
    kind: str  # "jetson" | "server" | "cpu" | "onnx"
    backend: str  # one of backend_names.RUNTIMES
    jetpack: str | None
    tensorrt_version: str | None  # TensorRT version the plan is written for, e.g. "10.3"
    cuda: str | None
    gpu: str | None
    precisions: tuple[str, ...]
    default_precision: str
    dla_cores: int
    workspace_mib: int
    max_opset: int
    default_boundary: str
    int8: bool
    cost: CostProfile | None = None

    @property
    def uses_tensorrt(self) -> bool:
        """True when the bundle carries a TensorRT engine build plan for this target."""
        return self.backend == TENSORRT

    def runs_on(self, backend: str | None) -> bool:
        """True when ``backend`` (a name ``verify``/``run`` recorded) is this target's runtime."""
        return backend == self.backend

    @property
    def runs_bundle_models(self) -> bool:
        """True when the target runs the bundle's ONNX models as they are (onnxruntime): what the export
        timed on the build host is then a measurement of this target's runtime."""
        return self.backend == ONNXRUNTIME

    @property
    def has_dla(self) -> bool:
        """True when the device has at least one DLA core the head can be placed on."""
        return self.dla_cores > 0

    @property
    def tensorrt_major(self) -> int | None:
        """Major TensorRT version (10 for "10.3"), or None without TensorRT."""
        return int(self.tensorrt_version.split(".")[0]) if self.tensorrt_version else None

    def to_json(self) -> dict[str, Any]:
        """The profile as the JSON object it was loaded from (the manifest's ``target`` block)."""
        return {
            "name": self.name,
            "description": self.description,
            "kind": self.kind,
            "backend": self.backend,
            "jetpack": self.jetpack,
            "tensorrt_version": self.tensorrt_version,
            "cuda": self.cuda,
            "gpu": self.gpu,
            "precisions": list(self.precisions),
            "default_precision": self.default_precision,
            "dla_cores": self.dla_cores,
            "workspace_mib": self.workspace_mib,
            "max_opset": self.max_opset,
            "default_boundary": self.default_boundary,
            "int8": self.int8,
            **({"cost": self.cost.to_json()} if self.cost is not None else {}),
        }


_FIELDS: tuple[str, ...] = tuple(TargetProfile.__dataclass_fields__)
_OPTIONAL = ("cost",)


def _fail(source: str, field: str, why: str) -> BadInputError:
    return BadInputError(f"bad target profile {source}: field '{field}' {why}")


def _str(data: dict[str, Any], field: str, source: str, *, nullable: bool = False) -> str | None:
    value = data[field]
    if value is None and nullable:
        return None
    if not isinstance(value, str) or not value.strip():
        expected = "a non-empty string or null" if nullable else "a non-empty string"
        raise _fail(source, field, f"must be {expected}, got {value!r}")
    return value


def _required_str(data: dict[str, Any], field: str, source: str) -> str:
    value = _str(data, field, source)
    assert value is not None  # _str without nullable never returns None
    return value


def _choice(data: dict[str, Any], field: str, source: str, choices: tuple[str, ...]) -> str:
    value = data[field]
    if value not in choices:
        raise _fail(source, field, f"must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _int(data: dict[str, Any], field: str, source: str, lo: int, hi: int) -> int:
    value = data[field]
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise _fail(source, field, f"must be an integer in [{lo}, {hi}], got {value!r}")
    return value


def _version(data: dict[str, Any], field: str, source: str) -> str | None:
    value = _str(data, field, source, nullable=True)
    if value is not None and not _VERSION.match(value):
        raise _fail(source, field, f"must be a version like '10.3' or null, got {value!r}")
    return value


def validate_profile(data: dict[str, Any], source: str) -> TargetProfile:
    """Check every field of a profile (types, allowed values, cross-field rules) and build it.

    ``source`` names the file in error messages. Raises ``BadInputError`` naming file and field.
    """
    if not isinstance(data, dict):
        raise BadInputError(f"bad target profile {source}: expected a JSON object, got {type(data).__name__}")
    missing = [f for f in _FIELDS if f not in data and f not in _OPTIONAL]
    if missing:
        raise _fail(source, missing[0], "is missing")
    unknown = sorted(set(data) - set(_FIELDS))
    if unknown:
        raise _fail(source, unknown[0], f"is not a profile field (fields: {', '.join(_FIELDS)})")

    name = _required_str(data, "name", source)
    if not _NAME.match(name):
        raise _fail(source, "name", f"must be lower-case letters, digits and '-', got {name!r}")
    description = _required_str(data, "description", source)
    kind = _choice(data, "kind", source, KINDS)
    backend = _choice(data, "backend", source, BACKENDS)
    jetpack = _version(data, "jetpack", source)
    tensorrt = _version(data, "tensorrt_version", source)
    cuda = _version(data, "cuda", source)
    gpu = _str(data, "gpu", source, nullable=True)

    raw_precisions = data["precisions"]
    if (
        not isinstance(raw_precisions, list)
        or not raw_precisions
        or any(p not in PRECISIONS for p in raw_precisions)
        or len(set(raw_precisions)) != len(raw_precisions)
    ):
        raise _fail(
            source,
            "precisions",
            f"must be a non-empty list of distinct {'/'.join(PRECISIONS)}, got {raw_precisions!r}",
        )
    precisions = tuple(str(p) for p in raw_precisions)
    default_precision = _choice(data, "default_precision", source, PRECISIONS)
    if default_precision not in precisions:
        raise _fail(
            source, "default_precision", f"{default_precision!r} is not in precisions {list(precisions)}"
        )
    dla_cores = _int(data, "dla_cores", source, 0, 8)
    workspace_mib = _int(data, "workspace_mib", source, 0, 1 << 20)
    max_opset = _int(data, "max_opset", source, 7, 99)
    default_boundary = _choice(data, "default_boundary", source, ENCODINGS)
    int8 = data["int8"]
    if not isinstance(int8, bool):
        raise _fail(source, "int8", f"must be true or false, got {int8!r}")

    # Cross-field rules: each says what the rest of the pipeline relies on.
    if source_stem(source) not in (None, name):
        raise _fail(source, "name", f"is {name!r} but the file is {Path(source).name}: they must match")
    if int8 != ("int8" in precisions):
        raise _fail(
            source,
            "int8",
            f"is {str(int8).lower()} but precisions is {list(precisions)}: int8 models ship exactly when 'int8' is a precision",
        )
    if dla_cores and not any(p in DLA_PRECISIONS for p in precisions):
        raise _fail(
            source,
            "dla_cores",
            f"is {dla_cores} but DLA runs fp16/int8 only and precisions is {list(precisions)}",
        )
    if dla_cores and kind != "jetson":
        raise _fail(
            source, "dla_cores", f"is {dla_cores} but only Jetson targets have DLA (kind is {kind!r})"
        )
    if kind in ("jetson", "server") and backend != TENSORRT:
        raise _fail(source, "backend", f"must be '{TENSORRT}' for kind {kind!r}, got {backend!r}")
    if kind in ("cpu", "onnx") and backend != ONNXRUNTIME:
        raise _fail(source, "backend", f"must be '{ONNXRUNTIME}' for kind {kind!r}, got {backend!r}")
    if kind == "jetson" and jetpack is None:
        raise _fail(source, "jetpack", "must name the JetPack release for a Jetson target")
    if kind != "jetson" and jetpack is not None:
        raise _fail(source, "jetpack", f"must be null for kind {kind!r}")
    if backend == TENSORRT:
        for field, value in (("tensorrt_version", tensorrt), ("cuda", cuda), ("gpu", gpu)):
            if value is None:
                raise _fail(source, field, "must be set for a TensorRT target")
        if workspace_mib <= 0:
            raise _fail(source, "workspace_mib", "must be > 0 for a TensorRT target")
    else:
        for field, value in (("tensorrt_version", tensorrt), ("cuda", cuda)):
            if value is not None:
                raise _fail(source, field, f"must be null for backend {backend!r}")
    if dla_cores and tensorrt is not None:
        why = dla_unsupported(tensorrt, gpu or "")
        if why:
            raise _fail(source, "dla_cores", f"is {dla_cores} but {why}: set 0")
    from isplit_export.exporting.onnx_utils import (
        OPSET,  # lazy: keeps `import isplit_export.targets.profiles` light
    )

    if max_opset < OPSET:
        raise _fail(
            source,
            "max_opset",
            f"is {max_opset} but bundles use ONNX opset {OPSET}: this target could not parse them",
        )

    cost_json = data.get("cost")
    cost = _cost(cost_json, source, precisions, dla_cores) if cost_json is not None else None
    return TargetProfile(
        cost=cost,
        name=name,
        description=description,
        kind=kind,
        backend=backend,
        jetpack=jetpack,
        tensorrt_version=tensorrt,
        cuda=cuda,
        gpu=gpu,
        precisions=precisions,
        default_precision=default_precision,
        dla_cores=dla_cores,
        workspace_mib=workspace_mib,
        max_opset=max_opset,
        default_boundary=default_boundary,
        int8=int8,
    )


def _rates(value: Any, source: str, field: str, allowed: tuple[str, ...]) -> tuple[tuple[str, float], ...]:
    if (
        not isinstance(value, dict)
        or not value
        or any(k not in allowed for k in value)
        or any(isinstance(v, bool) or not isinstance(v, (int, float)) or not v > 0 for v in value.values())
    ):
        raise _fail(
            source, field, f"must map precisions ({'/'.join(allowed)}) to positive GFLOP/s, got {value!r}"
        )
    return tuple((k, float(value[k])) for k in allowed if k in value)


def _cost(data: Any, source: str, precisions: tuple[str, ...], dla_cores: int) -> CostProfile:
    """Validate the optional ``cost`` block: throughput per precision, DLA only with DLA, power > 0."""
    keys = ("gflops", "dla_gflops", "power_w")
    if not isinstance(data, dict) or set(data) != set(keys):
        raise _fail(source, "cost", f"must be an object with exactly {', '.join(keys)}, got {data!r}")
    gflops = _rates(data["gflops"], source, "cost.gflops", PRECISIONS)
    missing = [p for p in precisions if p not in dict(gflops)]
    if missing:
        raise _fail(
            source, "cost.gflops", f"has no throughput for {', '.join(missing)} (a precision of this target)"
        )
    dla = None
    if data["dla_gflops"] is not None:
        if not dla_cores:
            raise _fail(source, "cost.dla_gflops", "must be null: the target has no DLA core")
        dla = _rates(data["dla_gflops"], source, "cost.dla_gflops", DLA_PRECISIONS)
    elif dla_cores:
        raise _fail(
            source, "cost.dla_gflops", f"must give the DLA throughput: the target has {dla_cores} DLA core(s)"
        )
    power = data["power_w"]
    if power is not None and (
        isinstance(power, bool) or not isinstance(power, (int, float)) or not power > 0
    ):
        raise _fail(source, "cost.power_w", f"must be a positive number of watts or null, got {power!r}")
    return CostProfile(gflops=gflops, dla_gflops=dla, power_w=None if power is None else float(power))


def source_stem(source: str) -> str | None:
    """The profile name a source path implies (``targets/cpu.json`` -> ``cpu``), None if it is no .json path."""
    path = Path(source)
    return path.stem if path.suffix == ".json" else None


def _read(path: Traversable) -> TargetProfile:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInputError(f"bad target profile {path.name}: not readable JSON ({exc})") from exc
    return validate_profile(data, path.name)


def load_target(name: str) -> TargetProfile:
    """Load and validate one profile by name or alias; an unknown name lists the valid ones."""
    return _read(profile_files()[profile_name(name)])


def list_targets() -> list[TargetProfile]:
    """Every profile, validated, sorted by name (aliases not repeated)."""
    return [_read(path) for path in profile_files().values()]
