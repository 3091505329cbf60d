"""Per-split TensorRT engine build recipe: ``build_engines.sh`` (trtexec) and ``engine_plan.json`` (the same
as data; the file keeps its bundle name, "plan" in code means the cost plan of ``jobs/plan.py``).

TensorRT engines are tied to the GPU and the TensorRT version that built them, so the bundle never
carries engines: it carries the recipe, and the device runs it (``bash build_engines.sh`` or
``isplit-export build-engines``, which reads ``engine_plan.json``). No TensorRT import here: the recipe is
generated and tested on machines without a GPU.

Choices, each visible in the generated commands (isplit_export/profiles/README.md cites the TensorRT sources):

- the recipe is written for the profile's TensorRT version (``tensorrt_version`` in the recipe) and branches
  on its major version. TensorRT 10: weak typing as before (``--fp16``; ``--int8 --fp16`` on the QDQ
  models, explicit quantization, no calibrator), and ``--stronglyTyped`` where the ONNX file already
  carries the precision (fp32). TensorRT 11 removed every weak-typing flag (``--fp16``, ``--int8``,
  ``--best``, ...): networks are always strongly typed, so the recipe names ONNX files that carry their
  precision (``*.fp16.onnx`` with fp16 casts, or the INT8 Q/DQ models) and passes no precision flag.
- the head goes to DLA core 0 on Jetsons with DLA, for fp16/int8 only, and only when
  :func:`isplit_export.targets.dla.check_model` finds that at least ``min_dla_fraction`` of its layers
  run there; the recipe records the check (``dla``) and says in one line why the head is on the DLA or the
  GPU. DLA needs static shapes, so a DLA engine is built for batch 1 (min = opt = max); GPU engines get
  a dynamic batch profile 1 / 1 / ``max_batch``. A DLA head with no expected fallback is built without
  ``--allowGPUFallback`` (TensorRT 10) or with ``--reportCapabilityDLA`` (TensorRT 11), so an
  unexpected fallback fails the build; with expected fallbacks the script refuses a build log that
  reports more fallback layers than the recipe lists.
- ``--memPoolSize=workspace:<N>M`` (TensorRT 10 removed ``--workspace``; 8.x reads the bare number as MiB).
- ``--timingCacheFile`` shared by head and tail: rebuilds reuse the measured tactics.
- ``--skipInference``: the script only builds; numbers come from ``isplit-export verify --backend
  tensorrt`` on the goldens, and ``trtexec --loadEngine=...`` benchmarks an engine when wanted.
"""

from __future__ import annotations

import json
import re
import shlex
from pathlib import Path, PurePosixPath
from typing import Any

from isplit_export.contract import EngineRecipe, read_engine_recipe
from isplit_export.errors import BadInputError
from isplit_export.options import MIN_DLA_FRACTION
from isplit_export.targets.dla import DlaReport, check_model, choose_device
from isplit_export.targets.profiles import DLA_PRECISIONS, TargetProfile

ENGINE_PLAN_SCHEMA = "isplit.engine_plan/1"
RECORD_SCHEMA = "isplit.engines/1"
SCRIPT_NAME = "build_engines.sh"
ENGINE_BUILD_FILE = "engine_plan.json"
ENGINE_DIR = "engines"
RECORD_NAME = f"{ENGINE_DIR}/build.json"
TIMING_CACHE = f"{ENGINE_DIR}/timing.cache"
WEAK_TYPING_FLAGS = ("--fp16", "--int8", "--bf16", "--fp8", "--int4", "--best")
"""trtexec precision flags that TensorRT 11 removed (strongly typed networks only)."""
TRTEXEC_DEFAULT = "/usr/src/tensorrt/bin/trtexec"
"""Where JetPack and NVIDIA's TensorRT containers put trtexec (it is not on PATH there)."""

_TENSOR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def default_head_dla_core(profile: TargetProfile, precision: str) -> int | None:
    """DLA core for the head: 0 on targets with DLA when the precision is fp16/int8, else None (GPU)."""
    return 0 if profile.has_dla and precision in DLA_PRECISIONS else None


def engine_file(part: str, precision: str) -> str:
    """Engine path relative to the split folder, e.g. ``engines/head.fp16.engine``."""
    return f"{ENGINE_DIR}/{part}.{precision}.engine"


def _check_precision(profile: TargetProfile, precision: str) -> None:
    if not profile.uses_tensorrt:
        raise BadInputError(
            f"target {profile.name} runs onnxruntime, not TensorRT: it has no engine build plan "
            "(choose a Jetson or x86-tensorrt target)"
        )
    if precision not in profile.precisions:
        raise BadInputError(
            f"precision {precision!r} is not available on target {profile.name}: choose one of "
            f"{', '.join(profile.precisions)}"
        )


