"""What to do with a bundle next, per target kind, and which file is which (torch-free).

:func:`next_steps` is the one list of commands: the export prints it as its last lines
(:func:`format_next_steps`, with the manifest's sha256) and ``report.md`` carries it
(:func:`next_steps_section`, with ``<bundle>`` and the way to get the sha256: the report is hashed
into the manifest, so it cannot hold the manifest's own hash). :func:`file_naming_section` explains the
bundle's file names from the manifest's ``files`` of each split.

The steps: where the head runs, copy the bundle there, ``verify --expect-sha256`` it, and with a
TensorRT target ``build-engines`` and ``verify --backend tensorrt``; on the server ``serve`` the tails
(or Triton over ``triton/``); then ``run`` the head against them and re-``plan`` with what was measured.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from isplit_export.contract import Manifest
from isplit_export.options_serving import ServeOptions

DOCS = {
    "jetson": "docs/jetson.md",
    "server": "docs/tensorrt.md",
    "cpu": "docs/serving.md",
    "onnx": "docs/serving.md",
}
"""The guide to the device side, per target kind; docs/serving.md covers serve, run and Triton for all."""

_WHERE = {"jetson": "the Jetson", "server": "the head's GPU machine"}

FILE_ROLES = {
    "head": "the head: input -> boundary, fp32 weights, with the boundary encoder (`run` on onnxruntime)",
    "tail": "the tail: boundary -> logits, fp32 weights, with the boundary decoder (what `serve` runs)",
    "head_int8": "the head quantized to INT8 (QDQ)",
    "tail_int8": "the tail quantized to INT8 (QDQ)",
    "head_trt": "the head without the boundary codec (float32 boundary) for TensorRT: the device encodes",
    "tail_trt": "the tail without the boundary codec for TensorRT: the server decodes",
    "head_fp16": "the head as a strongly typed fp16 model (TensorRT 11 has no --fp16)",
    "tail_fp16": "the tail as a strongly typed fp16 model (TensorRT 11)",
    "golden": "golden inputs, boundaries and logits that `verify` replays",
    "calibration_boundary": "the boundaries the INT8 tail was calibrated on",
    "build_engines_sh": "the trtexec commands that build this split's TensorRT engines on the device",
    "engine_plan_json": "the same build plan for `build-engines` (TensorRT's Python builder)",
}
"""What each key of a split's ``files`` holds (``manifest.json`` ``splits[i].files``)."""

_VARIANTS = {
    "int8": "`int8` = INT8 QDQ",
    "trt": "`trt` = without the boundary codec, for TensorRT",
    "fp16": "`fp16` = strongly typed fp16, for TensorRT 11",
}


@dataclass(frozen=True)
class Step:
    """One next step: what it does, and the command."""

    what: str
    command: str


def next_steps(
    kind: str,
    bundle: str,
    *,
    sha256: str | None,
    tensorrt: bool,
    triton: bool,
    link: str | None,
) -> list[Step]:
    """The commands for a bundle of target ``kind`` at path ``bundle``, in order.

    ``sha256``: the manifest's (None: a placeholder that says how to get it); ``tensorrt``: the target
    builds engines; ``triton``: the bundle has ``triton/``; ``link``: the export's ``--link``, if any.
    """
    where = _WHERE.get(kind, "the device")
    pin = sha256 if sha256 is not None else "<sha256 of manifest.json, as the export printed it>"
    steps = [
        Step(f"copy the bundle to {where}", f"rsync -a {bundle}/ <device>:{bundle}/"),
        Step(f"check the copy, on {where}", f"isplit-export verify {bundle} --expect-sha256 {pin}"),
    ]
    if tensorrt:
        steps += [
            Step(f"build the TensorRT engines on {where}", f"isplit-export build-engines {bundle}"),
            Step(f"check the engines, on {where}", f"isplit-export verify {bundle} --backend tensorrt"),
        ]
    steps.append(Step("serve the tails, on the server", f"isplit-export serve {bundle}"))
    if triton:
        steps.append(Step("or with Triton (triton/)", f"tritonserver --model-repository {bundle}/triton"))
    run = f"isplit-export run {bundle} --url <server>:{ServeOptions.port}"
    steps.append(Step(f"run the head on {where} against them", run))
    if link:
        steps.append(Step("re-plan with what run measured", f"isplit-export plan {bundle}"))
    else:
        steps.append(Step("whether to split, on your link", f"isplit-export plan {bundle} --link lte"))
    return steps


