"""The report's sections per exported split: each split's boundary, equivalence and task checks, then
whether the CUI order held over the splits (Spearman of CUI against the measured task value).

A split's checks are the typed :class:`~isplit_export.contract.Check` values of its ``verification``
block (``checks: {name: {metrics, gate, task}}``); a value that is not recorded only drops its text.
"""

from __future__ import annotations

from collections.abc import Sequence

from isplit_export.bundle import markdown as md
from isplit_export.contract import Check, Manifest, Split, Task

_METRICS = ("max_abs", "max_abs_rel", "max_rel", "cosine", "top1_agreement")


def _checks(split: Split, encoding: str) -> list[Check]:
    """The split's checks, the boundary encoding's own first."""
    if split.verification is None:
        return []
    checks = split.verification.checks
    return [checks[name] for name in sorted(checks, key=lambda n: (n != encoding, n))]


def _verdict(passed: bool | None) -> str:
    return "PASS" if passed is True else "FAIL" if passed is False else "not run"


def _gate_text(c: Check) -> str:
    limits = (
        (c.min_top1_agreement, "top-1 agreement", ">="),
        (c.max_abs_rel, "max_abs_rel", "<="),
        (c.min_cosine, "cosine", ">="),
    )
    parts = [f"{label} {op} {md.sig(v, 6)}" for v, label, op in limits if v is not None]
    return f"gate {c.gate}: " + ", ".join(parts) if parts else f"gate {c.gate}"


def _task_text(task: Task) -> str:
    if task.metric is None and task.value is None:
        return "not measured"
    text = f"{task.metric or 'task metric'} {md.pct(task.value)}"
    extra = []
    if task.full_model is not None:
        extra.append(f"full model {md.pct(task.full_model)}")
    if task.drop is not None:
        extra.append(f"drop {md.pp(task.drop)}")
    if task.ci95 is not None:  # a learned bottleneck: measured on held-out images
        lo, hi = task.ci95
        text += f", 95 % CI [{md.pct(lo)}, {md.pct(hi)}] on {_or(task.images)} held-out images"
    return text + (f" ({', '.join(extra)})" if extra else "")


def _boundary_line(s: Split, encoding: str) -> str | None:
    b = s.boundary
    if b.encoding is None and b.dtype is None and not b.shape and b.bytes_per_image is None:
        return None  # no boundary block
    text = (
        f"- Boundary: `{b.encoding or encoding or '?'}` ({b.dtype or '?'}), shape {md.dims(b.shape or None)}"
    )
    nbytes, fp32 = b.bytes_per_image, b.fp32_bytes_per_image
    if nbytes is not None:
        text += f", {nbytes} bytes per image ({nbytes / 1024:.1f} KiB)"
        if fp32:
            text += f", {100 * nbytes / fp32:.1f} % of fp32 ({fp32} bytes)"
    if b.scale is not None:
        text += f"; scale {md.sig(b.scale, 6)}, zero point {b.zero_point}"
    return text


def splits_section(manifest: Manifest) -> list[str]:
    splits = manifest.splits
    encoding = manifest.boundary_encoding or ""
    lines = ["## Exported splits", ""]
    if not splits:
        return [*lines, "No split was exported."]
    for s in splits:
        lines += [
            f"### `{s.dir}`: CUI rank {s.cui_rank or '?'}, cut after `{s.node or '?'}`",
            "",
        ]
        lines.append(
            f"- Module `{s.module or '?'}`, cut index {_or(s.index)}, CUI {md.sig(s.cui, 4)} "
            f"(log10 {md.sig(s.log10_cui, 4)}), head FLOPs share {md.pct(s.head_flops_share)}"
        )
        boundary = _boundary_line(s, encoding)
        if boundary is not None:
            lines.append(boundary)
        checks = _checks(s, encoding)
        if not checks:
            lines.append("- Verification: not run")
        for c in checks:
            metrics = ", ".join(f"{k} {md.sig(c.metrics[k], 6)}" for k in _METRICS if k in c.metrics)
            lines.append(
                f"- Equivalence `{c.name}`{f' (against the {c.reference})' if c.reference else ''}: "
                f"**{_verdict(c.passed)}**, {metrics or 'no metrics'}; {_gate_text(c)}"
            )
            lines += [f"  - failed: {f}" for f in c.failures]
            lines.append(f"- Task `{c.name}`: {_task_text(c.task)}")
        lines.append("")
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def _or(v: object) -> str:
    return "?" if v is None else str(v)


