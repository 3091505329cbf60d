"""Render the bundle's human summary, ``report.md``, from its manifest and ranking.

Pure string formatting: no file access, no clock, so the same manifest and ranking always give the
same text. Every key beyond ``splits`` is optional: a section whose data is missing is left out (or
says so) instead of failing, so the report also renders for partial or older manifests. Both forms
of a split's ``verification`` block are understood: the documented one (``equivalence`` + ``task``)
and the per-check one the exporter writes (``checks: {name: {metrics, gate, task}}``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

RANKING_ROWS = 10
"""The ranking table lists at least this many ranked candidates (more when ``top`` is larger)."""

_GATE_LIMITS = (
    ("min_top1_agreement", "top-1 agreement", ">="),
    ("max_abs_rel", "max_abs_rel", "<="),
    ("min_cosine", "cosine", ">="),
)
_METRICS = ("max_abs", "max_abs_rel", "max_rel", "cosine", "top1_agreement")


# --------------------------------------------------------------------------------------------------
# formatting helpers


def _num(v: Any) -> float | None:
    """``v`` as a finite float, else None (bools are not numbers here)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    f = float(v)
    return f if math.isfinite(f) else None


def _g(v: Any, digits: int = 3) -> str:
    f = _num(v)
    return "-" if f is None else f"{f:.{digits}g}"


def _pct(v: Any, digits: int = 1) -> str:
    f = _num(v)
    return "-" if f is None else f"{100 * f:.{digits}f} %"


def _pp(v: Any) -> str:
    """A difference of two fractions in percentage points."""
    f = _num(v)
    return "-" if f is None else f"{100 * f:.1f} pp"


def _kib(v: Any) -> str:
    f = _num(v)
    return "-" if f is None else f"{f / 1024:.1f}"


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def _shape(v: Any) -> str:
    if isinstance(v, Sequence) and not isinstance(v, str):
        return "x".join(str(d) for d in v)
    return "-" if v is None else str(v)


def _cell(v: Any) -> str:
    """A Markdown table cell: pipes escaped, newlines flattened."""
    return str(v).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _dict(v: Any) -> Mapping[str, Any]:
    return v if isinstance(v, Mapping) else {}


def _list(v: Any) -> list[Any]:
    return list(v) if isinstance(v, Sequence) and not isinstance(v, str) else []


# --------------------------------------------------------------------------------------------------
# a split's verification, normalised


@dataclass
class _Check:
    """One verified pair of a split (the exported pair, its INT8 QDQ twin...)."""

    name: str
    metrics: dict[str, Any] = field(default_factory=dict)
    gate: dict[str, Any] = field(default_factory=dict)
    passed: bool | None = None
    failures: list[str] = field(default_factory=list)
    task: dict[str, Any] = field(default_factory=dict)


def _checks(split: Mapping[str, Any], encoding: str) -> list[_Check]:
    """The split's checks, the boundary encoding's own first (both manifest forms)."""
    ver = _dict(split.get("verification"))
    out: list[_Check] = []
    checks = _dict(ver.get("checks"))
    for name in sorted(checks, key=lambda n: (n != encoding, str(n))):
        c = _dict(checks[name])
        gate = dict(_dict(c.get("gate")))
        passed = gate.get("passed", c.get("passed"))
        out.append(
            _Check(
                name=str(name),
                metrics=dict(_dict(c.get("metrics"))),
                gate=gate,
                passed=passed if isinstance(passed, bool) else None,
                failures=[str(f) for f in _list(gate.get("failures"))],
                task=dict(_dict(c.get("task"))),
            )
        )
    if not out and ("equivalence" in ver or "task" in ver):
        eq = _dict(ver.get("equivalence"))
        gate = dict(_dict(eq.get("gate")))
        passed = eq.get("passed", gate.get("passed"))
        out.append(
            _Check(
                name=encoding,
                metrics={k: v for k, v in eq.items() if k not in ("gate", "passed", "failures")},
                gate=gate,
                passed=passed if isinstance(passed, bool) else None,
                failures=[str(f) for f in _list(eq.get("failures", gate.get("failures")))],
                task=dict(_dict(ver.get("task"))),
            )
        )
    return out


def _verdict(passed: bool | None) -> str:
    return "PASS" if passed is True else "FAIL" if passed is False else "not run"


def _gate_text(gate: Mapping[str, Any]) -> str:
    parts = [
        f"{label} {op} {_g(gate[key], 6)}"
        for key, label, op in _GATE_LIMITS
        if _num(gate.get(key)) is not None
    ]
    name = gate.get("name")
    if not parts:
        return f"gate {name}" if name else "no gate recorded"
    return (f"gate {name}: " if name else "gate: ") + ", ".join(parts)