def _check_dla(profile: TargetProfile, precision: str, dla_core: int | None) -> None:
    if dla_core is None:
        return
    if not profile.has_dla:
        raise BadInputError(f"target {profile.name} has no DLA: build without a DLA core")
    if not 0 <= dla_core < profile.dla_cores:
        raise BadInputError(
            f"DLA core {dla_core} does not exist on target {profile.name} (it has {profile.dla_cores}: "
            f"use 0..{profile.dla_cores - 1})"
        )
    if precision not in DLA_PRECISIONS:
        raise BadInputError(
            f"DLA runs fp16/int8 only, not {precision}: use --precision fp16 or int8, or no DLA"
        )


def _shape_spec(name: str, shape: tuple[int, ...]) -> str:
    return f"{name}:" + "x".join(str(d) for d in shape)


def profile_shapes(
    input_shape: tuple[int, ...], *, max_batch: int, dla: bool
) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    """(min, opt, max) shapes for the batch dimension: 1/1/max_batch on the GPU, 1/1/1 on DLA (static)."""
    if not input_shape or any(int(d) < 1 for d in input_shape):
        raise BadInputError(f"input shape must be positive integers, got {list(input_shape)}")
    if max_batch < 1:
        raise BadInputError(f"max_batch must be >= 1, got {max_batch}")
    one = (1, *(int(d) for d in input_shape[1:]))
    top = one if dla else (max_batch, *one[1:])
    return one, one, top


def trtexec_command(
    onnx: str,
    engine: str,
    *,
    precision: str,
    profile: TargetProfile,
    input_name: str,
    input_shape: tuple[int, ...],
    dla_core: int | None,
    timing_cache: str,
    max_batch: int = 8,
    gpu_fallback: bool = True,
) -> list[str]:
    """The trtexec argv that builds ``engine`` from ``onnx`` for ``profile`` (argv[0] is ``trtexec``).

    ``input_shape`` is the static batch-1 shape; the command declares a dynamic batch profile up to
    ``max_batch``, except on DLA (static shapes only) where min = opt = max = batch 1.
    """
    _check_precision(profile, precision)
    _check_dla(profile, precision, dla_core)
    if not _TENSOR_NAME.match(input_name):
        raise BadInputError(f"tensor name {input_name!r} cannot be passed to trtexec shape flags")
    lo, opt, hi = profile_shapes(input_shape, max_batch=max_batch, dla=dla_core is not None)
    workspace = (
        f"{profile.workspace_mib}M" if (profile.tensorrt_major or 0) >= 10 else str(profile.workspace_mib)
    )
    cmd = ["trtexec", f"--onnx={onnx}", f"--saveEngine={engine}"]
    major = profile.tensorrt_major or 0
    if major >= 11:
        pass  # strongly typed only: the ONNX file carries the precision (--stronglyTyped is a no-op there)
    elif precision == "fp16":
        cmd.append("--fp16")
    elif precision == "int8":
        cmd += ["--int8", "--fp16"]
    elif major >= 10:
        cmd.append("--stronglyTyped")  # the fp32 ONNX file already carries the precision
    if dla_core is not None:
        cmd.append(f"--useDLACore={dla_core}")
        if gpu_fallback:
            cmd.append("--allowGPUFallback")
        elif major >= 11:
            cmd.append("--reportCapabilityDLA")  # the parser refuses a node the DLA cannot run
    cmd += [
        f"--minShapes={_shape_spec(input_name, lo)}",
        f"--optShapes={_shape_spec(input_name, opt)}",
        f"--maxShapes={_shape_spec(input_name, hi)}",
        f"--memPoolSize=workspace:{workspace}",
        f"--timingCacheFile={timing_cache}",
        "--skipInference",
    ]
    return cmd