def _spearman_sentence(manifest: Manifest, metric: str) -> str:
    """The plain statement of Spearman(CUI, measured task value) and whether the CUI order held."""
    ver = manifest.verification
    rho = ver.cui_vs_task_spearman
    encoding = manifest.boundary_encoding or ""
    n = len(manifest.splits)
    if rho is not None:
        held = ver.cui_order_held
        if held is None:
            held = rho > 0
        verdict = (
            f"the CUI order held: splits with a higher CUI measured a better {metric}"
            if held
            else f"the CUI order did not hold: a higher CUI did not go with a better measured {metric}"
        )
        text = f"Spearman correlation between CUI and measured {metric} over {n} splits: {rho:.3f}, so {verdict}."
        if ver.too_few_splits:
            text += (
                f" But {n} splits are too few to conclude anything about the CUI order: "
                "`isplit-export study` measures every candidate."
            )
        return text
    lead = f"Spearman correlation between CUI and measured {metric}: not applicable: "
    if encoding in ("fp32", "fp16"):
        how = "lossless" if encoding == "fp32" else "(near-)lossless"
        return (
            lead
            + f"the {encoding} boundary is {how} so all splits measure the same; the CUI order is not tested."
        )
    if n < 2:
        return lead + "fewer than two splits were exported; the CUI order is not tested."
    return (
        lead + "all splits measured the same value, so the CUI order is neither confirmed nor contradicted."
    )


def cui_order_section(manifest: Manifest) -> list[str]:
    splits = manifest.splits
    encoding = manifest.boundary_encoding or ""
    rows = []
    metric = "accuracy"
    for s in splits:
        checks = _checks(s, encoding)
        task = checks[0].task if checks else None
        if task is not None and task.metric:
            metric = task.metric
        rows.append(
            [
                s.cui_rank or "-",
                f"`{s.node or '?'}`",
                md.sig(s.cui, 4),
                md.pct(s.probe_value) + _ci_pct(s.probe_ci95),
                md.pct(task.value if task else None) + _ci_pct(task.ci95 if task else None),
                md.pct(task.full_model if task else None),
                md.pp(task.drop if task else None),
            ]
        )
    lines = ["## Does the CUI order hold?", "", _spearman_sentence(manifest, metric)]
    probed = any(s.probe_value is not None or s.probe_ci95 is not None for s in splits)
    header = [
        "CUI rank",
        "node",
        "CUI",
        f"probe {metric} [95% CI]",
        f"measured {metric} [95% CI]",
        "full model",
        "drop",
    ]
    if not probed:  # no bottleneck: no probe column
        header, rows = [h for h in header if not h.startswith("probe")], [r[:3] + r[4:] for r in rows]
    if probed:
        lines += [
            "",
            "The probe is the split's untrained linear code at the same budget (patch PCA, int8, the real "
            "tail; `docs/probe.md`), on the same held-out images: a training-free prediction of the measured "
            "value, next to CUI's. Every bottleneck starts from it and keeps a trained checkpoint only when "
            "its validation slice says it is better.",
        ]
    if rows:
        lines += ["", *md.table(header, rows)]
    return lines


def _ci_pct(ci: Sequence[float | None] | None) -> str:
    """`` [lo, hi]`` in percent, or nothing without an interval."""
    if ci is None or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return ""
    return f" [{100 * float(ci[0]):.1f}, {100 * float(ci[1]):.1f}]"
