"""One split of the export job: cut, export, encode, verify, quantize, plan and time it, as named steps.

:func:`export_split` runs the steps for one :class:`SplitJob` (the context they share) and returns the
split's manifest entry; :mod:`isplit_export.jobs.export` runs it per chosen cut.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import torch

from isplit_export import contract, progress
from isplit_export.exporting.encoding import (
    BoundaryEncoding,
    calibrate_encoding,
    decode_tail,
    encode_array,
    encode_head,
    strip_head_encoding,
    strip_tail_decoding,
)
from isplit_export.exporting.onnx_export import BATCH_AXIS, to_onnx
from isplit_export.exporting.onnx_utils import save_model
from isplit_export.exporting.quantize import build_int8_pair
from isplit_export.files import save_npz
from isplit_export.models import forward_batched
from isplit_export.numbers import rounded
from isplit_export.options import ExportOptions
from isplit_export.ranking.graph import Cut
from isplit_export.ranking.ranked import RankResult
from isplit_export.targets.engine_build import write_engine_build
from isplit_export.targets.profiles import TargetProfile
from isplit_export.verification.backends import gate_for
from isplit_export.verification.checks import (
    check_code_pair,
    check_int8_code_pair,
    check_pair,
    held_out_rounding,
    task_metric,
)
from isplit_export.verification.gates import GATES
from isplit_export.verification.runners import (
    LATENCY_KEYS,
    LATENCY_THREADS,
    OnnxrtRunner,
    measure_latency,
    run_pair,
)


@dataclass
class SplitJob:
    """What the steps of one split's export share: the ranked model, the options, the images, the cut."""

    ranked: RankResult
    opts: ExportOptions
    profile: TargetProfile
    encoding_name: str
    x: torch.Tensor
    """The verification images (with a bottleneck: the held-out ones)."""
    labels: np.ndarray
    y_ref: np.ndarray
    """The full model's logits on ``x``."""
    x_train: torch.Tensor | None
    """With a bottleneck: the images it trains (and INT8 calibrates) on."""
    cut: Cut
    rank_pos: int
    rel: str
    """The split folder, relative to the bundle (``splits/01-<node>``)."""
    sdir: Path
    full_ms: float | None = None
    """The full model's latency when an earlier split timed it (it is timed once per export)."""

    def file(self, name: str) -> str:
        """The bundle path of the split folder's file ``name``."""
        return f"{self.rel}/{name}"


@dataclass
class _Verified:
    """The exported pair as verified: its checks, goldens and files so far."""

    enc: BoundaryEncoding
    boundary: np.ndarray
    logits: np.ndarray
    checks: dict[str, Any]
    goldens: dict[str, np.ndarray]
    files: dict[str, str]


def export_split(job: SplitJob, train_seconds: dict[str, float]) -> tuple[contract.Split, dict[str, float]]:
    """Export, encode, verify and describe one split; returns its manifest entry (validated) and latency.

    With a bottleneck (``job.x_train`` given), the encoder/decoder are trained first and wrap the head
    and tail, so the exported pair carries them; ``job.x`` are then the held-out images.
    """
    head_gm, tail_gm, trained = _split_modules(job, train_seconds)
    pair = _export_pair(job, head_gm, tail_gm, trained)
    if job.profile.int8:
        _add_int8_pair(job, pair, trained)
    save_npz(job.sdir / "golden.npz", pair.goldens)
    if job.profile.uses_tensorrt:
        progress.stage(f"split {job.rank_pos}: TensorRT engine build recipe")
        shape = trained.shape.code_shape if trained is not None else job.cut.shape
        pair.files.update(
            _engine_plan(
                job.sdir,
                job.rel,
                job.profile,
                pair.enc,
                shape,
                job.ranked.model.preprocessing.input_shape,
                min_dla_fraction=job.opts.min_dla_fraction,
            )
        )
    progress.stage(f"split {job.rank_pos}: latency ({job.opts.latency_runs} runs each)")
    lat = _measure_latency(job)
    return contract.Split.from_json(_split_entry(job, pair, trained), job.rank_pos - 1), lat


