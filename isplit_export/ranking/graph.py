"""Trace a model with torch.fx, enumerate its valid cut points and split it into head and tail.

A cut after node ``n`` is valid when ``n`` is the *only* value computed before the cut that is used
after it (so one tensor crosses the link, never inside a residual block), that value is a feature
map whose layout is established (:mod:`isplit_export.ranking.layouts`: ``nchw``, ``nhwc`` or a ``tokens``
sequence; a window partition or a flattened vector is not one), and the next op is not a pointwise op
applied to it (batch norm, activation, dropout stay with the op before them, so a cut always comes
after the activation).

Two kinds of values may cross for free because the tail can recompute them: parameters/buffers
(``get_attr``) and the batch size (``x.size(0)`` / ``x.shape[0]``), which the tail reads off the
boundary tensor instead. Node names are torch.fx's (``layer2_0_relu_2``), module paths are the
outermost module that the cut closes (``layer2.0``), like torchvision's feature_extraction.
"""

from __future__ import annotations

import copy
import functools
import logging
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn
from torch.fx.passes.shape_prop import ShapeProp

from isplit_export.errors import BadInputError
from isplit_export.numbers import rounded
from isplit_export.ranking.layouts import EXAMPLE_BATCH, classify, example_input, infer_axes

log = logging.getLogger(__name__)

POINTWISE_MODULES: tuple[type[nn.Module], ...] = (
    nn.BatchNorm1d,
    nn.BatchNorm2d,
    nn.BatchNorm3d,
    nn.ReLU,
    nn.ReLU6,
    nn.SiLU,
    nn.Hardswish,
    nn.Hardsigmoid,
    nn.Sigmoid,
    nn.GELU,
    nn.LeakyReLU,
    nn.PReLU,
    nn.ELU,
    nn.SELU,
    nn.Mish,
    nn.Tanh,
    nn.Softplus,
    nn.Dropout,
    nn.Dropout2d,
    nn.AlphaDropout,
    nn.Identity,
)
POINTWISE_FUNCTIONS: set[Any] = {
    torch.relu,
    torch.nn.functional.relu,
    torch.nn.functional.relu6,
    torch.nn.functional.silu,
    torch.nn.functional.hardswish,
    torch.nn.functional.hardsigmoid,
    torch.sigmoid,
    torch.tanh,
    torch.nn.functional.gelu,
    torch.nn.functional.dropout,
    torch.nn.functional.leaky_relu,
    torch.nn.functional.batch_norm,
}
POINTWISE_METHODS = {"relu", "relu_", "sigmoid", "tanh", "clamp", "clamp_min"}
# Padding belongs to the conv after it: cutting after it would only send a larger tensor.
PADDING_MODULES: tuple[type[nn.Module], ...] = (
    nn.ZeroPad2d,
    nn.ConstantPad2d,
    nn.ReflectionPad2d,
    nn.ReplicationPad2d,
)


@dataclass(frozen=True)
class Cut:
    """One valid cut point: after fx node ``node``; ``shape`` is the boundary tensor's own shape
    without the batch axis: (C, H, W) for ``nchw``, (H, W, C) for ``nhwc``, (class_tokens + N, D)
    for ``tokens`` (N patch tokens on a grid after ``class_tokens`` class tokens)."""

    index: int
    node: str
    module: str
    shape: tuple[int, ...]
    boundary_bytes: int
    head_flops_share: float
    layout: str = "nchw"
    class_tokens: int = 0

    def to_json(self) -> dict[str, Any]:
        out = {
            "index": self.index,
            "node": self.node,
            "module": self.module,
            "shape": list(self.shape),
            "layout": self.layout,
            "boundary_bytes": self.boundary_bytes,
            "head_flops_share": rounded(self.head_flops_share, 6, decimals=True),
        }
        if self.layout == "tokens":
            out["class_tokens"] = self.class_tokens
        return out