def _task_text(task: Mapping[str, Any]) -> str:
    if not task:
        return "not measured"
    metric = task.get("metric", "task metric")
    text = f"{metric} {_pct(task.get('value'))}"
    extra = []
    if _num(task.get("full_model")) is not None:
        extra.append(f"full model {_pct(task.get('full_model'))}")
    if _num(task.get("drop")) is not None:
        extra.append(f"drop {_pp(task.get('drop'))}")
    ci = _list(task.get("ci95"))
    if len(ci) == 2:  # a learned bottleneck: measured on held-out images
        text += f", 95 % CI [{_pct(ci[0])}, {_pct(ci[1])}] on {task.get('images', '?')} held-out images"
    return text + (f" ({', '.join(extra)})" if extra else "")


# --------------------------------------------------------------------------------------------------
# sections


def _header(manifest: Mapping[str, Any], ranking: Mapping[str, Any]) -> list[str]:
    model = _dict(manifest.get("model"))
    target = _dict(manifest.get("target"))
    name = model.get("name") or ranking.get("model") or "model"
    weights = model.get("weights") or ranking.get("weights") or "?"
    target_name = target.get("name") or "?"
    encoding = manifest.get("boundary_encoding") or "?"
    lines = [
        f"# I-Split export: {name} ({weights}) for {target_name}, {encoding} boundary",
        "",
        "Split points ranked by I-Split's cumulative Grad-CAM importance (CUI; Cunico et al., ICPR 2022),",
        "exported as head/tail ONNX pairs and verified with onnxruntime against the full model.",
        "",
        f"- Model: `{name}`, weights `{weights}`"
        + (f" (sha256 `{str(model['weights_sha256'])[:16]}…`)" if model.get("weights_sha256") else "")
        + (f", {model['num_classes']} classes" if model.get("num_classes") is not None else ""),
    ]
    if target:
        desc = f": {target['description']}" if target.get("description") else ""
        lines.append(f"- Target: `{target_name}` (backend {target.get('backend', '?')}){desc}")
    lines.append(f"- Boundary encoding: `{encoding}`")
    inp = _dict(manifest.get("input"))
    if inp:
        lines.append(
            f"- Input: `{inp.get('name', 'input')}` {_shape(inp.get('shape'))} {inp.get('dtype', '')} "
            f"{inp.get('layout', '')}".rstrip()
            + (f", opset {manifest['opset']}" if manifest.get("opset") is not None else "")
        )
    rk = {
        **_dict(manifest.get("ranking")),
        **{k: ranking[k] for k in ("images", "classes", "score") if k in ranking},
    }
    if rk:
        classes = rk.get("classes")
        subset = ", ".join(map(str, classes)) if classes else "all classes"
        lines.append(
            f"- Ranking: {rk.get('images', '?')} images, Grad-CAM target `{rk.get('score', '?')}`, {subset}"
            + (f" (`{rk['file']}`)" if rk.get("file") else "")
        )
    calib = _dict(manifest.get("calibration"))
    if calib:
        lines.append(
            f"- Calibration / verification images: {calib.get('count', '?')} from {calib.get('source', '?')}"
        )
    tool = _dict(manifest.get("tool"))
    if tool:
        lines.append(f"- Tool: {tool.get('name', 'isplit-export')} {tool.get('version', '')}".rstrip())
    return lines


def _plots() -> list[str]:
    return [
        "## CUI and layer size",
        "",
        "log10 CUI per cut point in network order; the stars are the local maxima (the candidates), numbered by rank.",
        "",
        "![CUI](cui.png)",
        "",
        "CDE baseline: boundary bytes per cut (fp32, batch 1), against the size of the input.",
        "",
        "![CDE](cde.png)",
    ]


