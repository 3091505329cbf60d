"""The Triton model repository of a bundle (``OUT/triton/``): one Triton model per exported tail.

    OUT/triton/01-features.3/config.pbtxt              platform onnxruntime_onnx (the default config)
    OUT/triton/01-features.3/configs/tensorrt.pbtxt    TensorRT targets: platform tensorrt_plan
    OUT/triton/01-features.3/1/model.onnx              the tail ONNX (the same graph and tensors)
    OUT/triton/01-features.3/1/float32-<sha>.bin       the bundle's pack (shared layout), hard-linked

The configs are Triton's ``ModelConfig`` protobuf (``tritonclient.grpc.model_config_pb2``) written
with ``google.protobuf.text_format``. The tail takes the boundary exactly as the head sends it
(``boundary``: UINT8, FP16 or FP32) and the codec's dequantisation stays inside the ONNX, so the
server needs nothing else. Triton, like onnx and onnxruntime, refuses external-data locations that
leave the model folder (``../``), so a tail of the shared layout cannot point into ``OUT/weights/``:
each pack it reads is hard-linked into the version folder, so every weight is stored once. Where the
file system refuses a hard link, the tail's own tensors are copied into ``1/model.weights.bin``
instead (the manifest's ``weights_stored`` says ``copy``). onnxruntime (and so Triton's onnxruntime
backend) reads hard-linked external data; the onnx package's loader and checker refuse it as a
possible hard-link attack, so ``onnx.load`` a bundle file with ``load_external_data=False`` or from a
copy (``cp -r`` makes one). An inline tail is copied byte for byte. The manifest hashes every file of
the repository like any other.

``tritonserver --model-repository OUT/triton`` serves the ONNX variant (onnxruntime backend, CUDA
when the server has a GPU: instance kind ``KIND_AUTO``, the default). For TensorRT targets,
``configs/tensorrt.pbtxt`` is the TensorRT variant, selected with ``--model-config-name=tensorrt``
(Triton's custom model configurations): it loads ``1/model.plan``, a tail engine that must be built on
the server's GPU (an engine runs only on the GPU and TensorRT version that built it), see
``docs/serving.md``. Everything here is deterministic, so the bundle stays byte-reproducible.
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import onnx
from onnx import TensorProto

from isplit_export.contract import MAX_BATCH_SIZE, Split, load_engine_plan
from isplit_export.errors import BadInputError, TechnicalError

TRITON_DIR = "triton"
"""The Triton model repository inside a bundle (``OUT/triton/``)."""

_NAME_BAD = re.compile(r"[^A-Za-z0-9_.-]")


def model_name(entry: Split) -> str:
    """The served model name of a split entry: its folder name (``01-features.3``), Triton-safe."""
    base = entry.dir.rstrip("/").rsplit("/", 1)[-1]
    return _NAME_BAD.sub("_", base)


def entry_tail(entry: Split) -> str:
    """The bundle-relative path of a split entry's tail ONNX."""
    rel = entry.files.get("tail")
    if rel is None:
        raise BadInputError(f"split {entry.dir} has no tail file: rebuild the bundle")
    return rel


MAX_QUEUE_DELAY_US = 100
"""Dynamic batching waits at most 100 µs for company: negligible next to a network hop."""
VERSION = "1"
WEIGHTS_FILE = "model.weights.bin"
"""The tail's own weights next to ``model.onnx`` (ONNX external data), when the bundle shares its packs."""
MIN_EXTERNAL_BYTES = 1024
"""As the shared layout: smaller tensors stay inside ``model.onnx``."""
TENSORRT_CONFIG = "tensorrt"
"""Name of the TensorRT variant (``configs/tensorrt.pbtxt``, ``--model-config-name=tensorrt``)."""
SERVER_KINDS = ("jetson", "server")
"""Target kinds whose bundles get a repository by default: the tail runs on a server (or is one)."""

TRITON_TYPES: dict[int, str] = {
    TensorProto.FLOAT: "TYPE_FP32",
    TensorProto.FLOAT16: "TYPE_FP16",
    TensorProto.DOUBLE: "TYPE_FP64",
    TensorProto.UINT8: "TYPE_UINT8",
    TensorProto.INT8: "TYPE_INT8",
    TensorProto.INT32: "TYPE_INT32",
    TensorProto.INT64: "TYPE_INT64",
    TensorProto.BOOL: "TYPE_BOOL",
}
"""ONNX element type -> Triton model-config ``data_type``."""


def wants_repository(target_kind: str, flag: bool | None) -> bool:
    """``--triton`` / ``--no-triton`` decide; by default the bundles whose tail runs on a server."""
    return flag if flag is not None else target_kind in SERVER_KINDS