@dataclass
class TracedModel:
    """An fx-traced copy of the model with its valid cuts, in network order."""

    gm: fx.GraphModule
    cuts: list[Cut]
    input_shape: tuple[int, ...]
    total_flops: int

    def cut(self, index: int) -> Cut:
        """The cut with ``index`` (position in :attr:`cuts`); out of range is a :class:`BadInputError`."""
        if not 0 <= index < len(self.cuts):
            raise BadInputError(
                f"split index {index} out of range: this model has cuts 0..{len(self.cuts) - 1}"
            )
        return self.cuts[index]

    @functools.cached_property
    def activation_bytes(self) -> int:
        """Bytes of every node's output for one image (fp32 as traced): what a backward pass keeps alive."""
        total = 0
        for n in self.gm.graph.nodes:
            meta = n.meta.get("tensor_meta")
            if n.op not in ("get_attr", "output") and meta is not None and hasattr(meta, "shape"):
                total += meta.shape.numel() * meta.dtype.itemsize
        return total // EXAMPLE_BATCH

    def capture_module(self) -> fx.GraphModule:
        """A module returning ``(logits, *activations at every cut)`` in one forward pass."""
        graph = copy.deepcopy(self.gm.graph)
        nodes = {n.name: n for n in graph.nodes}
        out = next(n for n in graph.nodes if n.op == "output")
        logits = out.args[0]
        graph.erase_node(out)
        graph.output((logits, *[nodes[c.node] for c in self.cuts]))
        capture = fx.GraphModule(self.gm, graph)
        # how to read each activation (importance.batch_scores): (layout, class tokens) per cut
        setattr(capture, "cut_layouts", [(c.layout, c.class_tokens) for c in self.cuts])  # noqa: B010
        return capture

    def split(self, cut: Cut) -> tuple[fx.GraphModule, fx.GraphModule]:
        """Head (input -> boundary) and tail (boundary -> logits) modules for ``cut``."""
        head, tail = _split(self.gm, cut.node)
        assert head is not None
        return head, tail

    def tail(self, cut: Cut) -> fx.GraphModule:
        """The tail alone (boundary -> logits) as a module, without building the head."""
        return _split(self.gm, cut.node, head=False)[1]

    @functools.cached_property
    def _schedule(self) -> tuple[list[fx.Node], dict[str, int], set[fx.Node], dict[fx.Node, int]]:
        """For :meth:`run_tail`, once per traced graph: the nodes in order, each name's position, the nodes
        that cross a cut for free, and each node's last use."""
        nodes = list(self.gm.graph.nodes)
        last_use = {a: i for i, n in enumerate(nodes) for a in n.all_input_nodes}
        return nodes, {n.name: i for i, n in enumerate(nodes)}, _free_nodes(nodes), last_use

    def run_tail(self, cut: Cut, boundary: torch.Tensor) -> torch.Tensor:
        """The tail's output for ``boundary``, interpreted node by node on the traced graph: the same
        computation as :meth:`tail` without building a module (the probe runs every cut's tail once)."""
        nodes, position, free, last_use = self._schedule
        k = position[cut.node]
        env: dict[fx.Node, Any] = {nodes[k]: boundary}

        def load(a: fx.Node) -> Any:
            if a in env:
                return env[a]
            if a.op == "get_attr":
                return _fetch_attr(self.gm, str(a.target))
            if _is_batch_size(a):
                return boundary.size(0)
            raise BadInputError(f"cut after {cut.node} is not valid: {a.name} also crosses it")

        for i in range(k + 1, len(nodes)):
            n = nodes[i]
            if n in free:
                continue
            args, kwargs = fx.node.map_arg(n.args, load), fx.node.map_arg(n.kwargs, load)
            if n.op == "output":
                return args[0]  # type: ignore[return-value]
            if n.op == "call_module":
                env[n] = self.gm.get_submodule(str(n.target))(*args, **kwargs)
            elif n.op == "call_function":
                env[n] = n.target(*args, **kwargs)  # type: ignore[operator]
            elif n.op == "call_method":
                env[n] = getattr(args[0], str(n.target))(*args[1:], **kwargs)
            elif n.op == "get_attr":
                env[n] = _fetch_attr(self.gm, str(n.target))
            for a in n.all_input_nodes:
                if last_use.get(a) == i:
                    env.pop(a, None)  # a value is dropped after its last use, as fx's generated code does
        raise ValueError("the traced graph has no output node")


