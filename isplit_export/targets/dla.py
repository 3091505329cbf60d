"""Which nodes of a head ONNX graph the DLA can run, checked before any build (pure Python, no TensorRT).

With ``--allowGPUFallback`` TensorRT moves every layer the DLA cannot run to the GPU without a word
(NVIDIA, "DLA Runtime Configuration", GPU Fallback Mode), and each move costs a DLA<->GPU hand-over.
This module walks the ONNX graph the engine is built from and holds every node to the DLA's supported
layers and restrictions, so that the engine build recipe can say *before* the build what would leave the
DLA, and put a head that would mostly leave it on the GPU instead
(:func:`~isplit_export.targets.engine_build.write_engine_build`).

Sources (isplit_export/profiles/README.md cites them in full): the per-layer limits are the ``If executing this layer
on DLA`` clauses of ``include/NvInfer.h`` in NVIDIA/TensorRT, identical at tags v10.3.0 (JetPack 6.2)
and v11.1 (the DLA limits did not change between the two; 11.4.1 restored DLA on AGX Orin); the general
rules (no dynamic dimensions, batch <= 4096, non-batch dimensions <= 8192) are the "DLA Supported Layers
and Restrictions" page; which ONNX operators map to DLA layers at all is NVIDIA's
Deep-Learning-Accelerator-SW ``operators/README.md``. Rules this module cannot see (a combination of
layers exceeding the DLA's internal state, loadable count limits) are not checked: the build still
records what TensorRT actually did, and a DLA plan makes an unexpected fallback a build error.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper

from isplit_export.exporting.onnx_graph import attr, copy_model, skeleton
from isplit_export.numbers import rounded

MAX_BATCH = 4096
MAX_DIM = 8192
RULES = "NVIDIA/TensorRT include/NvInfer.h DLA clauses (v10.3.0 = v11.1) + DLA supported layers page"

_SKIPPED = {"Constant", "Identity", "QuantizeLinear", "DequantizeLinear", "Dropout"}
"""Not layers on any device: folded or fused by TensorRT (Q/DQ pairs fuse into the quantized layer)."""
_SHAPE_OPS = {"Shape", "Size"}
"""Shape queries: build-time constants once the shapes are static (DLA-SW operator table: "inferred at build time")."""
_ACTIVATIONS = {"Relu", "Sigmoid", "Tanh", "Clip", "LeakyRelu", "PRelu", "BatchNormalization"}
_ELEMENTWISE = {"Add": "kSUM", "Sum": "kSUM", "Sub": "kSUB", "Mul": "kPROD", "Max": "kMAX", "Min": "kMIN"}
_SHUFFLE = {"Reshape", "Flatten", "Transpose", "Squeeze", "Unsqueeze"}


@dataclass(frozen=True)
class Fallback:
    """One node the DLA cannot run, and why (the restriction it breaks)."""

    node: str
    op: str
    reason: str

    def to_json(self) -> dict[str, str]:
        return {"node": self.node, "op": self.op, "reason": self.reason}


@dataclass
class DlaReport:
    """``layers`` nodes TensorRT would build layers from; ``on_dla`` of them pass every DLA rule."""

    layers: int
    fallback: list[Fallback] = field(default_factory=list)

    @property
    def on_dla(self) -> int:
        return self.layers - len(self.fallback)

    @property
    def fraction(self) -> float:
        """Share of the layers that run on the DLA (1.0 for an empty graph: nothing leaves it)."""
        return self.on_dla / self.layers if self.layers else 1.0

    def to_json(self) -> dict[str, Any]:
        return {
            "layers": self.layers,
            "on_dla": self.on_dla,
            "fraction": rounded(self.fraction, 4, decimals=True),
            "fallback": [f.to_json() for f in self.fallback],
            "rules": RULES,
        }


class _Graph:
    """Shapes, constants and attributes of one ONNX graph, as the rules need them."""

    def __init__(self, model: onnx.ModelProto, batch: int) -> None:
        # the DLA profile fixes the batch (min = opt = max), so the check does too, and reads every
        # tensor's static shape (and every shape tensor's value) from one onnxruntime run on zeros: shape
        # arithmetic (Shape -> Gather -> ... -> Pad, as exporters write "same" padding) is then static,
        # as it is for TensorRT at build time. Without onnxruntime's answer, ONNX shape inference.
        fixed = copy_model(model)
        for inp in fixed.graph.input:
            dims = inp.type.tensor_type.shape.dim
            if dims and not dims[0].HasField("dim_value"):
                dims[0].dim_value = batch
        values = _evaluate(fixed)
        inferred = fixed
        with contextlib.suppress(Exception):  # shapes stay unknown; the rules that need them say so
            inferred = onnx.shape_inference.infer_shapes(skeleton(fixed))  # shapes only: no weights copied
        g = fixed.graph
        self.const: dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t) for t in g.initializer if not t.external_data
        }
        self.const_names = {t.name for t in g.initializer}
        self.shapes: dict[str, list[int | str | None]] = {t.name: list(t.dims) for t in g.initializer}
        for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
            t = vi.type.tensor_type
            if t.HasField("shape"):
                self.shapes[vi.name] = [
                    d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in t.shape.dim
                ]
        for name, value in values.items():
            self.shapes[name] = list(value.shape)
        self.values = values
        self.folded: set[str] = set(self.const_names)
        self.graph = g

    def shape(self, name: str) -> list[int | str | None] | None:
        return self.shapes.get(name)

    def is_const(self, name: str) -> bool:
        return name == "" or name in self.const_names or name in self.folded

    def value(self, name: str) -> np.ndarray | None:
        """A constant's value: an initializer, or a folded node's output from the onnxruntime run."""
        return self.const.get(name, self.values.get(name) if name in self.folded else None)


def _evaluate(model: onnx.ModelProto) -> dict[str, np.ndarray]:
    """Every node output of ``model`` from one onnxruntime run on zero inputs ({} when it cannot run)."""
    try:
        from isplit_export.exporting.onnx_utils import make_session  # lazy: onnxruntime

        probe = copy_model(model)
        known = {o.name for o in probe.graph.output}
        names = [o for n in probe.graph.node for o in n.output if o and o not in known]
        probe.graph.output.extend(onnx.helper.make_empty_tensor_value_info(n) for n in names)
        session = make_session(probe.SerializeToString())
        inits = {t.name for t in model.graph.initializer}
        feeds = {}
        for inp in session.get_inputs():
            if inp.name in inits:
                continue
            dtype = onnx.helper.tensor_dtype_to_np_dtype(
                next(i.type.tensor_type.elem_type for i in model.graph.input if i.name == inp.name)
            )
            feeds[inp.name] = np.zeros([int(d) for d in inp.shape], dtype)
        outputs = session.get_outputs()
        return {o.name: np.asarray(v) for o, v in zip(outputs, session.run(None, feeds), strict=True)}
    except Exception:  # a graph onnxruntime cannot run: static shape inference only
        return {}


def _bad_range(values: Sequence[int], lo: int, hi: int) -> bool:
    return any(not lo <= int(v) <= hi for v in values)


def _conv(g: _Graph, node: onnx.NodeProto) -> str | None:
    w = g.shape(node.input[1]) if len(node.input) > 1 else None
    kernel = list(attr(node, "kernel_shape", []) or (w[2:] if w else []))
    if len(kernel) != 2:
        return f"{len(kernel)}D convolution: DLA runs 2D only"
    if _bad_range(kernel, 1, 32):
        return f"kernel {kernel} outside [1,32]"
    stride = list(attr(node, "strides", [1, 1]))
    if _bad_range(stride, 1, 8):
        return f"stride {stride} outside [1,8]"
    pads = list(attr(node, "pads", [0, 0, 0, 0]))
    if _bad_range(pads, 0, 31) or any(p >= k for p, k in zip(pads, kernel + kernel, strict=False)):
        return f"padding {pads} outside [0,31] or not below kernel {kernel}"
    dil = list(attr(node, "dilations", [1, 1]))
    if _bad_range(dil, 1, 32):
        return f"dilation {dil} outside [1,32]"
    if int(attr(node, "group", 1)) > 8192:
        return f"{attr(node, 'group')} groups: DLA takes at most 8192"
    if w and isinstance(w[0], int) and not 1 <= w[0] <= 8192:
        return f"{w[0]} output maps outside [1,8192]"
    return None


def _deconv(g: _Graph, node: onnx.NodeProto) -> str | None:
    w = g.shape(node.input[1]) if len(node.input) > 1 else None
    kernel = list(attr(node, "kernel_shape", []) or (w[2:] if w else []))
    if len(kernel) != 2:
        return f"{len(kernel)}D deconvolution: DLA runs 2D only"

    def ok(v: list[int]) -> bool:
        return not _bad_range(v, 1, 32) or (sorted(v)[0] == 1 and max(v) in (64, 96, 128))

    if not ok(kernel):
        return f"kernel {kernel} outside [1,32] (or 1x64/96/128)"
    stride = list(attr(node, "strides", [1, 1]))
    if not ok(stride):
        return f"stride {stride} outside [1,32] (or 1x64/96/128)"
    if any(int(p) for p in attr(node, "pads", [])):
        return "deconvolution padding must be 0 on DLA"
    if int(attr(node, "group", 1)) != 1:
        return "grouped deconvolution: DLA needs one group"
    return None


def _pool(g: _Graph, node: onnx.NodeProto) -> str | None:
    window = list(attr(node, "kernel_shape", []))
    if len(window) != 2:
        return f"{len(window)}D pooling: DLA runs 2D only"
    if _bad_range(window, 1, 8):
        return f"window {window} outside [1,8]"
    stride = list(attr(node, "strides", [1, 1]))
    if _bad_range(stride, 1, 16):
        return f"stride {stride} outside [1,16]"
    if _bad_range(list(attr(node, "pads", [0, 0, 0, 0])), 0, 7):
        return f"padding {list(attr(node, 'pads'))} outside [0,7]"
    return None


def _global_pool(g: _Graph, node: onnx.NodeProto) -> str | None:
    hw = (g.shape(node.input[0]) or [])[2:]
    return f"{node.op_type} has no DLA implementation through TensorRT (its window is the whole {hw} map; DLA pooling windows stop at 8x8)"


def _elementwise(g: _Graph, node: onnx.NodeProto) -> str | None:
    if len(node.input) != 2:
        return f"{node.op_type} with {len(node.input)} inputs: DLA element-wise takes two"
    return None


def _concat(g: _Graph, node: onnx.NodeProto) -> str | None:
    rank = len(g.shape(node.output[0]) or [])
    axis = int(attr(node, "axis", 0))
    axis = axis + rank if axis < 0 else axis
    if rank and axis != rank - 3:
        return f"concatenation on axis {axis}: DLA concatenates on the channel axis (third from last) only"
    return None


def _matmul(g: _Graph, node: onnx.NodeProto) -> str | None:
    if not g.is_const(node.input[1]):
        return f"{node.op_type} with a non-constant second input: DLA fully connected layers need constant weights"
    return None


def _resize(g: _Graph, node: onnx.NodeProto) -> str | None:
    scales = g.value(node.input[2]) if len(node.input) > 2 and node.input[2] else None
    if scales is None or scales.size != 4:
        return "resize without 4 constant scales (output sizes are not supported on DLA)"
    s = [float(v) for v in scales.ravel()]
    mode = attr(node, "mode", b"nearest")
    mode = mode.decode() if isinstance(mode, bytes) else str(mode)
    hi = 32 if mode == "nearest" else 4
    if s[:2] != [1.0, 1.0] or any(v != int(v) or not 1 <= v <= hi for v in s[2:]):
        return f"resize scales {s}: DLA needs [1, 1, k, k] with integer k in [1,{hi}] ({mode})"
    return None


def _slice(g: _Graph, node: onnx.NodeProto) -> str | None:
    if not all(g.is_const(i) for i in node.input[1:]):
        return "slice with non-constant start/end/axes/steps"
    steps = g.value(node.input[4]) if len(node.input) > 4 and node.input[4] else None
    if steps is not None and any(int(v) != 1 for v in steps.ravel()):
        return "slice with strides other than 1"
    if len(g.shape(node.input[0]) or [0, 0, 0, 0]) != 4:
        return "slice of a tensor that is not 4D"
    return None


def _unary(g: _Graph, node: onnx.NodeProto) -> str | None:
    return None if node.op_type == "Abs" else f"unary {node.op_type}: DLA runs only Abs"


def _pad(g: _Graph, node: onnx.NodeProto) -> str | None:
    return (
        "Pad is not among the DLA supported layers (whether TensorRT fuses a zero Pad into the next "
        "convolution on the DLA is not documented: counted as a fallback)"
    )


def _none(g: _Graph, node: onnx.NodeProto) -> str | None:
    return None


_RULES: dict[str, Callable[[_Graph, onnx.NodeProto], str | None]] = {
    "Conv": _conv,
    "ConvTranspose": _deconv,
    "MaxPool": _pool,
    "AveragePool": _pool,
    "GlobalAveragePool": _global_pool,
    "GlobalMaxPool": _global_pool,
    "Concat": _concat,
    "Gemm": _matmul,
    "MatMul": _matmul,
    "Resize": _resize,
    "Upsample": _resize,
    "Slice": _slice,
    "Pad": _pad,
    "Softmax": _none,
    "LRN": _none,
    "Abs": _unary,
    "Sin": _unary,
    "Cos": _unary,
    "Neg": _unary,
    "Sqrt": _unary,
    "Exp": _unary,
    "Log": _unary,
    **{op: _none for op in _ACTIVATIONS},
    **{op: _elementwise for op in _ELEMENTWISE},
    **{op: _none for op in _SHUFFLE},
}


def _dynamic(g: _Graph, node: onnx.NodeProto) -> str | None:
    """DLA has no dynamic dimensions: any non-leading dimension that is not a fixed number is refused."""
    for name in [*node.input, *node.output]:
        shape = g.shape(name)
        if shape and any(not isinstance(d, int) or d <= 0 for d in shape[1:]):
            return f"dynamic dimension in {name} {shape}: DLA needs static shapes (min = opt = max)"
        if shape and any(isinstance(d, int) and d > MAX_DIM for d in shape[1:]):
            return f"dimension over {MAX_DIM} in {name} {shape}"
    return None


def check_model(model: onnx.ModelProto, *, batch: int = 1) -> DlaReport:
    """Hold every node of ``model`` to the DLA rules; ``batch`` is the engine's (static) batch size.

    Nodes whose inputs are all constants are folded by TensorRT and not counted; Q/DQ, Identity,
    Constant and Dropout nodes are not layers either. Every other node is one layer, on the DLA or not.
    """
    g = _Graph(model, batch)
    report = DlaReport(layers=0)
    folded = g.folded
    for node in g.graph.node:
        if all(i == "" or i in folded for i in node.input):  # (a Constant node has no input)
            folded.update(node.output)  # constant-only: folded at build time
            continue
        if node.op_type in _SHAPE_OPS and _dynamic(g, node) is None:
            folded.update(
                node.output
            )  # static shapes (the DLA profile fixes the batch): a build-time constant
            continue
        if node.op_type in _SKIPPED:
            continue
        report.layers += 1
        rule = _RULES.get(node.op_type)
        reason = _dynamic(g, node)
        if reason is None and not 1 <= batch <= MAX_BATCH:
            reason = f"batch {batch} outside [1,{MAX_BATCH}]"
        if reason is None:
            reason = (
                f"{node.op_type} is not among the DLA supported layers" if rule is None else rule(g, node)
            )
        if reason is not None:
            report.fallback.append(Fallback(node.name or node.output[0], node.op_type, reason))
    return report


def choose_device(report: DlaReport, min_fraction: float) -> tuple[bool, str]:
    """(keep the head on the DLA?, one line why): the DLA when at least ``min_fraction`` of its layers run there."""
    share = f"{report.on_dla}/{report.layers} layers ({100 * report.fraction:.1f} %) run on the DLA"
    if report.fraction >= min_fraction:
        rest = f"; {len(report.fallback)} planned GPU fallback(s)" if report.fallback else ""
        return True, f"DLA: {share}, at least {100 * min_fraction:g} %{rest}"
    first = report.fallback[0]
    return False, (
        f"GPU: only {share}, under {100 * min_fraction:g} % (first fallback: {first.node} {first.op}: {first.reason})"
    )
