"""The manifest (read once, hashed, validated) and the provenance pin; its files are :mod:`.bundle_files`."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from isplit_export.contract.grid_export import GridExport, grid_export_of
from isplit_export.contract.jsonio import (
    _bad,
    _read_bytes,
    _rebuild,
    check_sha256_text,
    opt_dict,
    parse_json,
    req_dict,
    req_int,
    req_number,
    req_str,
)
from isplit_export.contract.machine import Machine
from isplit_export.contract.paths import bundle_root, check_rel
from isplit_export.contract.provenance import Latency, ModelInfo, Provenance, RecordedOptions, WeightsInfo
from isplit_export.contract.schema import (
    _TENSOR_NAME,
    MANIFEST_FILE,
    MAX_JSON_BYTES,
    MAX_MS,
    RANK_OUTPUT_FILES,
    RANKING_FILE,
    RANKING_SCHEMA_PREFIX,
    SCHEMA,
)
from isplit_export.contract.splits import Split
from isplit_export.contract.verdict import ExportVerdict, export_machine, export_verdicts
from isplit_export.errors import BadInputError, GateFailedError


@dataclass(frozen=True)
class FileEntry:
    """One hashed bundle file (``manifest.files.<rel>``)."""

    sha256: str
    bytes: int | None


@dataclass(frozen=True)
class CuiOrder:
    """The bundle's verdict (``manifest.verification``): all gates passed, and did the CUI order hold?"""

    passed: bool
    note: str
    full_model_accuracy: float | None
    cui_vs_task_spearman: float | None
    cui_order_held: bool | None
    too_few_splits: bool
    """(``--bottleneck``) too few splits were exported to conclude anything about the CUI order."""
    recorded: bool = field(metadata={"json": None})
    """Whether the manifest records ``passed`` (a hand-made one may not: then ``passed`` is true)."""

    @classmethod
    def from_json(cls, v: Mapping[str, Any], src: str = MANIFEST_FILE) -> CuiOrder:
        """Validate the ``verification`` block (absent in hand-made bundles: passed, no note)."""
        passed = v.get("passed", True)
        held = v.get("cui_order_held")
        if not isinstance(passed, bool):
            raise _bad(src, "verification.passed", "true or false", passed)
        if held is not None and not isinstance(held, bool):
            raise _bad(src, "verification.cui_order_held", "true, false or null", held)
        acc = req_number(
            v, "full_model_accuracy", src, "verification.full_model_accuracy", hi=1.0, optional=True
        )
        rho = req_number(
            v,
            "cui_vs_task_spearman",
            src,
            "verification.cui_vs_task_spearman",
            lo=-1.0,
            hi=1.0,
            optional=True,
        )
        note = req_str(v, "note", src, "verification.note", optional=True) or ""
        few = v.get("too_few_splits", False)
        if not isinstance(few, bool):
            raise _bad(src, "verification.too_few_splits", "true or false", few)
        return cls(passed, note, acc, rho, held, few, "passed" in v)