def build_recipe(
    profile: TargetProfile,
    *,
    precision: str,
    head_onnx: str,
    tail_onnx: str,
    input_shape: tuple[int, ...],
    boundary_shape: tuple[int, ...],
    input_name: str = "input",
    boundary_name: str = "boundary",
    output_name: str = "logits",
    max_batch: int = 8,
    use_dla: bool = True,
    dla: DlaReport | None = None,
    min_dla_fraction: float = MIN_DLA_FRACTION,
) -> dict[str, Any]:
    """The plan as data (what ``engine_plan.json`` holds); paths are relative to the split folder.

    ``dla`` is the head's DLA capability report: with it, the head stays on the DLA only when at
    least ``min_dla_fraction`` of its layers run there (the recipe's ``dla.decision`` says why).
    """
    _check_precision(profile, precision)
    head_dla = default_head_dla_core(profile, precision) if use_dla else None
    dla_block: dict[str, Any] | None = None
    if head_dla is not None and dla is not None:
        keep, why = choose_device(dla, min_dla_fraction)
        dla_block = {
            **dla.to_json(),
            "min_fraction": min_dla_fraction,
            "device": "dla" if keep else "gpu",
            "decision": why,
        }
        head_dla = head_dla if keep else None
    fallback_ok = bool(dla_block and dla_block["fallback"]) or dla is None
    parts: dict[str, Any] = {}
    for part, onnx, name, shape, output, core in (
        ("head", head_onnx, input_name, input_shape, boundary_name, head_dla),
        ("tail", tail_onnx, boundary_name, boundary_shape, output_name, None),
    ):
        lo, opt, hi = profile_shapes(shape, max_batch=max_batch, dla=core is not None)
        engine = engine_file(part, precision)
        parts[part] = {
            "onnx": onnx,
            "engine": engine,
            "device": "dla" if core is not None else "gpu",
            "dla_core": core,
            "input": {"name": name, "min": list(lo), "opt": list(opt), "max": list(hi)},
            "output": output,
            "trtexec": trtexec_command(
                onnx,
                engine,
                precision=precision,
                profile=profile,
                input_name=name,
                input_shape=shape,
                dla_core=core,
                timing_cache=TIMING_CACHE,
                max_batch=max_batch,
                gpu_fallback=fallback_ok,
            ),
        }
    return {
        "schema": ENGINE_PLAN_SCHEMA,
        "target": profile.name,
        "jetpack": profile.jetpack,
        "tensorrt_version": profile.tensorrt_version,
        "tensorrt_major": profile.tensorrt_major,
        "typing": "strong" if (profile.tensorrt_major or 0) >= 11 or precision == "fp32" else "weak",
        "dla": dla_block,
        "precision": precision,
        "workspace_mib": profile.workspace_mib,
        "max_batch": max_batch,
        "timing_cache": TIMING_CACHE,
        "record": RECORD_NAME,
        "engines": parts,
    }


def _bash_argv(cmd: list[str]) -> str:
    """One trtexec call for the script: ``"$TRTEXEC"`` then the quoted flags, one per line."""
    return '"$TRTEXEC" \\\n    ' + " \\\n    ".join(shlex.quote(a) for a in cmd[1:])


def _fallback_guard(engine: str, expected: int) -> list[str]:
    """Script lines that fail the build when the log reports more DLA fallbacks than the recipe expects."""
    return [
        f'if [ "${{FALLBACK:-0}}" -gt {expected} ]; then',
        f'  echo "the head build reports $FALLBACK DLA fallback line(s); the plan expects {expected}: see {engine}.log" >&2',
        "  exit 3",
        "fi",
    ]


