"""Render the bundle's human summary, ``report.md``, from its manifest and ranking.

Pure string formatting: no file access, no clock, so the same manifest and ranking always give the
same text. Every key beyond ``splits`` is optional: a section whose data is missing is left out (or
says so) instead of failing, so the report also renders for partial or older manifests.
The sections live by topic: ``report_ranking`` (ranking, cost), ``report_splits`` (each split, the
CUI order), ``report_runtime`` (latency, TensorRT build plan); the header, plots, options and
re-verify sections are here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from isplit_export.bundle import markdown as md
from isplit_export.bundle.grid_export import report_section as grid_section
from isplit_export.bundle.next_steps import file_naming_section, next_steps_section
from isplit_export.bundle.report_ranking import cost_section, ranking_section
from isplit_export.bundle.report_runtime import latency_section, tensorrt_section
from isplit_export.bundle.report_splits import cui_order_section, splits_section


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
        next_steps_section(manifest),
        _plots(),
        ranking_section(manifest, ranking),
        cost_section(ranking),
        grid_section(manifest),
        splits_section(manifest),
        file_naming_section(manifest),
        cui_order_section(manifest),
        latency_section(manifest),
        tensorrt_section(manifest),
        _options(manifest),
        _reverify(),
    ]
    ver = md.as_dict(manifest.get("verification"))
    if isinstance(ver.get("passed"), bool):
        sections[0] += ["", f"**Verification: {'PASS' if ver['passed'] else 'FAIL'}**"]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"