def tensor_spec(path: Path, *, output: bool) -> tuple[str, str, list[int]]:
    """(name, Triton data_type, dims with -1 for a dynamic axis) of an ONNX model's only input/output."""
    model = onnx.load(str(path), load_external_data=False)
    values = model.graph.output if output else model.graph.input
    inits = {i.name for i in model.graph.initializer}
    values = [v for v in values if v.name not in inits]
    if len(values) != 1:
        what = "outputs" if output else "inputs"
        raise TechnicalError(f"{path.name} has {len(values)} {what}, a Triton tail model needs exactly 1")
    v = values[0]
    elem = v.type.tensor_type.elem_type
    if elem not in TRITON_TYPES:
        raise TechnicalError(f"{path.name}: {v.name} has ONNX element type {elem}, which Triton cannot serve")
    dims = [
        d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else -1
        for d in v.type.tensor_type.shape.dim
    ]
    return v.name, TRITON_TYPES[elem], dims


def _batched(dims: list[int]) -> tuple[int, list[int]]:
    """(max_batch_size, dims without the batch axis) for a dynamic first axis, else (0, dims)."""
    if dims and dims[0] == -1:
        return MAX_BATCH_SIZE, dims[1:]
    return 0, dims


def config_text(
    name: str,
    platform: str,
    inp: tuple[str, str, list[int]],
    out: tuple[str, str, list[int]],
    *,
    max_batch: int,
    kind: str,
    comment: str,
    model_file: str | None = None,
) -> str:
    """A ``config.pbtxt``: Triton's ``ModelConfig`` protobuf in text format, after one comment line."""
    # lazy: serve and run read model names here and must not need tritonclient's gRPC stubs
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2 as mc

    config = mc.ModelConfig(name=name, platform=platform, max_batch_size=max_batch)
    if model_file is not None:
        config.default_model_filename = model_file
    for spec, tensors in ((inp, config.input), (out, config.output)):
        tensor = tensors.add()
        tensor.name = spec[0]
        tensor.data_type = mc.DataType.Value(spec[1])
        tensor.dims.extend(spec[2][1:] if max_batch else spec[2])
    if max_batch:
        config.dynamic_batching.max_queue_delay_microseconds = MAX_QUEUE_DELAY_US
    group = config.instance_group.add()
    group.count = 1
    group.kind = mc.ModelInstanceGroup.Kind.Value(kind)
    return f"# {comment}\n" + text_format.MessageToString(config)


def external_locations(path: Path) -> list[str]:
    """The distinct external-data files an ONNX model reads, relative to its folder, in order."""
    model = onnx.load(str(path), load_external_data=False)
    seen: list[str] = []
    for t in model.graph.initializer:
        if t.data_location != TensorProto.EXTERNAL:
            continue
        loc = next((e.value for e in t.external_data if e.key == "location"), None)
        p = PurePosixPath(loc) if loc else None
        if p is None or p.is_absolute() or ".." in p.parts:
            raise TechnicalError(f"{path.name}: external data location {loc!r} leaves the model folder")
        if loc not in seen:
            seen.append(str(loc))
    return seen


def _follow_umask(path: Path) -> None:
    """Give ``path`` the mode a plain new file gets (0666 minus the umask), as every bundle file has."""
    mask = os.umask(0)
    os.umask(mask)
    path.chmod(0o666 & ~mask)


def _tensorrt_variant(root: Path, entry: Split, name: str) -> dict[str, Any] | None:
    """Write ``configs/tensorrt.pbtxt`` from the split's engine plan; None when it has no plan."""
    if "engine_plan_json" not in entry.files:
        return None
    plan = load_engine_plan(root, entry.dir)  # the bundle being built: contained paths, typed fields
    tail = plan.tail
    onnx_path = tail.onnx  # the split folder's ONNX path, resolved (may be ../../x.onnx)
    engine = (PurePosixPath(entry.dir) / tail.engine_rel).as_posix()
    onnx_rel = onnx_path.relative_to(root.resolve()).as_posix()
    inp = tensor_spec(onnx_path, output=False)
    out = tensor_spec(onnx_path, output=True)
    max_batch = int(tail.max_shape[0]) if inp[2] and inp[2][0] == -1 else 0
    text = config_text(
        name,
        "tensorrt_plan",
        inp,
        out,
        max_batch=max_batch,
        kind="KIND_GPU",
        model_file="model.plan",
        comment=(
            f"TensorRT variant ({plan.precision}) of split {entry.dir}: select it with "
            f"tritonserver --model-config-name={TENSORRT_CONFIG}; it loads {VERSION}/model.plan, a tail "
            f"engine that must be built on this server's GPU from {onnx_rel} (an engine runs only on "
            "the GPU and TensorRT version that built it: one built on the device does not load here)"
        ),
    )
    rel = f"{TRITON_DIR}/{name}/configs/{TENSORRT_CONFIG}.pbtxt"
    (root / rel).parent.mkdir(parents=True, exist_ok=True)
    (root / rel).write_text(text, encoding="utf-8")
    return {
        "config": rel,
        "engine": engine,
        "install_to": f"{TRITON_DIR}/{name}/{VERSION}/model.plan",
        "precision": plan.precision,
        "input": {"name": inp[0], "data_type": inp[1], "dims": inp[2]},
    }