def render_script(recipe: EngineRecipe) -> str:
    """``build_engines.sh`` for ``recipe``: builds both engines with trtexec, then writes ``engines/build.json``."""
    head, tail = recipe.head, recipe.tail
    dla = head.dla_core
    dla_json = "null" if dla is None else str(dla)
    lines = [
        "#!/usr/bin/env bash",
        f"# TensorRT engine build plan for target {recipe.target}, precision {recipe.precision}",
        f"# (generated by isplit-export; the same plan as data: {ENGINE_BUILD_FILE}).",
        "# Run it on the device itself: engines only run on the GPU model and TensorRT version that built them.",
        "#   bash build_engines.sh            (TRTEXEC=/path/to/trtexec overrides the trtexec binary)",
        f"# Written for TensorRT {recipe.tensorrt_version} ({recipe.typing}ly typed). Head on "
        + (f"DLA core {dla}." if dla is not None else "the GPU."),
        *([f"# DLA check: {recipe.dla.decision}"] if recipe.dla is not None else []),
        "set -euo pipefail",
        'cd "$(dirname "$0")"',
        "",
        f'TRTEXEC="${{TRTEXEC:-$(command -v trtexec || echo {TRTEXEC_DEFAULT})}}"',
        'if [ ! -x "$TRTEXEC" ]; then',
        '  echo "trtexec not found (tried PATH and '
        + TRTEXEC_DEFAULT
        + '): set TRTEXEC=/path/to/trtexec" >&2',
        "  exit 4",
        "fi",
        f"mkdir -p {ENGINE_DIR}",
        "",
        f'echo "building {head.engine} from {head.onnx}"',
        _bash_argv(list(head.trtexec)) + f" > {head.engine}.log 2>&1 \\",
        f'  || {{ tail -n 30 {head.engine}.log >&2; echo "head build failed: see {head.engine}.log" >&2; exit 3; }}',
        f'echo "building {tail.engine} from {tail.onnx}"',
        _bash_argv(list(tail.trtexec)) + f" > {tail.engine}.log 2>&1 \\",
        f'  || {{ tail -n 30 {tail.engine}.log >&2; echo "tail build failed: see {tail.engine}.log" >&2; exit 3; }}',
        "",
        "# What built them: TensorRT version (Python bindings, else trtexec's banner) and the GPU / Jetson model.",
        "TRT_VERSION=\"$(python3 -c 'import tensorrt; print(tensorrt.__version__)' 2>/dev/null || true)\"",
        'if [ -z "$TRT_VERSION" ]; then',
        f"  code=\"$(grep -oE 'TensorRT v[0-9]+' {head.engine}.log | head -n 1 | tr -dc '0-9' || true)\"",
        "  # the banner's number is major*1000+minor*100+patch up to TensorRT 9, major*10000+... from 10 on",
        '  if [ -n "$code" ] && [ "$((10#$code))" -ge 10000 ]; then',
        '    TRT_VERSION="$((10#$code / 10000)).$((10#$code / 100 % 100)).$((10#$code % 100))"',
        '  elif [ -n "$code" ]; then',
        '    TRT_VERSION="$((10#$code / 1000)).$((10#$code / 100 % 10)).$((10#$code % 100))"',
        "  else",
        '    TRT_VERSION="unknown"',
        "  fi",
        "fi",
        "if [ -r /proc/device-tree/model ]; then",
        "  GPU=\"$(tr -d '\\0' < /proc/device-tree/model)\"",
        "elif command -v nvidia-smi > /dev/null 2>&1; then",
        '  GPU="$(nvidia-smi --query-gpu=name --format=csv,noheader | head -n 1)"',
        "else",
        '  GPU="unknown"',
        "fi",
        'GPU="$(printf \'%s\' "$GPU" | sed \'s/[\\\\"]/\\\\&/g\')"',
        "sha() { sha256sum \"$1\" | cut -d ' ' -f 1; }",
        "# Lines where TensorRT reports a layer it could not place on DLA (a count, from the build log).",
        f"FALLBACK=\"$(grep -ciE 'unsupported on DLA|not supported on DLA|falling back to GPU' {head.engine}.log || true)\"",
        *(
            _fallback_guard(head.engine, len(recipe.dla.fallback) if recipe.dla is not None else 0)
            if dla is not None
            else []
        ),
        f"cat > {RECORD_NAME} <<EOF",
        "{",
        f'  "schema": "{RECORD_SCHEMA}",',
        '  "builder": "trtexec",',
        f'  "target": "{recipe.target}",',
        '  "tensorrt_version": "$TRT_VERSION",',
        '  "gpu": "$GPU",',
        f'  "precision": "{recipe.precision}",',
        '  "engines": {',
        f'    "head": {{"file": "{head.engine}", "onnx": "{head.onnx}", "dla_core": {dla_json}, '
        f'"sha256": "$(sha {head.engine})", "dla_fallback_log_lines": ${{FALLBACK:-0}}}},',
        f'    "tail": {{"file": "{tail.engine}", "onnx": "{tail.onnx}", "dla_core": null, '
        f'"sha256": "$(sha {tail.engine})"}}',
        "  }",
        "}",
        "EOF",
        f'echo "wrote {RECORD_NAME} (TensorRT $TRT_VERSION on $GPU)"',
        "",
    ]
    return "\n".join(lines)


