"""Render the bundle's human summary, ``report.md``, from its manifest and ranking.

Pure string formatting: no file access, no clock, so the same manifest and ranking always give the
same text. The sections read the typed bundle model (:class:`~isplit_export.contract.Manifest`,
:class:`~isplit_export.contract.RankingFile`), so the manifest is validated before a line is written;
an optional block that is missing only drops its lines (or the section says so).
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
from isplit_export.contract import EngineRecipe, Manifest, RankingFile, RankingInfo, unwritten_manifest


def _or(v: object, missing: str = "?") -> str:
    return missing if v is None else str(v)


def _header(manifest: Manifest, ranking: RankingFile | None) -> list[str]:
    model, about = manifest.model, manifest.provenance
    target = about.target
    name = model.name or (ranking.model if ranking else None) or "model"
    weights = model.weights or (ranking.weights if ranking else None) or "?"
    target_name = (target.name if target else None) or "?"
    encoding = manifest.boundary_encoding or "?"
    lines = [
        f"# I-Split export: {name} ({weights}) for {target_name}, {encoding} boundary",
        "",
        "Split points ranked by I-Split's cumulative Grad-CAM importance (CUI; Cunico et al., ICPR 2022),",
        "exported as head/tail ONNX pairs and verified with onnxruntime against the full model.",
        "",
        f"- Model: `{name}`, weights `{weights}`"
        + (f" (sha256 `{model.weights_sha256[:16]}…`)" if model.weights_sha256 else "")
        + (f", {model.num_classes} classes" if model.num_classes is not None else ""),
    ]
    if target is not None:
        desc = f": {target.description}" if target.description else ""
        lines.append(f"- Target: `{target_name}` (backend {_or(target.backend)}){desc}")
    lines.append(f"- Boundary encoding: `{encoding}`")
    inp = about.input
    if inp is not None:
        lines.append(
            f"- Input: `{_or(inp.name, 'input')}` {md.dims(inp.shape or None)} {_or(inp.dtype, '')} "
            f"{_or(inp.layout, '')}".rstrip()
            + (f", opset {about.opset}" if about.opset is not None else "")
        )
    rk = _ranking_line(about.ranking, ranking)
    if rk:
        lines.append(rk)
    if about.has_calibration:
        lines.append(
            f"- Calibration / verification images: {_or(about.calibration_count)} from "
            f"{_or(about.calibration_source)}"
        )
    if about.has_tool:
        lines.append(
            f"- Tool: {_or(about.tool_name, 'isplit-export')} {_or(about.tool_version, '')}".rstrip()
        )
    return lines


def _ranking_line(block: RankingInfo | None, ranking: RankingFile | None) -> str:
    """How the cuts were ranked: ``ranking.json``'s own images, classes and score win over the manifest's."""
    if block is None and ranking is None:
        return ""
    images = ranking.images if ranking is not None else block.images if block is not None else None
    classes = ranking.classes if ranking is not None else block.classes if block is not None else None
    score = ranking.score if ranking is not None else block.score if block is not None else None
    file = block.file if block is not None else None
    subset = ", ".join(map(str, classes)) if classes else "all classes"
    return f"- Ranking: {_or(images)} images, Grad-CAM target `{_or(score)}`, {subset}" + (
        f" (`{file}`)" if file else ""
    )


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


def _options(manifest: Manifest) -> list[str]:
    """The options the bundle was made with (the manifest's ``options`` block), one per line."""
    opts = manifest.options.items()
    if not opts:
        return []
    lines = ["## Options", "", "| option | value |", "|---|---|"]
    for key, value in opts:
        shown = (
            "-" if value is None else (",".join(map(str, value)) if isinstance(value, list) else str(value))
        )
        lines.append(f"| `{key}` | {shown} |")
    return lines


def report_text(
    manifest: Manifest, ranking: RankingFile | None, engine_plans: Mapping[str, EngineRecipe]
) -> str:
    """The bundle's ``report.md``: header, plots, ranking, splits, CUI order, latency, build plan, re-verify.

    Deterministic for the same inputs; ``engine_plans`` are the TensorRT splits' engine builds by
    split folder (the export reads them back through the contract).
    """
    sections = [
        _header(manifest, ranking),
        next_steps_section(manifest),
        _plots(),
        ranking_section(manifest, ranking),
        cost_section(ranking),
        grid_section(manifest.grid_choice),
        splits_section(manifest),
        file_naming_section(manifest),
        cui_order_section(manifest),
        latency_section(manifest),
        tensorrt_section(manifest, engine_plans),
        _options(manifest),
        _reverify(),
    ]
    if manifest.verification.recorded:
        verdict = "PASS" if manifest.verification.passed else "FAIL"
        sections[0] += ["", f"**Verification: {verdict}**"]
    return "\n\n".join("\n".join(s) for s in sections if s) + "\n"


def render_report(manifest: Mapping[str, Any], ranking: Mapping[str, Any]) -> str:
    """:func:`report_text` of the manifest the export built (validated here) and its ranking.

    The export adds its engine builds under the manifest key ``engine_plans`` (never written);
    an empty ``ranking`` renders the sections that need it as "no ranking data".
    """
    data = dict(manifest)
    plans = data.pop("engine_plans", None) or {}
    return report_text(unwritten_manifest(data), RankingFile.from_json(ranking) if ranking else None, plans)
