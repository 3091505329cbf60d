"""Render the bundle's human summary, ``report.md``, from its manifest and ranking.

Pure string formatting: no file access, no clock, so the same manifest and ranking always give the
same text. Every key beyond ``splits`` is optional: a section whose data is missing is left out (or
says so) instead of failing, so the report also renders for partial or older manifests. A split's
``verification`` block is the one the exporter writes (``checks: {name: {metrics, gate, task}}``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from isplit_export.bundle import markdown as md

RANKING_ROWS = 10
"""The ranking table lists at least this many ranked candidates (more when ``top`` is larger)."""

_GATE_LIMITS = (
    ("min_top1_agreement", "top-1 agreement", ">="),
    ("max_abs_rel", "max_abs_rel", "<="),
    ("min_cosine", "cosine", ">="),
)
_METRICS = ("max_abs", "max_abs_rel", "max_rel", "cosine", "top1_agreement")


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


# --------------------------------------------------------------------------------------------------
# sections


def _header(manifest: Mapping[str, Any], ranking: Mapping[str, Any]) -> list[str]:
    model = md.as_dict(manifest.get("model"))
    target = md.as_dict(manifest.get("target"))
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
    inp = md.as_dict(manifest.get("input"))
    if inp:
        lines.append(
            f"- Input: `{inp.get('name', 'input')}` {md.dims(inp.get('shape'))} {inp.get('dtype', '')} "
            f"{inp.get('layout', '')}".rstrip()
            + (f", opset {manifest['opset']}" if manifest.get("opset") is not None else "")
        )
    rk = {
        **md.as_dict(manifest.get("ranking")),
        **{k: ranking[k] for k in ("images", "classes", "score") if k in ranking},
    }
    if rk:
        classes = rk.get("classes")
        subset = ", ".join(map(str, classes)) if classes else "all classes"
        lines.append(
            f"- Ranking: {rk.get('images', '?')} images, Grad-CAM target `{rk.get('score', '?')}`, {subset}"
            + (f" (`{rk['file']}`)" if rk.get("file") else "")
        )
    calib = md.as_dict(manifest.get("calibration"))
    if calib:
        lines.append(
            f"- Calibration / verification images: {calib.get('count', '?')} from {calib.get('source', '?')}"
        )
    tool = md.as_dict(manifest.get("tool"))
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
    candidates = [md.as_dict(c) for c in md.as_list(ranking.get("candidates"))]
    ranked = [c for c in candidates if isinstance(c.get("rank"), int) and not isinstance(c.get("rank"), bool)]
    ranked.sort(key=lambda c: (int(c["rank"]), md.num(c.get("index")) or 0))
    lines = ["## Ranking", ""]
    if not candidates:
        return [*lines, "No ranking data."]
    top = md.num(ranking.get("top")) or md.num(md.as_dict(manifest.get("ranking")).get("top")) or 0
    limit = max(RANKING_ROWS, int(top))
    exported = {
        (s.get("index"), s.get("node")): str(s.get("dir", "")).rsplit("/", 1)[-1]
        for s in map(md.as_dict, md.as_list(manifest.get("splits")))
    }
    lines.append(
        f"{len(candidates)} valid cut points, {len(ranked)} local maxima of the CUI curve (candidates), ranked by CUI."
    )
    lines.append("")
    boot = md.as_dict(ranking.get("bootstrap"))
    rank_of = {c.get("index"): c.get("rank") for c in ranked}
    rows = []
    for c in ranked[:limit]:
        row = [
            c.get("rank"),
            c.get("index", "-"),
            f"`{c.get('node', '?')}`",
            f"`{c.get('module', '?')}`",
            md.dims(c.get("shape")) + (f" {c['layout']}" if c.get("layout") else ""),
            md.kib(c.get("boundary_bytes")),
            md.pct(c.get("head_flops_share")),
            md.sig(c.get("cui"), 4),
            md.sig(c.get("log10_cui"), 4),
        ]
        if boot:
            ci = md.as_list(c.get("cui_ci"))
            ties = [str(rank_of.get(i, "?")) for i in md.as_list(c.get("ties"))]
            row += [
                f"[{md.sig(ci[0], 3)}, {md.sig(ci[1], 3)}]" if len(ci) == 2 else "-",
                md.pct(c.get("rank_stability"), 0),
                ", ".join(ties) or "-",
            ]
        rows.append([*row, exported.get((c.get("index"), c.get("node")), "")])
    header = ["rank", "cut", "node", "module", "shape", "boundary KiB", "head FLOPs", "CUI", "log10 CUI"]
    if boot:
        header += ["CUI 95 % CI", "stable", "tied with ranks"]
    lines += md.table([*header, "exported"], rows)
    if len(ranked) > limit:
        lines += ["", f"{len(ranked) - limit} more candidates in `ranking.json`."]
    if boot:
        lines += [
            "",
            f"Intervals and stability from a Poisson bootstrap of {boot.get('replicates')} replicates over the "
            f"images: *stable* is how often a candidate keeps its rank; candidates tied with each other swap "
            f"order in more than {md.pct(boot.get('flip_threshold'), 0)} of the replicates and cannot be told "
            "apart with these images.",
        ]
    return lines


def _cost(ranking: Mapping[str, Any]) -> list[str]:
    """The cost section (``ranking["cost"]``, written when the export was given ``--link``) and tradeoff.png."""
    cost = md.as_dict(ranking.get("cost"))
    if not cost or not ranking.get("candidates"):
        return []
    from isplit_export.bundle.planning import cost_table_rows

    lk, dev, srv = (
        md.as_dict(cost.get("link")),
        md.as_dict(cost.get("device")),
        md.as_dict(cost.get("server")),
    )
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
        *md.table(header, rows),
        "",
        "Assumptions: " + "; ".join(str(a) for a in md.as_list(cost.get("assumptions"))) + ".",
    ]
    constraints = {k: v for k, v in md.as_dict(cost.get("constraints")).items() if v is not None}
    if constraints:
        lines.append("Constraints: " + ", ".join(f"`{k}` {v}" for k, v in constraints.items()) + ".")
    if cost.get("note"):
        lines.append(f"Note: {cost['note']}.")
    lines += ["", "![CUI vs latency](tradeoff.png)"]
    return lines


def _splits(manifest: Mapping[str, Any]) -> list[str]:
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


def _cui_order(manifest: Mapping[str, Any]) -> list[str]:
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


def _latency(manifest: Mapping[str, Any]) -> list[str]:
    lat = md.as_dict(md.as_dict(manifest.get("run")).get("latency_ms"))
    int8 = any("head_int8_ms" in md.as_dict(v) for v in lat.values())
    rows = []
    for key in sorted(lat):
        v = md.as_dict(lat[key])
        if not v:
            continue
        head, tail, full = md.num(v.get("head_ms")), md.num(v.get("tail_ms")), md.num(v.get("full_ms"))
        both = head + tail if head is not None and tail is not None else None
        ratio = md.num(v.get("ratio"))
        if ratio is None and both is not None and full:
            ratio = both / full
        row = [f"`{key}`", *(md.ms(x) for x in (head, tail, both, full)), md.ms(ratio)]
        if int8:
            qh, qt = md.num(v.get("head_int8_ms")), md.num(v.get("tail_int8_ms"))
            row += [md.ms(qh), md.ms(qt), _speedup(head, qh), _speedup(tail, qt)]
        rows.append(row)
    if not rows:
        return []
    header = ["split", "head ms", "tail ms", "head + tail ms", "full ms", "ratio"]
    note = ""
    if int8:
        header += ["int8 head ms", "int8 tail ms", "int8 head speed-up", "int8 tail speed-up"]
        note = (
            " INT8 columns: the QDQ pair (int8 weights and activations), speed-up = fp32 ms / int8 ms. The INT8"
            " pairs were verified and timed in onnxruntime's exact integer mode: set the session config entry"
            ' `session.x64quantprecision` to "1" in your own sessions too, or an x86 CPU without VNNI gives'
            " other results (its u8 x s8 kernels saturate; docs/int8.md)."
        )
    return [
        "## Latency",
        "",
        "Median onnxruntime latency at batch 1 (ms, one thread, runs interleaved) on the machine that built "
        "the bundle; ratio = (head + tail) / full, the cost of splitting." + note,
        "",
        *md.table(header, rows),
    ]


def _speedup(fp32: float | None, int8: float | None) -> str:
    return f"{fp32 / int8:.2f}x" if fp32 is not None and int8 else "-"


def _tensorrt(manifest: Mapping[str, Any]) -> list[str]:
    from isplit_export.targets.engine_build import engine_build_lines

    plans = []
    for s in map(md.as_dict, md.as_list(manifest.get("splits"))):
        files = [str(f) for f in md.as_dict(s.get("files")).values() if isinstance(f, str)]
        script = next((f for f in sorted(files) if f.endswith("build_engines.sh")), None)
        if script is None:
            continue
        plan = next((f for f in sorted(files) if f.endswith("engine_plan.json")), None)
        plans.append(f"- `{script}`" + (f" (plan: `{plan}`)" if plan else ""))
        plans += engine_build_lines(
            md.as_dict(md.as_dict(manifest.get("engine_plans")).get(str(s.get("dir"))))
        )
    if not plans:
        return []
    target = md.as_dict(manifest.get("target"))
    versions = ", ".join(
        f"{label} {target[k]}"
        for k, label in (("jetpack", "jetpack"), ("tensorrt_version", "tensorrt"), ("cuda", "cuda"))
        if target.get(k) is not None
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
    opts = md.as_dict(manifest.get("options"))
    if not opts:
        return []
    lines = ["## Options", "", "| option | value |", "|---|---|"]
    for key, value in opts.items():
        shown = (
            "-" if value is None else (",".join(map(str, value)) if isinstance(value, list) else str(value))
        )
        lines.append(f"| `{key}` | {shown} |")
    return lines


def render_report(manifest: Mapping[str, Any], ranking: Mapping[str, Any]) -> str:
    """The bundle's ``report.md``: header, plots, ranking, splits, CUI order, latency, build plan, re-verify.

    Deterministic for the same inputs; optional keys that are missing only drop their lines.
    """
    manifest, ranking = md.as_dict(manifest), md.as_dict(ranking)
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
    ver = md.as_dict(manifest.get("verification"))
    if isinstance(ver.get("passed"), bool):
        sections[0] += ["", f"**Verification: {'PASS' if ver['passed'] else 'FAIL'}**"]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"