def trace(module: nn.Module, input_shape: tuple[int, ...]) -> TracedModel:
    """Trace ``module`` (a frozen eval-mode classifier) for inputs of shape (C, H, W).

    In-place activations are switched off on the traced copy so a captured activation is never
    overwritten by a later op. The copy shares ``module``'s parameters and buffers (nothing here
    writes them): a second copy of the weights would be vgg16's 553 MB more for the whole run.
    """
    shared = {id(t): t for t in (*module.parameters(), *module.buffers())}
    module = copy.deepcopy(module, memo=shared).eval()
    for m in module.modules():
        if hasattr(m, "inplace"):
            setattr(m, "inplace", False)  # noqa: B010 (an attribute of some module subclasses)
    try:
        gm = fx.symbolic_trace(module)
    except Exception as err:
        raise BadInputError(
            f"the model cannot be traced with torch.fx ({type(err).__name__}: {str(err).splitlines()[0][:160]}): "
            "remove data-dependent Python control flow from forward() or wrap it in a leaf module"
        ) from err
    example = example_input(tuple(input_shape))  # batch 2: the batch axis is never a size-1 axis
    ShapeProp(gm).propagate(example)
    axes = infer_axes(gm)
    flops = _node_flops(gm, batch=len(example))
    total = max(sum(flops.values()), 1)
    nodes = list(gm.graph.nodes)
    order = {n: i for i, n in enumerate(nodes)}
    free = _free_nodes(nodes)
    last_use = {n: max((order[u] for u in n.users if u not in free), default=-1) for n in nodes}

    cuts: list[Cut] = []
    running = 0
    live: set[fx.Node] = set()
    for i, n in enumerate(nodes):
        running += flops.get(n, 0)
        if n.op not in ("get_attr", "output") and n not in free:
            live.add(n)
        if n.op == "placeholder":
            continue
        live = {m for m in live if last_use[m] > i}
        if (
            live != {n}
            or not _is_tensor(n)
            or _is_padding(n, gm)
            or _followed_by_pointwise(n, nodes[i + 1], gm)
        ):
            continue
        full = tuple(int(s) for s in n.meta["tensor_meta"].shape)
        layout, class_tokens, reason = classify(axes.get(n), full)
        if layout is None:
            log.info("not a cut after %s %s: %s", n.name, list(full[1:]), reason)
            continue
        shape = full[1:]
        numel = 1
        for s in shape:
            numel *= s
        path = _module_path(n, nodes[i + 1 :])
        cuts.append(Cut(len(cuts), n.name, path, shape, 4 * numel, running / total, layout, class_tokens))
    if not cuts:
        raise BadInputError(
            "the model has no valid cut point (no single NCHW/NHWC feature map or token sequence crosses any point)"
        )
    return TracedModel(gm, cuts, tuple(input_shape), total)


def _is_tensor(n: fx.Node) -> bool:
    meta = n.meta.get("tensor_meta")
    return meta is not None and hasattr(meta, "shape")


def _is_padding(n: fx.Node, gm: fx.GraphModule) -> bool:
    if n.op == "call_module":
        return isinstance(gm.get_submodule(str(n.target)), PADDING_MODULES)
    return n.op == "call_function" and n.target is torch.nn.functional.pad


def _followed_by_pointwise(n: fx.Node, nxt: fx.Node, gm: fx.GraphModule) -> bool:
    if not nxt.args or nxt.args[0] is not n:
        return False
    if nxt.op == "call_module":
        return isinstance(gm.get_submodule(str(nxt.target)), POINTWISE_MODULES)
    if nxt.op == "call_function":
        return nxt.target in POINTWISE_FUNCTIONS
    if nxt.op == "call_method":
        return nxt.target in POINTWISE_METHODS
    return False


def _fetch_attr(gm: fx.GraphModule, target: str) -> Any:
    """The attribute ``a.b.c`` of ``gm`` (a ``get_attr`` node's value)."""
    obj: Any = gm
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _is_batch_size(n: fx.Node) -> bool:
    """``t.size(0)``, ``t.size()[0]`` or ``t.shape[0]``: the batch size, recomputable anywhere."""
    if n.op == "call_method" and n.target == "size":
        dim = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim")
        return bool(dim == 0)
    if n.op == "call_function" and n.target is operator.getitem and n.args[1] == 0:
        src = n.args[0]
        return isinstance(src, fx.Node) and bool(
            (src.op == "call_function" and src.target is getattr and src.args[1] == "shape")
            or (src.op == "call_method" and src.target == "size" and len(src.args) == 1)
        )
    return False


def _free_nodes(nodes: list[fx.Node]) -> set[fx.Node]:
    """Nodes that may cross a cut at no cost: batch-size reads and the shape nodes feeding only them."""
    free = {n for n in nodes if _is_batch_size(n)}
    for n in nodes:
        shape_op = n.target == "size" or n.target is getattr
        if (
            shape_op
            and n.users
            and all(u in free for u in n.users)
            and n.op in ("call_method", "call_function")
        ):
            free.add(n)
    return free


