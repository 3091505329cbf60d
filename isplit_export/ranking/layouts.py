"""Which axes of every fx graph value are batch, channels, height, width or patch tokens.

Grad-CAM needs to know the channel axis and the spatial axes of the tensor at a cut, and
"one 4-D tensor crosses" does not say which they are: Swin and ConvNeXt keep channels last
(``[B, H, W, C]``), vision transformers carry ``[B, 1+N, D]`` token sequences, and MaxViT's window
partitions (``[B, windows, P*P, C]``) are 4-D but not feature maps at all.

The layout is *propagated* through the graph from the input image (``[B, C, H, W]``), op by op, so it
is established by what the network does (permute, transpose, flatten/reshape of patch embeddings,
concatenation of a class token), not guessed from the sizes:

* every axis is a row-major product of *atoms* ``(role, stride, size, total)``: the part
  ``(i // stride) % size`` of a role's index (``B``, ``C``, ``H``, ``W``) of length ``total``. A
  *whole* axis is one atom with stride 1 and size == total. Reshapes split and merge atoms (by the
  tensor sizes, which torch.fx's shape propagation gives), permutes and transposes reorder axes; so a
  window partition ends up with axes like ``H/8*W/8`` and a departition restores whole ``H`` and ``W``;
* convolutions make a new whole ``C``; ``Linear`` makes a new whole ``C`` from the last axis when that
  axis is channels (or unknown), never from a spatial axis; ops that keep the shape keep the axes; ops
  that keep the rank and only resize whole ``C``/``H``/``W`` axes (pooling, padding, interpolation,
  Swin's patch merging on ``[B, H, W, C]``) keep their roles; a concatenation along a token axis
  after other tokens records them as *prefix* tokens (the class token);
* anything else makes the value's axes unknown.

The shape propagation runs at batch 2 so the batch axis is never confused with a size-1 axis.
:func:`classify` then names the layout of a tensor: ``nchw``, ``nhwc``, ``tokens`` (``[B, p+N, D]``
whose N tokens are a whole H x W grid, after p prefix tokens), or ``None`` with the reason.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass
from typing import Any

import torch
import torch.fx as fx
from torch import nn

LAYOUTS = ("nchw", "nhwc", "tokens")
"""Layouts a cut can have: channels-first maps, channels-last maps, token sequences."""

Atom = tuple[str, int, int, int]
"""(role, stride, size, total): the part ``(i // stride) % size`` of a role's index of length ``total``."""


@dataclass(frozen=True)
class Axis:
    """One tensor axis: its atoms (None: unknown) and, on a token axis, the prefix (class) tokens."""

    atoms: tuple[Atom, ...] | None
    prefix: int = 0


Axes = tuple[Axis, ...]
UNKNOWN = Axis(None)

_RESHAPES = {"reshape", "view", "flatten", "unflatten", "squeeze", "unsqueeze", "view_as", "reshape_as"}
_SPATIAL_MODULES: tuple[type[nn.Module], ...] = (nn.modules.conv._ConvNd,)


def whole(role: str, size: int) -> Axis:
    """A whole axis of ``role`` with ``size`` elements."""
    return Axis(((role, 1, size, size),))


def role_of(axis: Axis) -> str | None:
    """The role of a whole axis (``B``, ``C``, ``H``, ``W``), else None."""
    if axis.atoms is None or len(axis.atoms) != 1 or axis.prefix:
        return None
    role, stride, size, total = axis.atoms[0]
    return role if stride == 1 and size == total else None


def grid_of(axis: Axis) -> tuple[int, int] | None:
    """(H, W) when the axis is a token axis: a whole H x W grid, after ``axis.prefix`` tokens."""
    a = axis.atoms
    if a is None or len(a) != 2 or [x[0] for x in a] != ["H", "W"]:
        return None
    if any(stride != 1 or size != total for _, stride, size, total in a):
        return None
    return a[0][2], a[1][2]


def describe(axis: Axis) -> str:
    """Short text for an axis: ``C``, ``H*W`` (+prefix), ``H/8*W/8``, ``?`` ..."""
    if axis.atoms is None:
        return "?"
    if not axis.atoms:
        return "1"
    parts = []
    for role, stride, size, total in axis.atoms:
        parts.append(role if stride == 1 and size == total else f"{role}[{size}/{total}]")
    text = "*".join(parts)
    return f"{axis.prefix}+{text}" if axis.prefix else text


def classify(axes: Axes | None, shape: tuple[int, ...]) -> tuple[str | None, int, str]:
    """``(layout, prefix tokens, reason)`` of a tensor with ``axes`` and ``shape`` (batch included).

    ``layout`` is None when the tensor is not a feature map; ``reason`` then says why.
    """
    rank = len(shape)
    if rank not in (3, 4):
        return None, 0, f"a {rank}-D tensor is not a feature map"
    if axes is None or len(axes) != rank:
        return None, 0, "its layout cannot be established (an op whose effect on the axes is not modelled)"
    text = "[" + ", ".join(describe(a) for a in axes) + "]"
    if role_of(axes[0]) != "B":
        return None, 0, f"axes {text}: the batch axis is mixed with other axes"
    roles = [role_of(a) for a in axes[1:]]
    if roles == ["C", "H", "W"]:
        return "nchw", 0, ""
    if roles == ["H", "W", "C"]:
        return "nhwc", 0, ""
    if rank == 3 and grid_of(axes[1]) is not None and roles[1] == "C":
        return "tokens", axes[1].prefix, ""
    if rank == 3 and grid_of(axes[2]) is not None and roles[0] == "C":
        return None, 0, f"axes {text}: a channels-first token sequence [B, D, N] (not a supported layout)"
    return None, 0, f"axes {text}: not N,C,H,W, N,H,W,C or N,tokens,D (e.g. a window partition)"


def infer_axes(gm: fx.GraphModule) -> dict[fx.Node, Axes | None]:
    """The axes of every node of a shape-propagated ``gm`` whose single input is an image batch."""
    axes: dict[fx.Node, Axes | None] = {}
    for n in gm.graph.nodes:
        shape = _shape(n)
        try:
            out = _node_axes(n, gm, axes, shape) if shape is not None else None
        except (
            TypeError,
            ValueError,
            IndexError,
            KeyError,
            AttributeError,
            AssertionError,
            ZeroDivisionError,
        ):
            out = None  # unusual argument forms: the layout is unknown, never an error
        if out is not None and (shape is None or len(out) != len(shape)):
            out = None
        axes[n] = out
    return axes


def _shape(n: fx.Node) -> tuple[int, ...] | None:
    meta = n.meta.get("tensor_meta")
    if meta is None or not hasattr(meta, "shape"):
        return None
    return tuple(int(s) for s in meta.shape)


def _name(n: fx.Node) -> str:
    if n.op == "call_method":
        return str(n.target)
    if n.op == "call_function":
        return str(getattr(n.target, "__name__", ""))
    return ""


def _node_axes(
    n: fx.Node, gm: fx.GraphModule, known: dict[fx.Node, Axes | None], shape: tuple[int, ...]
) -> Axes | None:
    if n.op == "placeholder":
        if len(shape) == 4:
            return (whole("B", shape[0]), whole("C", shape[1]), whole("H", shape[2]), whole("W", shape[3]))
        return (whole("B", shape[0]), *[UNKNOWN] * (len(shape) - 1)) if shape else None
    if n.op in ("get_attr", "output"):
        return None
    src = n.args[0] if n.args and isinstance(n.args[0], fx.Node) else None
    src_axes = known.get(src) if src is not None else None
    src_shape = _shape(src) if src is not None else None
    name = _name(n)
    if n.op == "call_module":
        mod = gm.get_submodule(str(n.target))
        if isinstance(mod, _SPATIAL_MODULES):
            return _conv(src_axes, src_shape, shape)
        if isinstance(mod, nn.Linear):
            return _linear(src_axes, src_shape, shape)
        if isinstance(mod, nn.Flatten):
            return _reshape(src_axes, src_shape, shape)
    elif name in ("conv1d", "conv2d", "conv3d"):
        return _conv(src_axes, src_shape, shape)
    elif name == "linear":
        return _linear(src_axes, src_shape, shape)
    elif name == "permute" and src_axes is not None:
        dims = _dims(n, "dims")
        return tuple(src_axes[d % len(src_axes)] for d in dims)
    elif name in ("transpose", "swapaxes", "swapdims") and src_axes is not None:
        pair: list[Any] = list(n.args[1:3]) if len(n.args) >= 3 else [n.kwargs["dim0"], n.kwargs["dim1"]]
        a, b = (int(d) % len(src_axes) for d in pair)
        out = list(src_axes)
        out[a], out[b] = out[b], out[a]
        return tuple(out)
    elif name in _RESHAPES:
        return _reshape(src_axes, src_shape, shape)
    elif name in ("cat", "concat", "concatenate"):
        return _cat(n, known, shape)
    elif n.op == "call_function" and n.target is operator.getitem and src is not None:
        if src_shape is not None:
            return _index(src_axes, src_shape, n.args[1], shape)
        return _generic(shape, _tensor_inputs(src, known))  # an element of a tuple (e.g. attention output)
    return _generic(shape, _tensor_inputs(n, known))


def _dims(n: fx.Node, key: str) -> list[int]:
    rest: list[Any] = list(n.args[1:])
    if len(rest) == 1 and isinstance(rest[0], (list, tuple)):
        rest = list(rest[0])
    if not rest and key in n.kwargs:
        rest = list(n.kwargs[key])  # type: ignore[arg-type]  # a sequence of ints when given
    return [int(d) for d in rest]


def _tensor_inputs(
    n: fx.Node, known: dict[fx.Node, Axes | None]
) -> list[tuple[Axes | None, tuple[int, ...]]]:
    out: list[tuple[Axes | None, tuple[int, ...]]] = []
    for a in n.all_input_nodes:
        s = _shape(a)
        if s is not None:
            out.append((known.get(a), s))
    return out


def _generic(shape: tuple[int, ...], inputs: list[tuple[Axes | None, tuple[int, ...]]]) -> Axes | None:
    """Shape-keeping ops keep the axes; rank-keeping ops that only resize whole C/H/W axes keep roles."""
    known = [(a, s) for a, s in inputs if a is not None]
    same = [a for a, s in known if s == shape]
    if same:
        return same[0] if all(a == same[0] for a in same) else None
    if not known or len(known[0][1]) != len(shape):
        return None
    axes, in_shape = known[0]
    out = []
    for ax, si, so in zip(axes, in_shape, shape, strict=True):
        role = role_of(ax)
        if si == so:
            out.append(ax)
        elif role in ("C", "H", "W"):
            out.append(whole(role, so))
        else:
            return None
    return tuple(out)


def _conv(axes: Axes | None, in_shape: tuple[int, ...] | None, shape: tuple[int, ...]) -> Axes | None:
    """A convolution: batch kept, a new whole C, its spatial axes (whole H/W) resized."""
    if axes is None or in_shape is None or len(in_shape) != len(shape) or role_of(axes[0]) != "B":
        return None
    spatial = [role_of(a) for a in axes[2:]]
    if any(r not in ("H", "W") for r in spatial):
        return None
    return (
        axes[0],
        whole("C", shape[1]),
        *[whole(str(r), s) for r, s in zip(spatial, shape[2:], strict=True)],
    )


def _linear(axes: Axes | None, in_shape: tuple[int, ...] | None, shape: tuple[int, ...]) -> Axes | None:
    """``Linear`` mixes the last axis: a new whole C when that axis was channels (or unknown)."""
    if axes is None or in_shape is None or len(in_shape) != len(shape):
        return None
    last = axes[-1]
    new = whole("C", shape[-1]) if last.atoms is None or role_of(last) == "C" else UNKNOWN
    return (*axes[:-1], new)


def _reshape(axes: Axes | None, in_shape: tuple[int, ...] | None, shape: tuple[int, ...]) -> Axes | None:
    """Split and merge atoms in row-major order to go from ``in_shape`` to ``shape``."""
    if axes is None or in_shape is None or math.prod(in_shape) != math.prod(shape):
        return None
    # an unknown axis or a token axis with prefix tokens moves only as one piece
    stream: list[Atom | _Piece] = []
    for ax, s in zip(axes, in_shape, strict=True):
        if s == 1:
            continue
        if ax.atoms is None or ax.prefix:
            stream.append(_Piece(ax, s))
        else:
            stream.extend(a for a in ax.atoms if a[2] > 1)
    out: list[Axis] = []
    for o in shape:
        taken: list[Atom | _Piece] = []
        prod = 1
        while prod < o:
            if not stream:
                return None
            item = stream.pop(0)
            size = item.size if isinstance(item, _Piece) else item[2]
            if o % (prod * size) == 0:
                taken.append(item)
                prod *= size
                continue
            need = o // prod
            if o % prod or isinstance(item, _Piece) or size % need:
                return None
            role, stride, _, total = item
            taken.append((role, stride * (size // need), need, total))
            stream.insert(0, (role, stride, size // need, total))
            prod *= need
        if prod != o:
            return None
        out.append(_merge(taken))
    return tuple(out) if not stream else None


@dataclass(frozen=True)
class _Piece:
    """An axis that a reshape may only move whole (unknown, or a token axis with prefix tokens)."""

    axis: Axis
    size: int


def _merge(items: list[Atom | _Piece]) -> Axis:
    if any(isinstance(i, _Piece) for i in items):
        only = items[0]
        return only.axis if len(items) == 1 and isinstance(only, _Piece) else UNKNOWN
    atoms: list[Atom] = []
    for a in items:
        assert not isinstance(a, _Piece)
        if atoms:
            role, stride, size, total = atoms[-1]
            if role == a[0] and total == a[3] and stride == a[1] * a[2]:
                atoms[-1] = (role, a[1], size * a[2], total)
                continue
        atoms.append(a)
    # channels in another order (a channel shuffle) are still the channel axis
    if len(atoms) > 1 and all(a[0] == "C" for a in atoms) and math.prod(a[2] for a in atoms) == atoms[0][3]:
        return whole("C", atoms[0][3])
    return Axis(tuple(atoms))


def _cat(n: fx.Node, known: dict[fx.Node, Axes | None], shape: tuple[int, ...]) -> Axes | None:
    parts = n.args[0] if n.args else n.kwargs.get("tensors")
    dim: Any = n.args[1] if len(n.args) > 1 else n.kwargs.get("dim", 0)
    if not isinstance(parts, (list, tuple)) or not all(isinstance(p, fx.Node) for p in parts):
        return None
    d = int(dim) % len(shape)
    items = [(known.get(p), _shape(p)) for p in parts]
    main = next((i for i in range(len(items) - 1, -1, -1) if items[i][0] is not None), None)
    if main is None:
        return None
    axes = items[main][0]
    assert axes is not None
    others = [a for a, _ in items if a is not None]
    rest_equal = all(tuple(a[:d] + a[d + 1 :]) == tuple(axes[:d] + axes[d + 1 :]) for a in others)
    roles = {role_of(a[d]) for a in others}
    if rest_equal and len(others) == len(items) and len(roles) == 1 and None not in roles:
        new = whole(str(roles.pop()), shape[d])  # e.g. DenseNet / Inception channel concatenation
    elif grid_of(axes[d]) is not None and main == len(items) - 1:
        before = sum(s[d] for _, s in items[:main] if s is not None)
        new = Axis(axes[d].atoms, axes[d].prefix + before)  # class / distillation tokens in front
    else:
        new = UNKNOWN
    return (*axes[:d], new, *axes[d + 1 :])


def _index(axes: Axes | None, in_shape: tuple[int, ...], index: Any, shape: tuple[int, ...]) -> Axes | None:
    """``x[...]`` with ints, full slices, Ellipsis and None; dropping prefix tokens keeps the token axis."""
    if axes is None:
        return None
    idx = index if isinstance(index, tuple) else (index,)
    consumed = sum(1 for i in idx if i is not None and i is not Ellipsis)
    out: list[Axis] = []
    pos = 0
    for it in idx:
        if it is None:
            out.append(Axis(()))
        elif it is Ellipsis:
            k = len(axes) - consumed
            out.extend(axes[pos : pos + k])
            pos += k
        elif isinstance(it, int) and not isinstance(it, bool):
            pos += 1
        elif isinstance(it, slice):
            out.append(_slice(axes[pos], in_shape[pos], it))
            pos += 1
        else:
            return None
    out.extend(axes[pos:])
    return tuple(out)


def _slice(axis: Axis, size: int, s: slice) -> Axis:
    start, stop, step = s.start, s.stop, s.step
    if not all(v is None or isinstance(v, int) for v in (start, stop, step)):
        return UNKNOWN
    start, stop, step = slice(start, stop, step).indices(size)
    if (start, stop, step) == (0, size, 1):
        return axis
    if step == 1 and stop == size and grid_of(axis) is not None and 0 < start <= axis.prefix:
        return Axis(axis.atoms, axis.prefix - start)
    return UNKNOWN


EXAMPLE_BATCH = 2
"""The batch the graph's shapes are propagated with: 2, so the batch axis is never a size-1 axis."""


def example_input(input_shape: tuple[int, ...], batch: int = EXAMPLE_BATCH) -> torch.Tensor:
    """Zeros of ``[batch, *input_shape]``: the example the graph's shapes are propagated with."""
    return torch.zeros(batch, *input_shape)