def _split_modules(job: SplitJob, train_seconds: dict[str, float]) -> tuple[Any, Any, Any]:
    """The cut's head and tail modules; with a bottleneck, trained first and wrapped around the cut."""
    head_gm, tail_gm = job.ranked.traced.split(job.cut)
    if job.opts.bottleneck is None or job.x_train is None:
        return head_gm, tail_gm, None
    from isplit_export.bottleneck import core as bottleneck

    trained = bottleneck.train(
        job.cut,
        head_gm,
        tail_gm,
        job.x_train,
        job.opts.bottleneck,
        seed=job.opts.seed,
        encoding=job.encoding_name,
        batch_size=job.opts.batch_size,
        progress=job.opts.progress,
    )
    train_seconds[job.rel] = rounded(trained.seconds, 3, decimals=True)
    return trained.head, trained.tail, trained


def _export_pair(job: SplitJob, head_gm: Any, tail_gm: Any, trained: Any) -> _Verified:
    """Write the encoded head and tail ONNX, run them on the images and judge the pair."""
    progress.stage(f"split {job.rank_pos} ({job.cut.node}): export the ONNX head and tail")
    batch_size, x = job.opts.batch_size, job.x
    boundary_fp32 = forward_batched(head_gm, x, batch_size)
    enc = (
        trained.encoding
        if trained is not None
        else calibrate_encoding(job.encoding_name, boundary_fp32.numpy())
    )
    head_path, tail_path = job.sdir / "head.onnx", job.sdir / "tail.onnx"
    save_model(encode_head(to_onnx(head_gm, x[:1], "input", "boundary"), enc, inplace=True), head_path)
    save_model(
        decode_tail(to_onnx(tail_gm, boundary_fp32[:1], "boundary", "logits"), enc, inplace=True), tail_path
    )
    del boundary_fp32

    progress.stage(f"split {job.rank_pos}: verify the pair on {len(x)} images")
    xn = x.numpy()
    boundary, logits = run_pair(OnnxrtRunner(head_path), OnnxrtRunner(tail_path), xn, batch=batch_size)
    files = {"head": job.file("head.onnx"), "tail": job.file("tail.onnx"), "golden": job.file("golden.npz")}
    y_ref, labels = job.y_ref, job.labels
    if trained is not None:
        pair_ref = trained.logits_from_code(boundary, batch_size)  # the PyTorch tail on the code sent
        torch_code = encode_array(trained.code(x, batch_size), trained.encoding)
        checks = {job.encoding_name: check_code_pair(pair_ref, logits, torch_code, boundary, y_ref, labels)}
        golden_logits = (
            pair_ref  # the pair's own logits: verify re-proves the export, not the bottleneck's loss
        )
    else:
        gate = gate_for(job.encoding_name)
        checks = {job.encoding_name: check_pair(y_ref, logits, labels, gate, rnd=rounded)}
        golden_logits = y_ref
    golden = job.opts.golden_images
    goldens = {
        "input": xn[:golden],
        "boundary": boundary[:golden],
        "logits": golden_logits[:golden],
        "labels": labels[:golden],
    }
    return _Verified(enc, boundary, logits, checks, goldens, files)


def _add_int8_pair(job: SplitJob, pair: _Verified, trained: Any) -> None:
    """Quantize the pair (one calibration per head and tail), judge it and add it to ``pair``."""
    progress.stage(f"split {job.rank_pos}: INT8 calibration, export and verification")
    sdir, xn = job.sdir, job.x.numpy()
    # with a bottleneck, calibrate on the training part: the held-out images stay unseen
    calib_x = job.x_train.numpy() if job.x_train is not None else xn
    calib = build_int8_pair(
        sdir / "head.onnx",
        sdir / "tail.onnx",
        calib_x,
        sdir / "head.int8.onnx",
        sdir / "tail.int8.onnx",
        pair.enc,
    )
    save_npz(sdir / "calibration_boundary.npz", {"boundary": calib})
    q_head, q_tail = OnnxrtRunner(sdir / "head.int8.onnx"), OnnxrtRunner(sdir / "tail.int8.onnx")
    _, q_logits = run_pair(q_head, q_tail, xn, batch=job.opts.batch_size)
    if trained is not None:
        pair.checks["int8-qdq"] = check_int8_code_pair(pair.logits, q_logits, job.y_ref, job.labels)
    else:
        pair.checks["int8-qdq"] = check_pair(job.y_ref, q_logits, job.labels, GATES["int8-qdq"], rnd=rounded)
    pair.goldens["logits_int8"] = q_logits[: job.opts.golden_images]
    pair.files.update(
        head_int8=job.file("head.int8.onnx"),
        tail_int8=job.file("tail.int8.onnx"),
        calibration_boundary=job.file("calibration_boundary.npz"),
    )


