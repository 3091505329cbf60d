"""The report's runtime sections: the onnxruntime latency of each split on the build host (and of its
INT8 pair), and the TensorRT build plan for the device.
"""

from __future__ import annotations

from collections.abc import Mapping

from isplit_export.bundle import markdown as md
from isplit_export.contract import EngineRecipe, Manifest


def latency_section(manifest: Manifest) -> list[str]:
    lat = manifest.build_latencies
    int8 = any(v.head_int8_ms is not None for v in lat.values())
    rows = []
    for key in sorted(lat):
        v = lat[key]
        head, tail, full = v.head_ms, v.tail_ms, v.full_ms
        if head is None and tail is None and full is None and v.ratio is None:
            continue
        both = head + tail if head is not None and tail is not None else None
        ratio = v.ratio
        if ratio is None and both is not None and full:
            ratio = both / full
        row = [f"`{key}`", *(md.ms(x) for x in (head, tail, both, full)), md.ms(ratio)]
        if int8:
            qh, qt = v.head_int8_ms, v.tail_int8_ms
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


def tensorrt_section(manifest: Manifest, engine_plans: Mapping[str, EngineRecipe]) -> list[str]:
    from isplit_export.targets.engine_build import engine_build_lines

    plans = []
    for s in manifest.splits:
        files = sorted(s.files.values())
        script = next((f for f in files if f.endswith("build_engines.sh")), None)
        if script is None:
            continue
        plan = next((f for f in files if f.endswith("engine_plan.json")), None)
        plans.append(f"- `{script}`" + (f" (plan: `{plan}`)" if plan else ""))
        plans += engine_build_lines(engine_plans.get(s.dir))
    if not plans:
        return []
    target = manifest.provenance.target
    recorded = (
        ()
        if target is None
        else (("jetpack", target.jetpack), ("tensorrt", target.tensorrt_version), ("cuda", target.cuda))
    )
    versions = ", ".join(f"{label} {v}" for label, v in recorded if v is not None)
    return [
        "## TensorRT build plan",
        "",
        "Engines are not portable across GPUs or TensorRT versions: build them on the device"
        + (f" ({target.name if target else None}: {versions})" if versions else "")
        + ", with the trtexec script of each split or `isplit-export build-engines <bundle>`, "
        "then check them with `isplit-export verify <bundle> --backend tensorrt`.",
        "",
        *plans,
    ]
