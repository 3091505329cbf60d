"""The build-engines job (``isplit-export build-engines``): build every split's TensorRT head and tail
engines of a bundle on the device, from its ``engine_plan.json``, with the TensorRT Python API
(:mod:`isplit_export.targets.trt_backend`). The CLI prints one line per split built.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from isplit_export import contract
from isplit_export.targets import engine_trust, trt_backend
from isplit_export.targets.cuda_runtime import current_gpu_name
from isplit_export.targets.engine_build import RECORD_SCHEMA, check_tensorrt_version

__all__ = ["build_bundle_engines"]


def build_bundle_engines(
    bundle: Path, split: int | None = None, *, expect_sha256: str | None = None
) -> list[dict[str, Any]]:
    """Build head and tail engines for every split of ``bundle`` (or only split ``split``, 1-based).

    The bundle is read through :mod:`isplit_export.contract`: the manifest is validated (and pinned with
    ``expect_sha256``), every file is re-hashed, each split's ``engine_plan.json`` and the ONNX files
    it names must be hashed files of the bundle, and everything written (engines, layer info, timing
    cache, ``engines/build.json``) must lie in the split's ``engines/`` folder, reached through no
    symlink. Returns one record per split.
    """
    trt_backend.require_tensorrt()  # first, like every entry point here: a CPU machine reports "not run" (exit 4)
    if expect_sha256 is not None:
        expect_sha256 = contract.check_sha256_text(expect_sha256, "--expect-sha256")
    m = contract.read_manifest(bundle)
    contract.check_expected_sha256(m, expect_sha256)
    chosen = contract.select_splits(m, split)
    contract.check_files(m.bundle, m)
    plans = [
        (entry, contract.read_engine_plan(m, entry)) for _, entry in chosen
    ]  # all checked before any build
    import tensorrt as trt

    gpu = current_gpu_name()
    records: list[dict[str, Any]] = []
    for entry, plan in plans:
        check_tensorrt_version(plan.tensorrt_version, str(trt.__version__))
        built: dict[str, Any] = {}
        for part in ("head", "tail"):
            spec = plan.parts[part]
            # resolve(): in the shared weights layout the plan names ../../<file>.onnx, whose external
            # data (weights/...) TensorRT's parser resolves relative to the model file's own directory
            report = trt_backend.build_engine(
                spec.onnx.resolve(),
                spec.engine,
                precision=plan.precision,
                workspace_mib=plan.workspace_mib,
                dla_core=spec.dla_core,
                timing_cache=plan.timing_cache,
                input_name=spec.input_name,
                min_shape=spec.min_shape,
                opt_shape=spec.opt_shape,
                max_shape=spec.max_shape,
                expected_fallback=plan.dla_fallback if part == "head" and plan.dla else None,
            )
            built[part] = {"file": spec.engine_rel, **report}
            # outside the bundle: what lets verify and run deserialise this engine on this machine
            engine_trust.record_engine(spec.engine, bundle=str(m.bundle))
        record: dict[str, Any] = {
            "schema": RECORD_SCHEMA,
            "builder": "python",
            "target": plan.target,
            "tensorrt_version": str(trt.__version__),
            "tensorrt_expected": plan.tensorrt_version,
            "gpu": gpu,
            "precision": plan.precision,
            "engines": built,
        }
        contract.write_output(
            plan.record, (json.dumps(record, indent=2, sort_keys=True, allow_nan=False) + "\n").encode()
        )
        records.append({"split": entry.dir, **record})
    return records