@dataclass(frozen=True)
class Manifest:
    """A validated manifest: its parsed ``data``, the sha256 of the exact bytes parsed, and the bundle.

    Readers use the typed views (:attr:`splits`, :attr:`files`, :attr:`verification`, :meth:`block`),
    never ``data``'s keys.
    """

    bundle: Path
    data: dict[str, Any]
    sha256: str

    @cached_property
    def splits(self) -> tuple[Split, ...]:
        """The exported splits in rank order, each a validated :class:`Split`."""
        return tuple(Split.from_json(s, i) for i, s in enumerate(self.data["splits"]))

    @cached_property
    def files(self) -> Mapping[str, FileEntry]:
        """Every hashed bundle file by its bundle-relative path."""
        return {rel: FileEntry(str(e["sha256"]), e.get("bytes")) for rel, e in self.data["files"].items()}

    @cached_property
    def verification(self) -> CuiOrder:
        """The bundle's verdict: every split's gates, and the CUI order check."""
        return CuiOrder.from_json(opt_dict(self.data, "verification", MANIFEST_FILE))

    @cached_property
    def grid_choice(self) -> GridExport | None:
        """The (cut, budget) chosen on the probe's grid, predicted and measured (``grid_choice``); None without."""
        return grid_export_of(self.data)

    @cached_property
    def options(self) -> RecordedOptions:
        """The export's options as recorded (``options``)."""
        return RecordedOptions.from_json(opt_dict(self.data, "options", MANIFEST_FILE))

    @cached_property
    def model(self) -> ModelInfo:
        """The exported model's name and weights source (``model``)."""
        return ModelInfo.from_json(opt_dict(self.data, "model", MANIFEST_FILE))

    @cached_property
    def provenance(self) -> Provenance:
        """The tool, target, input, opset, ranking and calibration blocks (report.md's header)."""
        return Provenance.from_json(self.data)

    @cached_property
    def weights(self) -> WeightsInfo:
        """The weights layout (``weights``)."""
        return WeightsInfo.from_json(opt_dict(self.data, "weights", MANIFEST_FILE))

    @cached_property
    def build_latencies(self) -> Mapping[str, Latency]:
        """What the export timed per split folder (``run.latency_ms``: onnxruntime, one thread, on the build host)."""
        lat = opt_dict(
            opt_dict(self.data, "run", MANIFEST_FILE), "latency_ms", MANIFEST_FILE, "run.latency_ms"
        )
        return {
            str(rel): Latency.from_json(
                req_dict(lat, rel, MANIFEST_FILE), MANIFEST_FILE, f"run.latency_ms.{rel}"
            )
            for rel in lat
        }

    @property
    def build_host(self) -> str | None:
        """The machine the export ran on (``run.host``)."""
        return req_str(
            opt_dict(self.data, "run", MANIFEST_FILE), "host", MANIFEST_FILE, "run.host", optional=True
        )

    @property
    def target_name(self) -> str | None:
        """The deployment target's name (``target.name``)."""
        return req_str(
            opt_dict(self.data, "target", MANIFEST_FILE), "name", MANIFEST_FILE, "target.name", optional=True
        )

    @property
    def target_precision(self) -> str | None:
        """The target's default precision (``target.default_precision``)."""
        target = opt_dict(self.data, "target", MANIFEST_FILE)
        return req_str(target, "default_precision", MANIFEST_FILE, "target.default_precision", optional=True)

    @property
    def ranking_top(self) -> int | None:
        """How many splits the export was asked for (``ranking.top``)."""
        return req_int(
            opt_dict(self.data, "ranking", MANIFEST_FILE),
            "top",
            MANIFEST_FILE,
            "ranking.top",
            lo=1,
            optional=True,
        )

    @property
    def ranking_file(self) -> str:
        """The bundle path of ``ranking.json`` (``ranking.file``; ``ranking.json`` when not recorded)."""
        block = opt_dict(self.data, "ranking", MANIFEST_FILE)
        return req_str(block, "file", MANIFEST_FILE, "ranking.file", optional=True) or RANKING_FILE

    def block(self, key: str) -> Mapping[str, Any]:
        """A top-level provenance block (``tool``, ``model``, ``target``, ``weights``...) as written; {} when absent."""
        return opt_dict(self.data, key, MANIFEST_FILE)

    @cached_property
    def export_verdicts(self) -> tuple[ExportVerdict, ...]:
        """The export's gate outcome of every split that records one (:func:`export_verdicts`)."""
        return tuple(export_verdicts(self.data))

    @cached_property
    def machine(self) -> Machine | None:
        """Where the export's gates were measured; None for a bundle that does not record it."""
        return export_machine(self.data)

    @property
    def input_name(self) -> str:
        """The model input's tensor name (``input`` when the manifest does not record it)."""
        return (
            req_str(
                opt_dict(self.data, "input", MANIFEST_FILE),
                "name",
                MANIFEST_FILE,
                "input.name",
                optional=True,
            )
            or "input"
        )

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one preprocessed image (``input.shape`` without its batch axis)."""
        shape = self.block("input").get("shape") or []
        dims = tuple(int(d) for d in shape[1:] if isinstance(d, int) and not isinstance(d, bool))
        if not isinstance(shape, list) or len(dims) != 3:
            raise BadInputError("manifest.json input has no (C, H, W) shape: rebuild the bundle")
        return dims

    @property
    def num_classes(self) -> int | None:
        """The model's number of classes (``model.num_classes``), if recorded."""
        return req_int(self.block("model"), "num_classes", MANIFEST_FILE, "model.num_classes", optional=True)

    @property
    def class_names(self) -> list[str] | None:
        """The model's class names (``model.class_names``), if recorded."""
        names = self.block("model").get("class_names")
        return [str(n) for n in names] if isinstance(names, list) else None

    @property
    def boundary_encoding(self) -> str | None:
        """The bundle's boundary encoding (``fp32``, ``fp16``, ``int8``)."""
        return req_str(self.data, "boundary_encoding", MANIFEST_FILE, optional=True)


