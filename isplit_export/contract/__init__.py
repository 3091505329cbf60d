"""The bundle contract, owned in one place: every reader of a bundle goes through this package.

A bundle travels (CI -> artefact store -> device), so every reader treats it as hostile input
(SPEC section 5). This package is the lowest layer (stdlib, numpy, :mod:`errors`, :mod:`files`; no
torch, no onnx) and holds, each part in its own module, all of them re-exported here:

- ``schema``: the schema constants, file names and limits (:data:`SCHEMA`, :data:`MANIFEST_FILE`, ...);
- ``jsonio``: strict, bounded JSON reading (:func:`read_json`): size and nesting depth capped, no
  NaN/Infinity, no duplicate keys, a JSON object at the top; the field checks (``req_*``, ``opt_dict``);
- ``manifest``: :func:`read_manifest`: the manifest's bytes are read once, hashed
  (:attr:`Manifest.sha256`) and validated: the type of every field the tools use, with one line naming
  the field; hashes (:func:`check_files`, :func:`check_listed`), and the provenance pin
  (:func:`check_expected_sha256`: the manifest's sha256 must be the one CI published); one split
  selection rule (:func:`select_splits`: 1-based position, which equals ``rank``);
- ``layout``: the closed bundle (:func:`check_layout`, run by :func:`check_files`): every file and
  folder of the tree is listed in the manifest or is a known output; anything else is named, exit 1;
- ``paths``: the containment rule (:func:`bundle_path`): a bundle path is relative, has no ``..``,
  crosses no symlink, and still lies inside the bundle after resolving;
- ``npz``: bounded ``.npz`` loading (:func:`load_npz_bounded`): zip and ``.npy`` headers are checked
  before anything is decompressed, no pickle; goldens read only the members used, each within a budget
  from the manifest's shapes (:func:`golden_budget`);
- ``ranking``: ``ranking.json`` as typed values (:class:`RankingFile`, its :class:`Candidate` cuts, their
  :class:`CutCost` rows and the :class:`CostBlock`), validated by ``from_json``;
- ``results``: validated accessors for ``ranking.json`` (:func:`read_ranking`), ``verify.json``
  (:func:`read_verify_latencies`) and ``run.json`` (:func:`read_runs`: a :class:`RunRecord` per split,
  with its :class:`ServedCheck` verdicts, which ``run`` writes through :meth:`ServedCheck.to_json`);
- ``provenance``: the manifest's ``options``, ``model`` and ``weights`` blocks as typed values
  (:class:`RecordedOptions`, :class:`ModelInfo`, :class:`WeightsInfo`);
- ``machine`` / ``verdict``: where the export's gates were measured (:class:`Machine`: CPU, ISA
  features, onnxruntime, threads, exact int8 mode) and their outcome per split and pair
  (:func:`export_verdicts`), both validated on read;
- ``splits``: the manifest's split entries as typed values (:class:`Split`, :class:`Boundary`,
  :class:`Verification`, :class:`Check`), validated by ``from_json``; :class:`Manifest` hands them out;
- ``engine_plan``: ``engine_plan.json``, read only here: as written (:class:`EngineRecipe`, its
  :class:`RecipeEngine` builds and :class:`DlaCheck`; :func:`read_engine_recipe`), and with its paths
  checked (:func:`load_engine_plan`, :func:`read_engine_plan`: :class:`EnginePlan`); the checked output paths of
  ``build-engines`` (:func:`engine_output`, :func:`write_output`).

Errors: a malformed file is :class:`BadInputError` (exit 2); a file that does not match its hash, a
path leaving the bundle, a symlink, or a manifest other than the pinned one is
:class:`GateFailedError` (exit 1, "tampered").
"""

from __future__ import annotations