def _ranking_table(manifest: Mapping[str, Any], ranking: Mapping[str, Any]) -> list[str]:
    candidates = [_dict(c) for c in _list(ranking.get("candidates"))]
    ranked = [c for c in candidates if isinstance(c.get("rank"), int) and not isinstance(c.get("rank"), bool)]
    ranked.sort(key=lambda c: (int(c["rank"]), _num(c.get("index")) or 0))
    lines = ["## Ranking", ""]
    if not candidates:
        return [*lines, "No ranking data."]
    top = _num(ranking.get("top")) or _num(_dict(manifest.get("ranking")).get("top")) or 0
    limit = max(RANKING_ROWS, int(top))
    exported = {
        (s.get("index"), s.get("node")): str(s.get("dir", "")).rsplit("/", 1)[-1]
        for s in map(_dict, _list(manifest.get("splits")))
    }
    lines.append(
        f"{len(candidates)} valid cut points, {len(ranked)} local maxima of the CUI curve (candidates), ranked by CUI."
    )
    lines.append("")
    boot = _dict(ranking.get("bootstrap"))
    rank_of = {c.get("index"): c.get("rank") for c in ranked}
    rows = []
    for c in ranked[:limit]:
        row = [
            c.get("rank"),
            c.get("index", "-"),
            f"`{c.get('node', '?')}`",
            f"`{c.get('module', '?')}`",
            _shape(c.get("shape")) + (f" {c['layout']}" if c.get("layout") else ""),
            _kib(c.get("boundary_bytes")),
            _pct(c.get("head_flops_share")),
            _g(c.get("cui"), 4),
            _g(c.get("log10_cui"), 4),
        ]
        if boot:
            ci = _list(c.get("cui_ci"))
            ties = [str(rank_of.get(i, "?")) for i in _list(c.get("ties"))]
            row += [
                f"[{_g(ci[0], 3)}, {_g(ci[1], 3)}]" if len(ci) == 2 else "-",
                _pct(c.get("rank_stability"), 0),
                ", ".join(ties) or "-",
            ]
        rows.append([*row, exported.get((c.get("index"), c.get("node")), "")])
    header = ["rank", "cut", "node", "module", "shape", "boundary KiB", "head FLOPs", "CUI", "log10 CUI"]
    if boot:
        header += ["CUI 95 % CI", "stable", "tied with ranks"]
    lines += _table([*header, "exported"], rows)
    if len(ranked) > limit:
        lines += ["", f"{len(ranked) - limit} more candidates in `ranking.json`."]
    if boot:
        lines += [
            "",
            f"Intervals and stability from a Poisson bootstrap of {boot.get('replicates')} replicates over the "
            f"images: *stable* is how often a candidate keeps its rank; candidates tied with each other swap "
            f"order in more than {_pct(boot.get('flip_threshold'), 0)} of the replicates and cannot be told "
            "apart with these images.",
        ]
    return lines


def _cost(ranking: Mapping[str, Any]) -> list[str]:
    """The cost section (``ranking["cost"]``, written when the export was given ``--link``) and tradeoff.png."""
    cost = _dict(ranking.get("cost"))
    if not cost or not ranking.get("candidates"):
        return []
    from isplit_export.bundle.planning import cost_table_rows

    lk, dev, srv = _dict(cost.get("link")), _dict(cost.get("device")), _dict(cost.get("server"))
    header, rows = cost_table_rows(ranking)
    lines = [
        "## Cost: device, link and server",
        "",
        f"Objective `{cost.get('objective')}`; link `{lk.get('name')}` ({lk.get('mbit_s')} Mbit/s up, RTT "
        f"{lk.get('rtt_ms')} ms; {lk.get('source')}); head on `{dev.get('target')}` {dev.get('unit')} "
        f"{dev.get('precision')} ({dev.get('gflops')} GFLOP/s effective), tail on `{srv.get('target')}` "
        f"{srv.get('unit')} {srv.get('precision')} ({srv.get('gflops')} GFLOP/s); boundary `{cost.get('encoding')}`.",
        "Every candidate (local maximum of the CUI) and every selected cut (`sel` #N, in export order), then the two "
        "Neurosurgeon baselines. Milliseconds per image at batch 1; estimated unless the last column says measured.",
        "",
        *_table(header, rows),
        "",
        "Assumptions: " + "; ".join(str(a) for a in _list(cost.get("assumptions"))) + ".",
    ]
    constraints = {k: v for k, v in _dict(cost.get("constraints")).items() if v is not None}
    if constraints:
        lines.append("Constraints: " + ", ".join(f"`{k}` {v}" for k, v in constraints.items()) + ".")
    if cost.get("note"):
        lines.append(f"Note: {cost['note']}.")
    lines += ["", "![CUI vs latency](tradeoff.png)"]
    return lines


