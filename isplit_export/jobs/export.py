"""Build the artifact bundle: cut, export, encode, verify and describe the top-K I-Split splits.

The stages run in pipeline order (rank -> cost + selection (:mod:`planning`) -> cut + export -> encode -> target plan -> verify -> write)
inside a temporary directory that is renamed to ``out`` at the end (:func:`outdir.atomic_directory`),
so an existing bundle is never half-overwritten and an interrupted run leaves no partial bundle.
Everything but the manifest's ``run`` block and ``report.md`` is byte-reproducible.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from isplit_export import contract
from isplit_export.api import RankResult, rank, write_ranking
from isplit_export.bundle.cost_block import choose_cuts
from isplit_export.bundle.report import render_report
from isplit_export.bundle.summary import gate_failures, write_summary
from isplit_export.bundle.triton import wants_repository, write_repository
from isplit_export.bundle.weights import inline_info, share_weights
from isplit_export.contract import MANIFEST_FILE
from isplit_export.distributed import requested
from isplit_export.errors import BadInputError
from isplit_export.exporting.encoding import (
    ENCODINGS,
    BoundaryEncoding,
    calibrate_encoding,
    decode_tail,
    encode_array,
    encode_head,
    strip_head_encoding,
    strip_tail_decoding,
)
from isplit_export.exporting.onnx_export import BATCH_AXIS, export_file, to_onnx
from isplit_export.exporting.onnx_utils import OPSET, save_model, this_machine
from isplit_export.exporting.quantize import build_int8_pair
from isplit_export.files import save_npz, sha256_file, write_json
from isplit_export.models import forward_batched
from isplit_export.numbers import rounded
from isplit_export.options import ExportOptions, make_options
from isplit_export.outdir import atomic_directory, check_out, check_writable_file
from isplit_export.ranking.graph import Cut
from isplit_export.stats import MIN_TO_CONCLUDE
from isplit_export.targets.engine_build import write_engine_build
from isplit_export.targets.profiles import TargetProfile, load_target
from isplit_export.verification.backends import gate_for
from isplit_export.verification.checks import (
    check_code_pair,
    check_int8_code_pair,
    check_pair,
    cui_order,
    held_out_rounding,
    task_metric,
)
from isplit_export.verification.gates import GATES
from isplit_export.verification.metrics import accuracy
from isplit_export.verification.runners import LATENCY_THREADS, OnnxrtRunner, measure_latency, run_pair
from isplit_export.verification.verify import SCHEMA
from isplit_export.version import __version__

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

    ranked = rank(opts.replace(out=None))
    cuts = choose_cuts(ranked, opts, profile, encoding_name)  # ranking -> cost -> selection
    if not cuts:
        raise BadInputError("the ranking has no candidate split (no local maximum of the CUI curve)")
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

    with atomic_directory(out, force=opts.force) as tmp:
        export_file(module, x[:1], tmp / "full.onnx", "input", "logits")
        write_ranking(ranked.ranking, tmp)
        uses_int8 = encoding_name == "int8" or profile.int8
        if uses_int8:
            (tmp / "calibration").mkdir()
            save_npz(tmp / "calibration" / "inputs.npz", {"input": x.numpy(), "labels": lab})

        splits: list[contract.Split] = []
        latency: dict[str, Any] = {}
        train_seconds: dict[str, float] = {}
        for pos, cut in enumerate(cuts, start=1):
            rel = f"splits/{pos:02d}-{cut.node}"
            sdir = tmp / rel
            sdir.mkdir(parents=True)
            entry, lat = _export_split(
                ranked,
                opts,
                cut,
                pos,
                rel,
                sdir,
                x,
                lab,
                y_ref,
                encoding_name,
                profile,
                x_train,
                train_seconds,
            )
            splits.append(entry)
            latency[rel] = lat

        weights = inline_info()
        if opts.weights_layout == "shared":
            weights, moves = share_weights(tmp, [s.dir for s in splits])
            splits = [s.with_files({k: moves.get(v, v) for k, v in s.files.items()}) for s in splits]
        triton = None
        if wants_repository(
            profile.kind, opts.triton
        ):  # OUT/triton/: the tails as Triton models (hashed below)
            triton = write_repository(tmp, splits, model=ranked.model.name)
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
            **({"triton": triton} if triton is not None else {}),
            "files": _hash_files(tmp),
        }
        # for the report only: each TensorRT split's plan, through the contract's one reader
        plans = {
            sp.dir: contract.load_engine_plan(tmp, sp.dir).data
            for sp in splits
            if "engine_plan_json" in sp.files
        }
        report = render_report(
            {**manifest, "run": {"latency_ms": latency}, "engine_plans": plans}, ranked.ranking.to_json()
        )
        (tmp / "report.md").write_text(report, encoding="utf-8")
        manifest["run"] = {
            "created": dt.datetime.now(dt.timezone.utc)
            .replace(microsecond=0)
            .isoformat()
            .replace("+00:00", "Z"),
            "host": platform.platform(),
            "torch": torch.__version__,
            "latency_ms": latency,
            **({"bottleneck_train_seconds": train_seconds} if bn is not None else {}),
            "report_sha256": sha256_file(tmp / "report.md"),
        }
        write_json(tmp / MANIFEST_FILE, manifest)
    written = contract.read_manifest(out)
    if opts.summary_json is not None:
        write_summary(opts.summary_json, written)
    return ExportResult(out, written, ranked, gate_failures(written))


def _export_split(
    ranked: RankResult,
    opts: ExportOptions,
    cut: Cut,
    rank_pos: int,
    rel: str,
    sdir: Path,
    x: torch.Tensor,
    labels: np.ndarray,
    y_ref: np.ndarray,
    encoding_name: str,
    profile: TargetProfile,
    x_train: torch.Tensor | None = None,
    train_seconds: dict[str, float] | None = None,
) -> tuple[contract.Split, dict[str, float]]:
    """Export, encode, verify and describe one split; returns its manifest entry (validated) and latency.

    With a bottleneck (``x_train`` given), the encoder/decoder are trained first and wrap the head and
    tail, so the exported pair carries them; ``x`` are then the held-out images.
    """
    golden, batch_size = opts.golden_images, opts.batch_size
    head_gm, tail_gm = ranked.traced.split(cut)
    trained = None
    if opts.bottleneck is not None and x_train is not None:
        from isplit_export.bottleneck import core as bottleneck

        trained = bottleneck.train(
            cut,
            head_gm,
            tail_gm,
            x_train,
            opts.bottleneck,
            seed=opts.seed,
            encoding=encoding_name,
            batch_size=batch_size,
            progress=opts.progress,
        )
        head_gm, tail_gm = trained.head, trained.tail  # type: ignore[assignment]
        if train_seconds is not None:
            train_seconds[rel] = rounded(trained.seconds, 3, decimals=True)
    boundary_fp32 = forward_batched(head_gm, x, batch_size)
    enc = (
        trained.encoding if trained is not None else calibrate_encoding(encoding_name, boundary_fp32.numpy())
    )
    head_path, tail_path = sdir / "head.onnx", sdir / "tail.onnx"
    save_model(encode_head(to_onnx(head_gm, x[:1], "input", "boundary"), enc), head_path)
    save_model(decode_tail(to_onnx(tail_gm, boundary_fp32[:1], "boundary", "logits"), enc), tail_path)

    xn = x.numpy()
    boundary, logits = run_pair(OnnxrtRunner(head_path), OnnxrtRunner(tail_path), xn, batch=batch_size)
    files = {"head": f"{rel}/head.onnx", "tail": f"{rel}/tail.onnx", "golden": f"{rel}/golden.npz"}
    if trained is not None:
        pair_ref = trained.logits_from_code(
            boundary, batch_size
        )  # the PyTorch tail on the code that was sent
        torch_code = encode_array(trained.code(x, batch_size), trained.encoding)
        checks = {encoding_name: check_code_pair(pair_ref, logits, torch_code, boundary, y_ref, labels)}
        golden_logits = (
            pair_ref  # the pair's own logits: verify re-proves the export, not the bottleneck's loss
        )
    else:
        checks = {encoding_name: check_pair(y_ref, logits, labels, gate_for(encoding_name), rnd=rounded)}
        golden_logits = y_ref
    goldens = {
        "input": xn[:golden],
        "boundary": boundary[:golden],
        "logits": golden_logits[:golden],
        "labels": labels[:golden],
    }

    if profile.int8:
        # with a bottleneck, calibrate on the training part: the held-out images stay unseen
        calib_x = x_train.numpy() if x_train is not None else xn
        calib = build_int8_pair(
            head_path, tail_path, calib_x, sdir / "head.int8.onnx", sdir / "tail.int8.onnx", enc
        )
        save_npz(sdir / "calibration_boundary.npz", {"boundary": calib})
        q_head, q_tail = OnnxrtRunner(sdir / "head.int8.onnx"), OnnxrtRunner(sdir / "tail.int8.onnx")
        _, q_logits = run_pair(q_head, q_tail, xn, batch=batch_size)
        if trained is not None:
            checks["int8-qdq"] = check_int8_code_pair(logits, q_logits, y_ref, labels)
        else:
            checks["int8-qdq"] = check_pair(y_ref, q_logits, labels, GATES["int8-qdq"], rnd=rounded)
        goldens["logits_int8"] = q_logits[:golden]
        files.update(
            head_int8=f"{rel}/head.int8.onnx",
            tail_int8=f"{rel}/tail.int8.onnx",
            calibration_boundary=f"{rel}/calibration_boundary.npz",
        )
    save_npz(sdir / "golden.npz", goldens)
    if profile.uses_tensorrt:
        shape = trained.shape.code_shape if trained is not None else cut.shape
        files.update(
            _engine_plan(
                sdir,
                rel,
                profile,
                enc,
                shape,
                ranked.model.preprocessing.input_shape,
                min_dla_fraction=opts.min_dla_fraction,
            )
        )

    timed = {"head": head_path, "tail": tail_path, "full": sdir.parent.parent / "full.onnx"}
    if profile.int8:  # the INT8 pair, interleaved with the fp32 one
        timed.update(head_int8=sdir / "head.int8.onnx", tail_int8=sdir / "tail.int8.onnx")
    runners = {k: OnnxrtRunner(path, threads=LATENCY_THREADS) for k, path in timed.items()}
    lat = measure_latency(runners, xn[:1], runs=opts.latency_runs)
    failures = [f"{name}: {reason}" for name, c in checks.items() for reason in c["gate"]["failures"]]
    entry = {
        "dir": rel,
        "rank": rank_pos,
        "cui_rank": ranked.ranking.ranks[cut.index],  # differs from rank (the position) with --objective
        "index": cut.index,
        "node": cut.node,
        "module": cut.module,
        "cui": float(ranked.ranking.cui[cut.index]),
        "log10_cui": rounded(ranked.ranking.log10_cui[cut.index]),
        "head_flops_share": rounded(cut.head_flops_share, 6, decimals=True),
        "boundary": {
            **enc.to_json(),
            "encoding": enc.name,
            "shape": [BATCH_AXIS, *(trained.shape.code_shape if trained is not None else cut.shape)],
            "layout": "nchw" if trained is not None else cut.layout,  # a bottleneck's code is NCHW
            "bytes_per_image": enc.bytes_per_image(boundary.shape[1:]),
            "fp32_bytes_per_image": cut.boundary_bytes,
        },
        "files": files,
        "verification": {"checks": checks, "passed": not failures, "failures": failures},
    }
    if trained is not None and opts.bottleneck is not None:
        from isplit_export.bottleneck.core import config

        # the probe's score (the untrained PCA code) next to the trained pair's, on the same held-out images
        probe = task_metric(
            y_ref, trained.initial_logits(x, batch_size), labels, held_out=True, rnd=held_out_rounding
        )
        entry["bottleneck"] = {
            **config(opts.bottleneck, trained.shape, enc),
            "training": trained.summary,
            "probe": probe,
            "trained": checks[encoding_name]["task"],
        }
    return contract.Split.from_json(entry, rank_pos - 1), lat


def _engine_plan(
    sdir: Path,
    rel: str,
    profile: TargetProfile,
    enc: BoundaryEncoding,
    boundary_shape: tuple[int, ...],
    input_shape: tuple[int, ...],
    *,
    min_dla_fraction: float,
) -> dict[str, str]:
    """Write the TensorRT build plan; returns the new files for the manifest.

    TensorRT 11 has no ``--fp16``: an fp16 plan builds from strongly typed copies (``*.fp16.onnx``,
    :func:`isplit_export.targets.typed.to_fp16`). ``min_dla_fraction``: see ``write_engine_build``.

    TensorRT parses Q/DQ only as symmetric int8 and the boundary codec is host work anyway, so with a
    non-fp32 boundary the engines are built from codec-free copies (``*.trt.onnx``, float32 boundary)
    and the device applies the encoding around them (``encoding.encode_array`` / ``decode_array``).
    """
    stem = "int8." if profile.default_precision == "int8" else ""
    names = {"head": f"head.{stem}onnx", "tail": f"tail.{stem}onnx"}
    files: dict[str, str] = {}
    if enc.name != "fp32":
        for part, strip in (("head", strip_head_encoding), ("tail", strip_tail_decoding)):
            name = f"{part}.{stem}trt.onnx"
            save_model(strip(onnx.load(sdir / names[part])), sdir / name)
            names[part] = name
            files[f"{part}_trt"] = f"{rel}/{name}"
    if (profile.tensorrt_major or 0) >= 11 and profile.default_precision == "fp16":
        from isplit_export.targets.typed import to_fp16

        for part in ("head", "tail"):
            name = names[part].removesuffix(".onnx") + ".fp16.onnx"
            save_model(to_fp16(onnx.load(sdir / names[part])), sdir / name)
            names[part] = name
            files[f"{part}_fp16"] = f"{rel}/{name}"
    plan = write_engine_build(
        sdir,
        profile,
        precision=profile.default_precision,
        head_onnx=names["head"],
        tail_onnx=names["tail"],
        input_shape=(1, *input_shape),
        boundary_shape=(1, *boundary_shape),
        min_dla_fraction=min_dla_fraction,
    )
    files.update({p.name.replace(".", "_"): f"{rel}/{p.name}" for p in plan})
    return files


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
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {
        p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files
    }