from isplit_export.contract.bundle_files import (
    check_files,
    check_listed,
    copy_listed,
    select_splits,
    split_file,
)
from isplit_export.contract.engine_plan import (
    DlaCheck,
    DlaFallback,
    EnginePart,
    EnginePlan,
    EngineRecipe,
    RecipeEngine,
    engine_output,
    engine_plan_json,
    load_engine_plan,
    read_engine_plan,
    read_engine_recipe,
    write_output,
)
from isplit_export.contract.grid_export import GridExport, PairFigures
from isplit_export.contract.jsonio import (
    check_sha256_text,
    json_depth,
    opt_dict,
    parse_json,
    read_json,
    req_dict,
    req_int,
    req_number,
    req_str,
)
from isplit_export.contract.layout import TOP_LEVEL_OUTPUTS, check_layout, unlisted_entries
from isplit_export.contract.machine import Machine
from isplit_export.contract.manifest import (
    CuiOrder,
    FileEntry,
    Manifest,
    check_expected_sha256,
    is_rank_output,
    is_tool_bundle,
    load_manifest,
    manifest_sha256,
    read_manifest,
    unwritten_manifest,
    validate_manifest,
)
from isplit_export.contract.npz import (
    CalibrationSet,
    Golden,
    golden_budget,
    load_calibration,
    load_golden,
    load_npz_bounded,
)
from isplit_export.contract.paths import bundle_path, bundle_root, check_rel, join_rel
from isplit_export.contract.provenance import (
    InputInfo,
    Latency,
    ModelInfo,
    Provenance,
    RankingInfo,
    RecordedOptions,
    TargetInfo,
    VerifyLatency,
    WeightsInfo,
)
from isplit_export.contract.ranking import (
    Bootstrap,
    Candidate,
    ComputeFigures,
    CostBlock,
    CutCost,
    LinkFigures,
    RankingFile,
)
from isplit_export.contract.results import (
    MIN_LINK_MS,
    RunRecord,
    ServedCheck,
    read_ranking,
    read_runs,
    read_verify_latencies,
)
from isplit_export.contract.run_summary import FailedRequest, RunSummary, Stats, kept_runs
from isplit_export.contract.schema import (
    ENGINE_PLAN_FILE,
    ENGINE_PLAN_SCHEMA,
    ENGINES_DIR,
    MANIFEST_FILE,
    MAX_BATCH_SIZE,
    MAX_DIM,
    MAX_ELEMENTS,
    MAX_FLOPS,
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    MAX_MS,
    MAX_NPZ_MEMBER_BYTES,
    MAX_NPZ_MEMBERS,
    MAX_NPZ_TOTAL_BYTES,
    PLAN_FILE,
    RANK_OUTPUT_FILES,
    RANKING_FILE,
    RANKING_SCHEMA_PREFIX,
    REPORT_FILE,
    RUN_FILE,
    RUN_SCHEMA,
    SCHEMA,
    TRITON_ENGINE_FILE,
    VERIFY_FILE,
)
from isplit_export.contract.splits import Boundary, Check, Split, Task, Verification
from isplit_export.contract.verdict import ExportVerdict, export_machine, export_verdicts

__all__ = [
    "ENGINES_DIR",
    "ENGINE_PLAN_FILE",
    "ENGINE_PLAN_SCHEMA",
    "MANIFEST_FILE",
    "MAX_BATCH_SIZE",
    "MAX_DIM",
    "MAX_ELEMENTS",
    "MAX_FLOPS",
    "MAX_JSON_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_MS",
    "MAX_NPZ_MEMBERS",
    "MAX_NPZ_MEMBER_BYTES",
    "MAX_NPZ_TOTAL_BYTES",
    "MIN_LINK_MS",
    "PLAN_FILE",
    "RANKING_FILE",
    "RANKING_SCHEMA_PREFIX",
    "RANK_OUTPUT_FILES",
    "REPORT_FILE",
    "RUN_FILE",
    "RUN_SCHEMA",
    "SCHEMA",
    "TOP_LEVEL_OUTPUTS",
    "TRITON_ENGINE_FILE",
    "VERIFY_FILE",
    "Bootstrap",
    "Boundary",
    "CalibrationSet",
    "Candidate",
    "Check",
    "ComputeFigures",
    "CostBlock",
    "CuiOrder",
    "CutCost",
    "DlaCheck",
    "DlaFallback",
    "EnginePart",
    "EnginePlan",
    "EngineRecipe",
    "ExportVerdict",
    "FailedRequest",
    "FileEntry",
    "Golden",
    "GridExport",
    "InputInfo",
    "Latency",
    "LinkFigures",
    "Machine",
    "Manifest",
    "ModelInfo",
    "PairFigures",
    "Provenance",
    "RankingFile",
    "RankingInfo",
    "RecipeEngine",
    "RecordedOptions",
    "RunRecord",
    "RunSummary",
    "ServedCheck",
    "Split",
    "Stats",
    "TargetInfo",
    "Task",
    "Verification",
    "VerifyLatency",
    "WeightsInfo",
    "bundle_path",
    "bundle_root",
    "check_expected_sha256",
    "check_files",
    "check_layout",
    "check_listed",
    "check_rel",
    "check_sha256_text",
    "copy_listed",
    "engine_output",
    "engine_plan_json",
    "export_machine",
    "export_verdicts",
    "golden_budget",
    "is_rank_output",
    "is_tool_bundle",
    "join_rel",
    "json_depth",
    "kept_runs",
    "load_calibration",
    "load_engine_plan",
    "load_golden",
    "load_manifest",
    "load_npz_bounded",
    "manifest_sha256",
    "opt_dict",
    "parse_json",
    "read_engine_plan",
    "read_engine_recipe",
    "read_json",
    "read_manifest",
    "read_ranking",
    "read_runs",
    "read_verify_latencies",
    "req_dict",
    "req_int",
    "req_number",
    "req_str",
    "select_splits",
    "split_file",
    "unlisted_entries",
    "unwritten_manifest",
    "validate_manifest",
    "write_output",
]