def _measure_latency(job: SplitJob) -> dict[str, float]:
    """Batch-1 latency of the pair, the full model and the INT8 pair, interleaved (one thread each).

    The full model is the same for every split: the first split times it, the others reuse that
    figure (``job.full_ms``) for their ``full_ms`` and ``ratio``.
    """
    sdir = job.sdir
    timed = {"head": sdir / "head.onnx", "tail": sdir / "tail.onnx"}
    if job.full_ms is None:
        timed["full"] = sdir.parent.parent / "full.onnx"
    if job.profile.int8:  # the INT8 pair, interleaved with the fp32 one
        timed.update(head_int8=sdir / "head.int8.onnx", tail_int8=sdir / "tail.int8.onnx")
    runners = {k: OnnxrtRunner(path, threads=LATENCY_THREADS) for k, path in timed.items()}
    lat = measure_latency(runners, job.x.numpy()[:1], runs=job.opts.latency_runs)
    if job.full_ms is None:
        return lat
    lat["full_ms"] = job.full_ms
    if job.full_ms > 0:
        lat["ratio"] = (lat["head_ms"] + lat["tail_ms"]) / job.full_ms
    order = [f"{k}_ms" for k in LATENCY_KEYS] + ["ratio"]
    return {k: lat[k] for k in order if k in lat}


def _split_entry(job: SplitJob, pair: _Verified, trained: Any) -> dict[str, Any]:
    """The split's manifest entry (validated by the contract when the caller reads it back)."""
    cut, ranking, enc = job.cut, job.ranked.ranking, pair.enc
    checks = pair.checks
    failures = [f"{name}: {reason}" for name, c in checks.items() for reason in c["gate"]["failures"]]
    entry = {
        "dir": job.rel,
        "rank": job.rank_pos,
        "cui_rank": ranking.ranks[cut.index],  # differs from rank (the position) with --objective
        "index": cut.index,
        "node": cut.node,
        "module": cut.module,
        "cui": float(ranking.cui[cut.index]),
        "log10_cui": rounded(ranking.log10_cui[cut.index]),
        "head_flops_share": rounded(cut.head_flops_share, 6, decimals=True),
        "boundary": {
            **enc.to_json(),
            "encoding": enc.name,
            "shape": [BATCH_AXIS, *(trained.shape.code_shape if trained is not None else cut.shape)],
            "layout": "nchw" if trained is not None else cut.layout,  # a bottleneck's code is NCHW
            "bytes_per_image": enc.bytes_per_image(pair.boundary.shape[1:]),
            "fp32_bytes_per_image": cut.boundary_bytes,
        },
        "files": pair.files,
        "verification": {"checks": checks, "passed": not failures, "failures": failures},
    }
    if trained is not None and job.opts.bottleneck is not None:
        from isplit_export.bottleneck.core import config

        # the probe's score (the untrained PCA code) next to the trained pair's, on the same held-out images
        probe = task_metric(
            job.y_ref,
            trained.initial_logits(job.x, job.opts.batch_size),
            job.labels,
            held_out=True,
            rnd=held_out_rounding,
        )
        entry["bottleneck"] = {
            **config(job.opts.bottleneck, trained.shape, enc),
            "training": trained.summary,
            "probe": probe,
            "trained": checks[job.encoding_name]["task"],
        }
    return entry


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
            save_model(strip(onnx.load(sdir / names[part]), inplace=True), sdir / name)
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