def _write_tail(tail: Path, vdir: Path) -> tuple[list[str], str]:
    """Write ``vdir/model.onnx`` for the bundle's ``tail``; returns its weight files and how they are stored.

    A tail of the shared layout reads the bundle's packs: each pack it uses is hard-linked into
    ``vdir`` under its own name (``"hard link"``: the bytes stay on disk once) and ``model.onnx`` is the
    tail with its locations renamed. Where the file system refuses hard links, the tail's own tensors
    are copied into ``vdir/model.weights.bin`` (``"copy"``). An inline tail is copied byte for byte
    (``"inline"``).
    """
    packs = external_locations(tail)
    if not packs:
        shutil.copyfile(tail, vdir / "model.onnx")
        return [], "inline"
    try:
        for loc in packs:
            os.link(tail.parent / loc, vdir / PurePosixPath(loc).name)
    except OSError:
        for loc in packs:
            (vdir / PurePosixPath(loc).name).unlink(missing_ok=True)
    else:
        model_proto = onnx.load(str(tail), load_external_data=False)
        for tensor in model_proto.graph.initializer:
            for entry in tensor.external_data:
                if entry.key == "location":
                    entry.value = PurePosixPath(entry.value).name
        (vdir / "model.onnx").write_bytes(model_proto.SerializeToString(deterministic=True))
        return [PurePosixPath(loc).name for loc in packs], "hard link"
    model_proto = onnx.load(str(tail))  # reads its tensors from the packs
    onnx.save_model(
        model_proto,
        str(vdir / "model.onnx"),
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location=WEIGHTS_FILE,
        size_threshold=MIN_EXTERNAL_BYTES,
    )
    _follow_umask(vdir / WEIGHTS_FILE)  # onnx creates it 0600
    return [WEIGHTS_FILE], "copy"


def write_repository(root: Path, splits: Sequence[Split], *, model: str) -> dict[str, Any]:
    """Write ``root/triton/`` for the split entries (before the manifest is hashed); returns its manifest block.

    ``root`` is the bundle being built; each entry's ``files.tail`` is its tail ONNX (relative to
    ``root``), ``files.engine_plan_json`` (TensorRT targets) its build plan.
    """
    models: list[dict[str, Any]] = []
    names: set[str] = set()
    for entry in splits:
        name = model_name(entry)
        if name in names:
            raise BadInputError(f"two splits map to the Triton model name {name}: rebuild with distinct cuts")
        names.add(name)
        tail = root / entry_tail(entry)
        inp, out = tensor_spec(tail, output=False), tensor_spec(tail, output=True)
        max_batch, _ = _batched(inp[2])
        vdir = root / TRITON_DIR / name / VERSION
        vdir.mkdir(parents=True)
        weights, stored = _write_tail(tail, vdir)
        linked = [(vdir / w).relative_to(root).as_posix() for w in weights]
        text = config_text(
            name,
            "onnxruntime_onnx",
            inp,
            out,
            max_batch=max_batch,
            kind="KIND_AUTO",
            comment=f"{model} tail of split {entry.dir} (boundary -> logits), written by isplit-export",
        )
        (root / TRITON_DIR / name / "config.pbtxt").write_text(text, encoding="utf-8")
        record: dict[str, Any] = {
            "split": entry.dir,
            "name": name,
            "platform": "onnxruntime_onnx",
            "config": f"{TRITON_DIR}/{name}/config.pbtxt",
            "model": f"{TRITON_DIR}/{name}/{VERSION}/model.onnx",
            "weights": linked,
            "weights_stored": stored,
            "max_batch_size": max_batch,
            "input": {"name": inp[0], "data_type": inp[1], "dims": inp[2]},
            "output": {"name": out[0], "data_type": out[1], "dims": out[2]},
        }
        trt = _tensorrt_variant(root, entry, name)
        if trt is not None:
            record["tensorrt"] = trt
        models.append(record)
    return {"repository": TRITON_DIR, "version": VERSION, "models": models}