def _module_path(n: fx.Node, later: list[fx.Node]) -> str:
    """The outermost module whose computation ends at ``n`` (falls back to the innermost one)."""
    stack = list(n.meta.get("nn_module_stack", {}).values())
    paths = [str(p[0]) if isinstance(p, tuple) else str(p) for p in stack]
    for path in paths:
        if not any(path in _paths(m) for m in later):
            return path
    if paths:
        return paths[-1]
    return str(n.target) if n.op == "call_module" else n.name


def _paths(n: fx.Node) -> set[str]:
    return {str(p[0]) if isinstance(p, tuple) else str(p) for p in n.meta.get("nn_module_stack", {}).values()}


_WEIGHTED_FUNCTIONS: set[Any] = {
    torch.nn.functional.conv1d,
    torch.nn.functional.conv2d,
    torch.nn.functional.conv3d,
    torch.conv1d,
    torch.conv2d,
    torch.conv3d,
    torch.nn.functional.linear,
}


def _node_flops(gm: fx.GraphModule, batch: int = 1) -> dict[fx.Node, int]:
    """Approximate FLOPs per image: 2*MACs for conv/linear, one per output element otherwise.

    ``batch`` is the batch size the shapes were propagated with (values without it count whole)."""
    out: dict[fx.Node, int] = {}
    for n in gm.graph.nodes:
        meta = n.meta.get("tensor_meta")
        if meta is None or not hasattr(meta, "shape") or n.op in ("placeholder", "get_attr", "output"):
            continue
        numel = 1
        for s in meta.shape:
            numel *= int(s)
        if len(meta.shape) and int(meta.shape[0]) == batch:
            numel //= batch
        flops = numel
        if n.op == "call_module":
            mod = gm.get_submodule(str(n.target))
            if isinstance(mod, nn.modules.conv._ConvNd):
                k = 1
                for s in mod.kernel_size:
                    k *= int(s)
                flops = 2 * numel * (mod.in_channels // mod.groups) * k
            elif isinstance(mod, nn.Linear):
                flops = 2 * numel * mod.in_features
        elif n.op == "call_function" and n.target in _WEIGHTED_FUNCTIONS and len(n.args) > 1:
            # Conv/linear modules from other packages (e.g. efficientnet's Conv2dStaticSamePadding) are
            # traced into and show up as F.conv2d / F.linear calls: count their MACs from the weight.
            w = n.args[1].meta.get("tensor_meta") if isinstance(n.args[1], fx.Node) else None
            if w is not None and hasattr(w, "shape") and len(w.shape) >= 2:
                per_out = 1
                for s in w.shape[1:]:
                    per_out *= int(s)
                flops = 2 * numel * per_out
        out[n] = flops
    return out


def _split(
    gm: fx.GraphModule, cut_name: str, head: bool = True
) -> tuple[fx.GraphModule | None, fx.GraphModule]:
    nodes = list(gm.graph.nodes)
    k = next(i for i, n in enumerate(nodes) if n.name == cut_name)
    free = _free_nodes(nodes)

    head_graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    if head:
        for n in nodes[: k + 1]:
            env[n] = head_graph.node_copy(n, lambda a: env[a])
        head_graph.output(env[nodes[k]])

    tail = fx.Graph()
    boundary = tail.placeholder("boundary")
    boundary.meta = dict(nodes[k].meta)
    tenv: dict[fx.Node, fx.Node] = {nodes[k]: boundary}

    def lookup(a: fx.Node) -> fx.Node:
        if a not in tenv:
            if a.op == "get_attr":
                tenv[a] = tail.node_copy(a)
            elif _is_batch_size(a):
                tenv[a] = tail.call_method("size", (boundary, 0))
            else:
                raise BadInputError(f"cut after {cut_name} is not valid: {a.name} also crosses it")
        return tenv[a]

    for n in nodes[k + 1 :]:
        if n in free:
            if _is_batch_size(n):
                tenv[n] = tail.call_method("size", (boundary, 0))
            continue
        tenv[n] = tail.node_copy(n, lookup)
    head_gm = fx.GraphModule(gm, head_graph, "Head") if head else None
    tail_gm = fx.GraphModule(gm, tail, "Tail")
    for part in (head_gm, tail_gm):
        if part is not None:
            part.graph.eliminate_dead_code()
            part.recompile()
    return head_gm, tail_gm
