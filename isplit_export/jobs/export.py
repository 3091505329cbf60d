"""Build the artifact bundle: cut, export, encode, verify and describe the top-K I-Split splits.

The stages run in pipeline order (rank -> cost + selection (:mod:`planning`) -> cut + export -> encode -> target plan -> verify -> write)
inside a temporary directory that is renamed to ``out`` at the end (:func:`outdir.atomic_directory`),
so an existing bundle is never half-overwritten and an interrupted run leaves no partial bundle.
Everything but the manifest's ``run`` block and ``report.md`` is byte-reproducible.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import dataclasses
import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from isplit_export import contract, progress
from isplit_export.bundle.cost_block import choose_cuts
from isplit_export.bundle.grid_export import choose_export, grid_block
from isplit_export.bundle.report import render_report
from isplit_export.bundle.summary import gate_failures, write_summary
from isplit_export.bundle.triton import wants_repository, write_repository
from isplit_export.bundle.weights import inline_info, share_weights
from isplit_export.contract import MANIFEST_FILE
from isplit_export.distributed import requested
from isplit_export.errors import BadInputError
from isplit_export.exporting.encoding import ENCODINGS
from isplit_export.exporting.onnx_export import BATCH_AXIS, export_file
from isplit_export.exporting.onnx_utils import OPSET, this_machine
from isplit_export.files import save_npz, sha256_file, write_json
from isplit_export.jobs.export_split import SplitJob, export_split
from isplit_export.jobs.rank import RankResult, rank, write_ranking
from isplit_export.models import forward_batched
from isplit_export.options import ExportOptions, make_options
from isplit_export.options_bottleneck import BottleneckOptions
from isplit_export.options_grid import export_pair
from isplit_export.outdir import atomic_directory, check_out, check_writable_file
from isplit_export.stats import MIN_TO_CONCLUDE
from isplit_export.targets.profiles import TargetProfile, load_target
from isplit_export.verification.checks import cui_order
from isplit_export.verification.gates import GATES
from isplit_export.verification.metrics import accuracy
from isplit_export.verification.verify import SCHEMA
from isplit_export.version import __version__, run_stamp

log = logging.getLogger(__name__)


@dataclass
class ExportResult:
    """The written bundle and its manifest; ``passed`` is False when a verification gate failed."""

    out: Path
    manifest: contract.Manifest
    """The written manifest, read back through the contract (typed, hashed)."""
    ranked: RankResult
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return self.manifest.verification.passed


def export(options: ExportOptions | str | None = None, /, **fields: Any) -> ExportResult:
    """Rank the model, export its top splits for the target and verify them into the bundle ``out``.

    ``options`` is an :class:`~isplit_export.options.ExportOptions` (or a model name); keyword
    ``fields`` override its fields: ``export("resnet50", out="bundle", target="jetson")``.
    Gate failures are recorded in the manifest and in :attr:`ExportResult.passed`; the caller decides
    whether they are fatal (the CLI exits 1 unless ``--no-strict``).
    """
    opts = make_options(ExportOptions, options, fields)
    # --budgets with a target: one (cut, budget) chosen on the probe's grid (bundle/grid_export.py)
    pair = export_pair(opts)
    if pair is not None:
        opts = opts.replace(bottleneck=opts.bottleneck or BottleneckOptions())  # its size: the chosen budget
    if requested(opts.distributed):
        raise BadInputError(
            "export runs in one process: run `isplit-export rank` under torchrun, then export"
        )
    if opts.out is None:
        raise BadInputError("no --out: pass the bundle directory to create")
    profile = load_target(opts.target)
    if opts.precision is not None:
        if opts.precision not in profile.precisions:
            raise BadInputError(
                f"--precision {opts.precision} is not supported by target {profile.name}: "
                f"choose {', '.join(profile.precisions)}"
            )
        profile = dataclasses.replace(profile, default_precision=opts.precision)
    bn = (
        opts.bottleneck
    )  # learned bottleneck at each cut (isplit_export.bottleneck.core); its code is int8 by default
    encoding_name = opts.boundary or ("int8" if bn is not None else profile.default_boundary)
    if encoding_name not in ENCODINGS:
        raise BadInputError(f"unknown --boundary '{encoding_name}': choose {', '.join(ENCODINGS)}")
    out = opts.out
    check_out(out, force=opts.force)  # before the ranking: fail fast
    if opts.summary_json is not None:
        check_writable_file(opts.summary_json, "--summary-json")

    per_split = 3 + profile.int8 + profile.uses_tensorrt + (bn is not None)
    want_triton = wants_repository(profile.kind, opts.triton)
    progress.expect(
        3
        + (1 if pair is not None else opts.top or 0) * per_split
        + (opts.weights_layout == "shared")
        + want_triton
    )
    ranked = rank(opts.replace(out=None, bottleneck=None) if pair is not None else opts.replace(out=None))
    _return_freed_memory()
    picked = None
    if pair is not None:  # an unreachable target is refused here: before any training, nothing written
        picked = choose_export(ranked.ranking.to_json(), opts, pair)
        opts = ranked.options = picked.options
        bn, cuts = opts.bottleneck, [ranked.ranking.cuts[picked.cut]]
    else:
        cuts = choose_cuts(ranked, opts, profile, encoding_name)  # ranking -> cost -> selection
    if not cuts:
        raise BadInputError("the ranking has no candidate split (no local maximum of the CUI curve)")
    progress.expect((len(cuts) - (opts.top or 0)) * per_split)  # fewer candidates than --top
    progress.stage("reference outputs and full.onnx")
    x, labels, names = ranked.images.tensor(limit=opts.verify_images)
    x_train: torch.Tensor | None = None
    if bn is not None:  # train on one part, verify on the held-out rest; sizes checked before writing
        from isplit_export.bottleneck.core import code_shape
        from isplit_export.bottleneck.holdout import split_holdout

        for cut in cuts:
            code_shape(cut, bn.spec, encoding_name)
        train_idx, held_idx = split_holdout(names, bn.holdout, opts.seed)
        x_train, x, labels = x[train_idx], x[held_idx], labels[held_idx]
        names = [names[i] for i in held_idx]
    module = ranked.model.module
    y_ref = forward_batched(module, x, opts.batch_size).numpy()
    lab = labels.numpy()

    # lazy until here (imports matplotlib), but before --out's temporary folder exists: a SIGTERM that
    # lands inside a C extension's import surfaces as an ImportError, not as the clean "terminated" path
    import isplit_export.plots_cde
    import isplit_export.plots_cui  # noqa: F401

    with atomic_directory(out, force=opts.force) as tmp:
        export_file(module, x[:1], tmp / "full.onnx", "input", "logits")
        progress.stage("write ranking.json and its plots")
        write_ranking(ranked.ranking, tmp)
        uses_int8 = encoding_name == "int8" or profile.int8
        if uses_int8:
            (tmp / "calibration").mkdir()
            save_npz(tmp / "calibration" / "inputs.npz", {"input": x.numpy(), "labels": lab})

        splits: list[contract.Split] = []
        latency: dict[str, Any] = {}
        train_seconds: dict[str, float] = {}
        full_ms: float | None = None
        for pos, cut in enumerate(cuts, start=1):
            rel = f"splits/{pos:02d}-{cut.node}"
            sdir = tmp / rel
            sdir.mkdir(parents=True)
            job = SplitJob(
                ranked, opts, profile, encoding_name, x, lab, y_ref, x_train, cut, pos, rel, sdir, full_ms
            )
            entry, lat = export_split(job, train_seconds)
            full_ms = lat.get("full_ms")  # timed with the first split, reused by the others
            splits.append(entry)
            latency[rel] = lat
            _return_freed_memory()  # each split's models are gone: the next one starts from the same RSS

        weights = inline_info()
        if opts.weights_layout == "shared":
            progress.stage("share the weights (weights/)")
            weights, moves = share_weights(tmp, [s.dir for s in splits])
            splits = [s.with_files({k: moves.get(v, v) for k, v in s.files.items()}) for s in splits]
        triton = None
        if want_triton:  # OUT/triton/: the tails as Triton models (hashed below)
            progress.stage("write the Triton repository (triton/)")
            triton = write_repository(tmp, splits, model=ranked.model.name)
        progress.stage("hash the files, write report.md and manifest.json")
        full_acc = accuracy(y_ref, lab)
        summary = cui_order(splits, encoding_name, full_acc)
        if bn is not None and len(splits) < MIN_TO_CONCLUDE:
            summary["too_few_splits"] = True
            summary["note"] += (
                f"; but {len(splits)} split(s) are too few to conclude anything about the CUI order "
                f"(run `isplit-export study` over {MIN_TO_CONCLUDE}+ cuts)"
            )
        manifest = {
            **_manifest(
                ranked, profile, encoding_name, [s.to_json() for s in splits], summary, len(names), uses_int8
            ),
            "weights": weights,
            **({"grid_choice": grid_block(picked, splits[0], encoding_name)} if picked is not None else {}),
            **({"triton": triton} if triton is not None else {}),
            "files": _hash_files(tmp),
        }
        # for the report only: each TensorRT split's plan, through the contract's one reader
        plans = {
            sp.dir: contract.load_engine_plan(tmp, sp.dir).recipe
            for sp in splits
            if "engine_plan_json" in sp.files
        }
        report = render_report(
            {**manifest, "run": {"latency_ms": latency}, "engine_plans": plans}, ranked.ranking.to_json()
        )
        (tmp / "report.md").write_text(report, encoding="utf-8")
        manifest["run"] = {
            **run_stamp(),
            "latency_ms": latency,
            **({"bottleneck_train_seconds": train_seconds} if bn is not None else {}),
            "report_sha256": sha256_file(tmp / "report.md"),
        }
        write_json(tmp / MANIFEST_FILE, manifest)
    progress.done()
    written = contract.read_manifest(out)
    if opts.summary_json is not None:
        write_summary(opts.summary_json, written)
    return ExportResult(out, written, ranked, gate_failures(written))


def _manifest(
    ranked: RankResult,
    profile: TargetProfile,
    encoding_name: str,
    splits: list[dict[str, Any]],
    summary: dict[str, Any],
    n_images: int,
    uses_int8: bool,
) -> dict[str, Any]:
    m = ranked.model
    c, h, w = m.preprocessing.input_shape
    ranking = ranked.ranking
    return {
        "schema": SCHEMA,
        "tool": {"name": "isplit-export", "version": __version__},
        "options": ranked.options.to_json(),
        "model": m.to_json(),
        "preprocessing": m.preprocessing.to_json(),
        "input": {"name": "input", "shape": [BATCH_AXIS, c, h, w], "dtype": "float32", "layout": "NCHW"},
        "output": {"name": "logits", "shape": [BATCH_AXIS, m.num_classes], "dtype": "float32"},
        "opset": OPSET,
        "target": profile.to_json(),
        "boundary_encoding": encoding_name,
        "ranking": {
            "file": "ranking.json",
            "images": ranking.images,
            "classes": ranking.classes,
            "score": ranking.score,
            "top": ranking.top,
        },
        "calibration": {
            "source": ranked.images.source,
            "count": n_images,
            "skipped": ranked.images.skipped,
            "file": "calibration/inputs.npz" if uses_int8 else None,
        },
        "gates": {k: g.to_json() for k, g in GATES.items()},
        "machine": this_machine().to_json(),  # where the gates were measured (contract.Machine)
        "splits": splits,
        "verification": summary,
    }


def _hash_files(root: Path) -> dict[str, dict[str, Any]]:
    """Every file's sha256 and size; a hard-linked file (the Triton repository's packs) is read once."""
    by_inode: dict[tuple[int, int], dict[str, Any]] = {}
    hashed: dict[str, dict[str, Any]] = {}
    for p in sorted(p for p in root.rglob("*") if p.is_file()):
        st = p.stat()
        key = (st.st_dev, st.st_ino)
        if key not in by_inode:
            by_inode[key] = {"sha256": sha256_file(p), "bytes": st.st_size}
        hashed[p.relative_to(root).as_posix()] = dict(by_inode[key])
    return hashed


def _return_freed_memory() -> None:
    """Hand the heap memory freed by the last stage back to the system (glibc ``malloc_trim``).

    glibc keeps freed large blocks in its heap, so without it the peak RSS of one split (a 500 MB
    tail read, quantized and written) adds to the next one's. Elsewhere (no glibc) nothing happens.
    """
    name = ctypes.util.find_library("c")
    if platform.system() != "Linux" or name is None:
        return
    with contextlib.suppress(OSError, AttributeError):  # a libc without malloc_trim (musl)
        ctypes.CDLL(name).malloc_trim(0)