def manifest_steps(
    target: Mapping[str, Any], options: Mapping[str, Any], triton: bool, bundle: str, sha256: str | None
) -> list[Step]:
    """:func:`next_steps` from the manifest's ``target`` and ``options`` blocks and whether it has ``triton``."""
    link = options.get("link")
    return next_steps(
        str(target.get("kind") or "onnx"),
        bundle,
        sha256=sha256,
        tensorrt=target.get("backend") == "tensorrt",
        triton=triton,
        link=link if isinstance(link, str) else None,
    )


def format_next_steps(
    target: Mapping[str, Any], options: Mapping[str, Any], triton: bool, bundle: str, sha256: str
) -> list[str]:
    """The export's last lines: the steps with the manifest's sha256, aligned, and the guides to read."""
    steps = manifest_steps(target, options, triton, bundle, sha256)
    kind = str(target.get("kind") or "onnx")
    width = max((len(s.what) for s in steps if len(s.what) < 48), default=0)
    lines = [f"next steps (manifest sha256 {sha256}):"]
    lines += [f"  {s.what:<{width}}  {s.command}" for s in steps]
    guide = DOCS.get(kind, "docs/serving.md")
    lines.append(
        f"see {bundle}/report.md, {guide}" + ("" if guide == "docs/serving.md" else " and docs/serving.md")
    )
    return lines


def next_steps_section(manifest: Manifest) -> list[str]:
    """``report.md``'s "Next steps": the same commands, for ``<bundle>``, and the guides."""
    target = manifest.provenance.target
    kind = (target.kind if target else None) or "onnx"
    triton = manifest.provenance.has_triton
    steps = next_steps(
        kind,
        "<bundle>",
        sha256=None,
        tensorrt=target is not None and target.backend == "tensorrt",
        triton=triton,
        link=manifest.options.link,
    )
    lines = ["## Next steps", "", "```sh"]
    for s in steps:
        lines += [f"# {s.what}", s.command]
    lines += [
        "```",
        "",
        "The manifest's sha256 pins the bundle: the export prints it (`sha256sum manifest.json` gives the",
        "same); `verify --expect-sha256` refuses any other manifest. `serve` runs the tails over the Open",
        "Inference Protocol with MLServer; `run` sends the head's boundaries to them and writes `run.json`,",
        "which `plan` then uses in place of the estimates. Device side: "
        + (
            "docs/jetson.md"
            if kind == "jetson"
            else f"{DOCS.get(kind, 'docs/serving.md')} and docs/jetson.md"
        )
        + "; serving, `run` and Triton: docs/serving.md.",
    ]
    if triton:
        lines += [
            "",
            "`triton/` is a Triton model repository of the tails (one model per split, `config.pbtxt` and",
            "`1/model.onnx`); a TensorRT variant of a tail (`configs/tensorrt.pbtxt`) needs an engine built",
            "on the server's GPU: an engine built on the Jetson does not run there.",
        ]
    return lines


def file_naming_section(manifest: Manifest) -> list[str]:
    """``report.md``'s "Files": which ONNX file is which split and variant, from each split's ``files``."""
    splits = manifest.splits
    if not splits:
        return []
    keys = {key for s in splits for key in s.files}
    variants = ["none = fp32 with the boundary codec"] + [
        text for key, text in _VARIANTS.items() if f"head_{key}" in keys or f"tail_{key}" in keys
    ]
    lines = [
        "## Files",
        "",
        "`full.onnx` is the whole model. Each split `NN-<node>` (NN its rank, `<node>` the layer it is cut",
        "after) has the files below; an ONNX file's name is `NN-<node>.<part>[.<variant>].onnx` (variant:",
        f"{'; '.join(variants)}). Every file is listed with its sha256 in `manifest.json`.",
    ]
    if manifest.weights.layout == "shared":
        lines.append(
            "The ONNX files keep their weights in `weights/` (each tensor stored once, shared by the splits)."
        )
    lines += ["", "| split | file | what it is |", "|---|---|---|"]
    for s in splits:
        for key, path in s.files.items():
            role = FILE_ROLES.get(key, key.replace("_", " "))
            lines.append(f"| `{s.dir}` | `{path}` | {role} |")
    return lines


def commands(steps: Sequence[Step]) -> list[str]:
    """Just the commands (tests and scripts)."""
    return [s.command for s in steps]
