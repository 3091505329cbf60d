"""The report's sections per exported split: each split's boundary, equivalence and task checks, then
whether the CUI order held over the splits (Spearman of CUI against the measured task value).

A split's ``verification`` block is the one the exporter writes (``checks: {name: {metrics, gate, task}}``);
:func:`_checks` normalises it, so a missing key only drops its text.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from isplit_export.bundle import markdown as md

_GATE_LIMITS = (
    ("min_top1_agreement", "top-1 agreement", ">="),
    ("max_abs_rel", "max_abs_rel", "<="),
    ("min_cosine", "cosine", ">="),
)
_METRICS = ("max_abs", "max_abs_rel", "max_rel", "cosine", "top1_agreement")


@dataclass
class _Check:
    """One verified pair of a split (the exported pair, its INT8 QDQ twin...)."""

    name: str
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    passed: bool | None = None
    failures: list[str] = field(default_factory=list)
    task: dict[str, Any] = field(default_factory=dict)
    reference: str = ""  # what the gate compared against, when not the full model


def _checks(split: Mapping[str, Any], encoding: str) -> list[_Check]:
    """The split's checks, the boundary encoding's own first."""
    ver = md.as_dict(split.get("verification"))
    out: list[_Check] = []
    checks = md.as_dict(ver.get("checks"))
    for name in sorted(checks, key=lambda n: (n != encoding, str(n))):
        c = md.as_dict(checks[name])
        gate = dict(md.as_dict(c.get("gate")))
        passed = gate.get("passed", c.get("passed"))
        out.append(
            _Check(
                name=str(name),
                metrics=dict(md.as_dict(c.get("metrics"))),
                gate=gate,
                passed=passed if isinstance(passed, bool) else None,
                failures=[str(f) for f in md.as_list(gate.get("failures"))],
                task=dict(md.as_dict(c.get("task"))),
                reference=str(c.get("reference") or ""),
            )
        )
    return out


def _verdict(passed: bool | None) -> str:
    return "PASS" if passed is True else "FAIL" if passed is False else "not run"


def _gate_text(gate: Mapping[str, Any]) -> str:
    parts = [
        f"{label} {op} {md.sig(gate[key], 6)}"
        for key, label, op in _GATE_LIMITS
        if md.num(gate.get(key)) is not None
    ]
    name = gate.get("name")
    if not parts:
        return f"gate {name}" if name else "no gate recorded"
    return (f"gate {name}: " if name else "gate: ") + ", ".join(parts)


def _task_text(task: Mapping[str, Any]) -> str:
    if not task:
        return "not measured"
    metric = task.get("metric", "task metric")
    text = f"{metric} {md.pct(task.get('value'))}"
    extra = []
    if md.num(task.get("full_model")) is not None:
        extra.append(f"full model {md.pct(task.get('full_model'))}")
    if md.num(task.get("drop")) is not None:
        extra.append(f"drop {md.pp(task.get('drop'))}")
    ci = md.as_list(task.get("ci95"))
    if len(ci) == 2:  # a learned bottleneck: measured on held-out images
        text += f", 95 % CI [{md.pct(ci[0])}, {md.pct(ci[1])}] on {task.get('images', '?')} held-out images"
    return text + (f" ({', '.join(extra)})" if extra else "")


def splits_section(manifest: Mapping[str, Any]) -> list[str]:
    splits = [md.as_dict(s) for s in md.as_list(manifest.get("splits"))]
    encoding = str(manifest.get("boundary_encoding") or "")
    lines = ["## Exported splits", ""]
    if not splits:
        return [*lines, "No split was exported."]
    for s in splits:
        sdir = s.get("dir") or f"split {s.get('rank', '?')}"
        lines += [
            f"### `{sdir}`: CUI rank {s.get('cui_rank', s.get('rank', '?'))}, cut after `{s.get('node', '?')}`",
            "",
        ]
        lines.append(
            f"- Module `{s.get('module', '?')}`, cut index {s.get('index', '?')}, CUI {md.sig(s.get('cui'), 4)} "
            f"(log10 {md.sig(s.get('log10_cui'), 4)}), head FLOPs share {md.pct(s.get('head_flops_share'))}"
        )
        b = md.as_dict(s.get("boundary"))
        if b:
            enc = b.get("encoding", encoding or "?")
            text = f"- Boundary: `{enc}` ({b.get('dtype', '?')}), shape {md.dims(b.get('shape'))}"
            nbytes, fp32 = md.num(b.get("bytes_per_image")), md.num(b.get("fp32_bytes_per_image"))
            if nbytes is not None:
                text += f", {int(nbytes)} bytes per image ({nbytes / 1024:.1f} KiB)"
                if fp32:
                    text += f", {100 * nbytes / fp32:.1f} % of fp32 ({int(fp32)} bytes)"
            if md.num(b.get("scale")) is not None:
                text += f"; scale {md.sig(b.get('scale'), 6)}, zero point {b.get('zero_point')}"
            lines.append(text)
        checks = _checks(s, encoding)
        if not checks:
            lines.append("- Verification: not run")
        for c in checks:
            m = c.metrics
            metrics = ", ".join(f"{k} {md.sig(m[k], 6)}" for k in _METRICS if k in m)
            lines.append(
                f"- Equivalence `{c.name}`{f' (against the {c.reference})' if c.reference else ''}: "
                f"**{_verdict(c.passed)}**, {metrics or 'no metrics'}; {_gate_text(c.gate)}"
            )
            lines += [f"  - failed: {f}" for f in c.failures]
            lines.append(f"- Task `{c.name}`: {_task_text(c.task)}")
        lines.append("")
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def _spearman_sentence(manifest: Mapping[str, Any], metric: str) -> str:
    """The plain statement of Spearman(CUI, measured task value) and whether the CUI order held."""
    ver = md.as_dict(manifest.get("verification"))
    rho = md.num(ver.get("cui_vs_task_spearman"))
    encoding = str(manifest.get("boundary_encoding") or "")
    n = len(md.as_list(manifest.get("splits")))
    if rho is not None:
        held = ver.get("cui_order_held")
        if not isinstance(held, bool):
            held = rho > 0
        verdict = (
            f"the CUI order held: splits with a higher CUI measured a better {metric}"
            if held
            else f"the CUI order did not hold: a higher CUI did not go with a better measured {metric}"
        )
        text = f"Spearman correlation between CUI and measured {metric} over {n} splits: {rho:.3f}, so {verdict}."
        if ver.get("too_few_splits"):
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


def cui_order_section(manifest: Mapping[str, Any]) -> list[str]:
    splits = [md.as_dict(s) for s in md.as_list(manifest.get("splits"))]
    encoding = str(manifest.get("boundary_encoding") or "")
    rows = []
    metric = "accuracy"
    for s in splits:
        checks = _checks(s, encoding)
        task = checks[0].task if checks else {}
        if task.get("metric"):
            metric = str(task["metric"])
        probe = md.as_dict(md.as_dict(s.get("bottleneck")).get("probe"))
        rows.append(
            [
                s.get("cui_rank", s.get("rank", "-")),
                f"`{s.get('node', '?')}`",
                md.sig(s.get("cui"), 4),
                md.pct(probe.get("value")) + _ci_pct(probe.get("ci95")),
                md.pct(task.get("value")) + _ci_pct(task.get("ci95")),
                md.pct(task.get("full_model")),
                md.pp(task.get("drop")),
            ]
        )
    lines = ["## Does the CUI order hold?", "", _spearman_sentence(manifest, metric)]
    probed = any(md.as_dict(md.as_dict(s.get("bottleneck")).get("probe")) for s in splits)
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


def _ci_pct(ci: Any) -> str:
    """`` [lo, hi]`` in percent, or nothing without an interval."""
    if not isinstance(ci, list | tuple) or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return ""
    return f" [{100 * float(ci[0]):.1f}, {100 * float(ci[1]):.1f}]"