def _splits(manifest: Mapping[str, Any]) -> list[str]:
    splits = [_dict(s) for s in _list(manifest.get("splits"))]
    encoding = str(manifest.get("boundary_encoding") or "")
    lines = ["## Exported splits", ""]
    if not splits:
        return [*lines, "No split was exported."]
    for s in splits:
        sdir = s.get("dir") or f"split {s.get('rank', '?')}"
        lines += [f"### `{sdir}`: CUI rank {s.get('cui_rank', s.get('rank', '?'))}, cut after `{s.get('node', '?')}`", ""]
        lines.append(
            f"- Module `{s.get('module', '?')}`, cut index {s.get('index', '?')}, CUI {_g(s.get('cui'), 4)} "
            f"(log10 {_g(s.get('log10_cui'), 4)}), head FLOPs share {_pct(s.get('head_flops_share'))}"
        )
        b = _dict(s.get("boundary"))
        if b:
            enc = b.get("encoding", encoding or "?")
            text = f"- Boundary: `{enc}` ({b.get('dtype', '?')}), shape {_shape(b.get('shape'))}"
            nbytes, fp32 = _num(b.get("bytes_per_image")), _num(b.get("fp32_bytes_per_image"))
            if nbytes is not None:
                text += f", {int(nbytes)} bytes per image ({nbytes / 1024:.1f} KiB)"
                if fp32:
                    text += f", {100 * nbytes / fp32:.1f} % of fp32 ({int(fp32)} bytes)"
            if _num(b.get("scale")) is not None:
                text += f"; scale {_g(b.get('scale'), 6)}, zero point {b.get('zero_point')}"
            lines.append(text)
        checks = _checks(s, encoding)
        if not checks:
            lines.append("- Verification: not run")
        for c in checks:
            m = c.metrics
            metrics = ", ".join(f"{k} {_g(m[k], 6)}" for k in _METRICS if k in m)
            lines.append(
                f"- Equivalence `{c.name}`: **{_verdict(c.passed)}**, {metrics or 'no metrics'}; {_gate_text(c.gate)}"
            )
            lines += [f"  - failed: {f}" for f in c.failures]
            lines.append(f"- Task `{c.name}`: {_task_text(c.task)}")
        lines.append("")
    while lines and lines[-1] == "":
        lines.pop()
    return lines


def _spearman_sentence(manifest: Mapping[str, Any], metric: str) -> str:
    """The plain statement of Spearman(CUI, measured task value) and whether the CUI order held."""
    ver = _dict(manifest.get("verification"))
    rho = _num(ver.get("cui_vs_task_spearman"))
    encoding = str(manifest.get("boundary_encoding") or "")
    n = len(_list(manifest.get("splits")))
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
            text += (f" But {n} splits are too few to conclude anything about the CUI order: "
                     "`isplit-export study` measures every candidate.")  # fmt: skip
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


def _cui_order(manifest: Mapping[str, Any]) -> list[str]:
    splits = [_dict(s) for s in _list(manifest.get("splits"))]
    encoding = str(manifest.get("boundary_encoding") or "")
    rows = []
    metric = "accuracy"
    for s in splits:
        checks = _checks(s, encoding)
        task = checks[0].task if checks else {}
        if task.get("metric"):
            metric = str(task["metric"])
        probe = _dict(_dict(s.get("bottleneck")).get("probe"))
        rows.append(
            [s.get("cui_rank", s.get("rank", "-")), f"`{s.get('node', '?')}`", _g(s.get("cui"), 4),
             _pct(probe.get("value")) + _ci_pct(probe.get("ci95")), _pct(task.get("value")) + _ci_pct(task.get("ci95")),
             _pct(task.get("full_model")), _pp(task.get("drop"))]
        )  # fmt: skip
    lines = ["## Does the CUI order hold?", "", _spearman_sentence(manifest, metric)]
    probed = any(_dict(_dict(s.get("bottleneck")).get("probe")) for s in splits)
    header = ["CUI rank", "node", "CUI", f"probe {metric} [95% CI]", f"measured {metric} [95% CI]", "full model", "drop"]
    if not probed:  # no bottleneck: no probe column
        header, rows = [h for h in header if not h.startswith("probe")], [r[:3] + r[4:] for r in rows]
    if probed:
        lines += ["", "The probe is the split's untrained linear code at the same budget (patch PCA, int8, the real "
                  "tail; `docs/probe.md`), on the same held-out images: a training-free prediction of the measured "
                  "value, next to CUI's. Every bottleneck starts from it and keeps a trained checkpoint only when "
                  "its validation slice says it is better."]  # fmt: skip
    if rows:
        lines += ["", *_table(header, rows)]
    return lines


def _ci_pct(ci: Any) -> str:
    """`` [lo, hi]`` in percent, or nothing without an interval."""
    if not isinstance(ci, list | tuple) or len(ci) != 2 or ci[0] is None or ci[1] is None:
        return ""
    return f" [{100 * float(ci[0]):.1f}, {100 * float(ci[1]):.1f}]"