def _validate_latencies(lat: Mapping[str, Any], src: str, field: str) -> None:
    for key, v in lat.items():
        if v is not None:
            req_number(lat, key, src, f"{field}.{key}", lo=0.0, hi=MAX_MS, positive=True)


def validate_manifest(m: Any, src: str = MANIFEST_FILE) -> dict[str, Any]:
    """Check the schema and the type of every field the tools read; one :class:`BadInputError` line naming the field."""
    if not isinstance(m, dict):
        raise BadInputError(f"{src} is not a JSON object: {_rebuild(src)}")
    if m.get("schema") != SCHEMA:
        raise BadInputError(
            f"{src} has schema {str(m.get('schema'))[:40]!r}, expected {SCHEMA!r}: rebuild the bundle with this isplit-export version"
        )
    files = req_dict(m, "files", src)
    for rel in files:
        check_rel(rel, f"{src} files")
        e = req_dict(files, rel, src, f"files.{rel}")
        check_sha256_text(e.get("sha256"), f"{src} files.{rel}.sha256")
        req_int(e, "bytes", src, f"files.{rel}.bytes", optional=True)
    splits = m.get("splits")
    if not isinstance(splits, list):
        raise _bad(src, "splits", "a list", splits)
    for i, s in enumerate(splits):
        Split.from_json(s, i, src)
    export_verdicts(m, src)  # the export's gates and machine, typed and bounded (contract/verdict.py)
    export_machine(m, src)
    grid_export_of(m)  # the (cut, budget) chosen on the grid, when there is one
    req_str(m, "boundary_encoding", src, optional=True)
    ranking = opt_dict(m, "ranking", src)
    req_str(ranking, "file", src, "ranking.file", optional=True)
    if ranking.get("file") is not None:
        check_rel(ranking["file"], f"{src} ranking.file")
    req_int(ranking, "top", src, "ranking.top", lo=1, optional=True)
    target = opt_dict(m, "target", src)
    req_str(target, "name", src, "target.name", optional=True)
    options = opt_dict(m, "options", src)
    req_str(options, "objective", src, "options.objective", optional=True)
    req_str(options, "server", src, "options.server", optional=True)
    cons = opt_dict(options, "constraints", src, "options.constraints")
    for k in cons:
        if k not in ("max_head_flops", "max_boundary_kib", "max_latency_ms"):
            raise BadInputError(
                f"{src}: field 'options.constraints.{k}' is not a constraint: {_rebuild(src)}"
            )
        req_number(cons, k, src, f"options.constraints.{k}", hi=1e12, positive=True, optional=True)
    inp = opt_dict(m, "input", src)
    name = req_str(inp, "name", src, "input.name", optional=True)
    if name is not None and not _TENSOR_NAME.match(name):
        raise _bad(src, "input.name", "a tensor name", name)
    run = opt_dict(m, "run", src)
    if run.get("report_sha256") is not None:
        check_sha256_text(run["report_sha256"], f"{src} run.report_sha256")
    req_str(run, "host", src, "run.host", optional=True)
    lat = opt_dict(run, "latency_ms", src, "run.latency_ms")
    for rel in lat:
        _validate_latencies(req_dict(lat, rel, src, f"run.latency_ms.{rel}"), src, f"run.latency_ms.{rel}")
    return m