def write_engine_build(
    split_dir: Path,
    profile: TargetProfile,
    *,
    precision: str,
    head_onnx: str,
    tail_onnx: str,
    input_shape: tuple[int, ...],
    boundary_shape: tuple[int, ...],
    boundary_name: str = "boundary",
    input_name: str = "input",
    output_name: str = "logits",
    max_batch: int = 8,
    use_dla: bool = True,
    min_dla_fraction: float = MIN_DLA_FRACTION,
) -> list[Path]:
    """Write ``build_engines.sh`` (executable) and ``engine_plan.json`` into ``split_dir``; byte-deterministic.

    ``head_onnx`` / ``tail_onnx`` are file names inside ``split_dir`` (``head.onnx`` or ``head.int8.onnx``);
    shapes are static batch-1 shapes. Returns the two paths written.
    """
    for onnx in (head_onnx, tail_onnx):
        if Path(onnx).is_absolute() or ".." in Path(onnx).parts or not _safe_path(onnx):
            raise BadInputError(f"model path {onnx!r} must be a plain file name inside the split folder")
    dla = None
    if use_dla and default_head_dla_core(profile, precision) is not None:
        import onnx as onnx_lib  # lazy: this module stays light for readers

        dla = check_model(onnx_lib.load(str(split_dir / head_onnx), load_external_data=False), batch=1)
    recipe = EngineRecipe.from_json(
        build_recipe(
            profile,
            precision=precision,
            head_onnx=head_onnx,
            tail_onnx=tail_onnx,
            input_shape=tuple(input_shape),
            boundary_shape=tuple(boundary_shape),
            input_name=input_name,
            boundary_name=boundary_name,
            output_name=output_name,
            max_batch=max_batch,
            use_dla=use_dla,
            dla=dla,
            min_dla_fraction=min_dla_fraction,
        ),
        ENGINE_BUILD_FILE,
    )
    split_dir.mkdir(parents=True, exist_ok=True)
    script = split_dir / SCRIPT_NAME
    plan_path = split_dir / ENGINE_BUILD_FILE
    script.write_text(render_script(recipe), encoding="utf-8", newline="\n")
    script.chmod(0o755)
    plan_path.write_text(
        json.dumps(recipe.to_json(), indent=2, sort_keys=True, allow_nan=False) + "\n",
        encoding="utf-8",
        newline="\n",
    )
    return [script, plan_path]


def _safe_path(name: str) -> bool:
    """File names go into a shell script and JSON unquoted-by-design: keep them to a plain character set."""
    return re.fullmatch(r"[A-Za-z0-9_.][A-Za-z0-9_./-]*", name) is not None


def read_engine_build(split_dir: Path) -> EngineRecipe:
    """Load a split's ``engine_plan.json`` through the contract's one reader, refusing a missing or foreign file."""
    return read_engine_recipe(split_dir / ENGINE_BUILD_FILE)


def engine_build_lines(recipe: EngineRecipe | None) -> list[str]:
    """Markdown lines for the bundle report: the TensorRT version a recipe is written for and its DLA check."""
    if recipe is None:
        return []
    lines = [f"  - written for TensorRT {recipe.tensorrt_version} ({recipe.typing}ly typed)"]
    dla = recipe.dla
    if dla is not None:
        fallback = dla.fallback
        lines.append(
            f"  - DLA check: {dla.on_dla}/{dla.layers} head layers can run on the DLA; {dla.decision}"
        )
        lines += [f"    - `{f.node}` ({f.op}): {f.reason}" for f in fallback[:5]]
        if len(fallback) > 5:
            lines.append(f"    - ... {len(fallback) - 5} more in the plan's `dla.fallback`")
    return lines


def check_tensorrt_version(wanted: str | None, installed: str) -> None:
    """Refuse to build a recipe written for another TensorRT ``wanted`` major.minor than the one installed (one line)."""
    wanted = wanted or ""
    if not wanted:
        raise BadInputError("the engine plan names no TensorRT version: re-export the bundle")
    want, have = wanted.split("."), str(installed).split(".")
    if want != have[: len(want)]:
        raise BadInputError(
            f"the plan was written for TensorRT {wanted} but TensorRT {installed} is installed: "
            f"re-export with the matching --target (see `isplit-export targets`) or install TensorRT {wanted}"
        )


def relocate_models(split_dir: Path, moves: dict[str, str]) -> None:
    """Point a written recipe at moved ONNX files: ``moves`` maps a model path of the recipe (relative to
    ``split_dir``) to its new one, e.g. ``head.onnx`` -> ``../../01-x.head.onnx`` in the shared weights
    layout (:mod:`isplit_export.bundle.weights`). Rewrites ``engine_plan.json`` and ``build_engines.sh``."""
    recipe = read_engine_build(split_dir)
    for part in (recipe.head, recipe.tail):
        new = moves.get(part.onnx)
        if new is not None and (not _safe_path(new) or PurePosixPath(new).is_absolute()):
            raise BadInputError(f"model path {new!r} cannot go into a shell script: choose plain file names")
    recipe = recipe.with_models(moves)
    script = split_dir / SCRIPT_NAME
    script.write_text(render_script(recipe), encoding="utf-8", newline="\n")
    script.chmod(0o755)
    (split_dir / ENGINE_BUILD_FILE).write_text(
        json.dumps(recipe.to_json(), indent=2, sort_keys=True, allow_nan=False) + "\n",
        encoding="utf-8",
        newline="\n",
    )