def _latency(manifest: Mapping[str, Any]) -> list[str]:
    lat = _dict(_dict(manifest.get("run")).get("latency_ms"))
    int8 = any("head_int8_ms" in _dict(v) for v in lat.values())
    rows = []
    for key in sorted(lat):
        v = _dict(lat[key])
        if not v:
            continue
        head, tail, full = _num(v.get("head_ms")), _num(v.get("tail_ms")), _num(v.get("full_ms"))
        both = head + tail if head is not None and tail is not None else None
        ratio = _num(v.get("ratio"))
        if ratio is None and both is not None and full:
            ratio = both / full
        row = [f"`{key}`", *(_ms(x) for x in (head, tail, both, full)), _ms(ratio)]
        if int8:
            qh, qt = _num(v.get("head_int8_ms")), _num(v.get("tail_int8_ms"))
            row += [_ms(qh), _ms(qt), _speedup(head, qh), _speedup(tail, qt)]
        rows.append(row)
    if not rows:
        return []
    header = ["split", "head ms", "tail ms", "head + tail ms", "full ms", "ratio"]
    note = ""
    if int8:
        header += ["int8 head ms", "int8 tail ms", "int8 head speed-up", "int8 tail speed-up"]
        note = " INT8 columns: the QDQ pair (int8 weights and activations), speed-up = fp32 ms / int8 ms."
    return [
        "## Latency",
        "",
        "Median onnxruntime latency at batch 1 (ms, one thread, runs interleaved) on the machine that built "
        "the bundle; ratio = (head + tail) / full, the cost of splitting." + note,
        "",
        *_table(header, rows),
    ]


def _speedup(fp32: float | None, int8: float | None) -> str:
    return f"{fp32 / int8:.2f}x" if fp32 is not None and int8 else "-"


def _tensorrt(manifest: Mapping[str, Any]) -> list[str]:
    plans = []
    for s in map(_dict, _list(manifest.get("splits"))):
        files = [str(f) for f in _dict(s.get("files")).values() if isinstance(f, str)]
        script = next((f for f in sorted(files) if f.endswith("build_engines.sh")), None)
        if script is None:
            continue
        plan = next((f for f in sorted(files) if f.endswith("engine_plan.json")), None)
        plans.append(f"- `{script}`" + (f" (plan: `{plan}`)" if plan else ""))
    if not plans:
        return []
    target = _dict(manifest.get("target"))
    versions = ", ".join(
        f"{k} {target[k]}" for k in ("jetpack", "tensorrt", "cuda") if target.get(k) is not None
    )
    return [
        "## TensorRT build plan",
        "",
        "Engines are not portable across GPUs or TensorRT versions: build them on the device"
        + (f" ({target.get('name')}: {versions})" if versions else "")
        + ", with the trtexec script of each split or `isplit-export build-engines <bundle>`, "
        "then check them with `isplit-export verify <bundle> --backend tensorrt`.",
        "",
        *plans,
    ]


def _reverify() -> list[str]:
    return [
        "## How to re-verify",
        "",
        "```sh",
        "isplit-export verify <bundle>",
        "```",
        "",
        "re-hashes every file listed in `manifest.json` (and this report) and re-runs each split's golden",
        "inputs through its head and tail with onnxruntime, without PyTorch; the exit code says whether",
        "the gates passed.",
    ]


def _options(manifest: Mapping[str, Any]) -> list[str]:
    """The options the bundle was made with (the manifest's ``options`` block), one per line."""
    opts = _dict(manifest.get("options"))
    if not opts:
        return []
    lines = ["## Options", "", "| option | value |", "|---|---|"]
    for key, value in opts.items():
        shown = "-" if value is None else (",".join(map(str, value)) if isinstance(value, list) else str(value))
        lines.append(f"| `{key}` | {shown} |")
    return lines


def render_report(manifest: Mapping[str, Any], ranking: Mapping[str, Any]) -> str:
    """The bundle's ``report.md``: header, plots, ranking, splits, CUI order, latency, build plan, re-verify.

    Deterministic for the same inputs; optional keys that are missing only drop their lines.
    """
    manifest, ranking = _dict(manifest), _dict(ranking)
    sections = [
        _header(manifest, ranking),
        _plots(),
        _ranking_table(manifest, ranking),
        _cost(ranking),
        _splits(manifest),
        _cui_order(manifest),
        _latency(manifest),
        _tensorrt(manifest),
        _options(manifest),
        _reverify(),
    ]
    ver = _dict(manifest.get("verification"))
    if isinstance(ver.get("passed"), bool):
        sections[0] += ["", f"**Verification: {'PASS' if ver['passed'] else 'FAIL'}**"]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"