def read_manifest(bundle: Path | str) -> Manifest:
    """Read ``bundle/manifest.json`` once, hash those bytes and validate them (see :func:`validate_manifest`)."""
    root = bundle_root(bundle)
    path = root / MANIFEST_FILE
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise BadInputError(
            f"{path} not found: {root} is not an isplit-export bundle (create one with isplit-export MODEL --out DIR)"
        ) from None
    except OSError as e:
        raise BadInputError(f"cannot read {path} ({e.strerror}): fix its permissions") from None
    if stat.S_ISLNK(st.st_mode):
        raise GateFailedError(f"{path} is a symlink; a bundle holds none: rebuild the bundle")
    raw = _read_bytes(path, str(path), MAX_JSON_BYTES)
    data = validate_manifest(parse_json(raw, str(path)), str(path))
    return Manifest(root, data, hashlib.sha256(raw).hexdigest())


def unwritten_manifest(data: Mapping[str, Any]) -> Manifest:
    """A manifest the export has built but not yet written (report.md is rendered from it first):
    validated like a read one; it has no bundle folder and no bytes, so no hash."""
    return Manifest(Path(), validate_manifest(dict(data)), sha256="")


def load_manifest(bundle: Path | str) -> dict[str, Any]:
    """The validated manifest dict of ``bundle`` (:func:`read_manifest` without the hash)."""
    return read_manifest(bundle).data


def manifest_sha256(bundle: Path | str) -> str:
    """sha256 of ``bundle/manifest.json``: the value CI publishes and ``--expect-sha256`` pins."""
    return read_manifest(bundle).sha256


def check_expected_sha256(manifest: Manifest | Path | str, expected: str | None) -> str:
    """Refuse a manifest whose sha256 is not ``expected`` (the value CI published); returns the actual hash.

    ``expected=None`` checks nothing. Reusable by every reader (verify, plan, build-engines, serve).
    """
    m = manifest if isinstance(manifest, Manifest) else read_manifest(manifest)
    if expected is None:
        return m.sha256
    want = check_sha256_text(expected, "--expect-sha256")
    if m.sha256 != want:
        raise GateFailedError(
            f"manifest.json has sha256 {m.sha256[:16]}..., not the expected {want[:16]}...: this is not the bundle "
            "CI published (tampered or another build): fetch the published bundle"
        )
    return m.sha256


def is_tool_bundle(path: Path) -> bool:
    """True when ``path`` holds a readable ``manifest.json`` of schema :data:`SCHEMA` (used by ``--force``)."""
    try:
        data = parse_json(
            _read_bytes(Path(path) / MANIFEST_FILE, MANIFEST_FILE, MAX_JSON_BYTES), MANIFEST_FILE
        )
    except (BadInputError, GateFailedError):
        return False
    return isinstance(data, dict) and data.get("schema") == SCHEMA


def is_rank_output(path: Path) -> bool:
    """True when ``path`` holds only what ``rank --out`` writes, with a ranking.json of ours."""
    try:
        names = {p.name for p in Path(path).iterdir()}
        data = parse_json(_read_bytes(Path(path) / RANKING_FILE, RANKING_FILE, MAX_JSON_BYTES), RANKING_FILE)
    except (OSError, BadInputError, GateFailedError):
        return False
    schema = data.get("schema") if isinstance(data, dict) else None
    return names <= RANK_OUTPUT_FILES and isinstance(schema, str) and schema.startswith(RANKING_SCHEMA_PREFIX)
