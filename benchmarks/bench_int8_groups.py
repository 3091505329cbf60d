"""Which layers of a bottleneck bundle's INT8 pair cost accuracy: keep one group float at a time.

    .venv/bin/isplit-export isplit_export.zoo:digits_cnn --weights W --data D --top 1 --bottleneck 1/8 \\
        --target x86-tensorrt --out BUNDLE
    .venv/bin/python benchmarks/bench_int8_groups.py BUNDLE

For every split of ``BUNDLE`` (made with ``--bottleneck`` and an int8 target), the bundle's fp32 pair
is quantized as :func:`isplit_export.exporting.quantize.build_int8_pair` does (head calibrated on the
training images, tail on the quantized head's boundaries, the same ``--data``, seed and held-out
fraction as the export, read from the manifest), once per group kept float: the head's own layers,
the encoder, the decoder, the tail's own layers, the classifier, and the int8 Q/DQ around the code
(bypassed). Printed per row: the ``int8-qdq`` gate metrics of the pair against the full model and
against the fp32 bottleneck pair, and the held-out accuracy. The first row is the fp32 pair itself.
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import onnx

from isplit_export import contract
from isplit_export.bottleneck.holdout import split_holdout
from isplit_export.data import load_images
from isplit_export.exporting.encoding import (
    BoundaryEncoding,
    decode_tail,
    encode_head,
    strip_head_encoding,
    strip_tail_decoding,
)
from isplit_export.exporting.onnx_utils import make_session, run_session, save_model
from isplit_export.exporting.quantize import QUANTIZED_OP_TYPES, quantize_qdq
from isplit_export.models import load_model
from isplit_export.verification.gates import GATES
from isplit_export.verification.metrics import compare_logits


def _load(path: Path, bundle: Path) -> onnx.ModelProto:
    """A bundle ONNX file with its weights read from the packs (``weights/``).

    ``onnx.load`` refuses the packs when ``triton/`` hard-links them (a "potential hardlink attack"), so
    they are read here: each location must stay inside the bundle.
    """
    model = onnx.load(str(path), load_external_data=False)
    root = bundle.resolve()
    for tensor in model.graph.initializer:
        if tensor.data_location != onnx.TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in tensor.external_data}
        pack = (path.parent / info["location"]).resolve()
        if not pack.is_relative_to(root):
            raise SystemExit(f"{path}: weight location {info['location']} leaves the bundle")
        with pack.open("rb") as f:
            f.seek(int(info.get("offset", 0)))
            tensor.raw_data = f.read(int(info["length"])) if "length" in info else f.read()
        del tensor.external_data[:]
        tensor.ClearField("data_location")
    return model


def _pair(head: Path, tail: Path, x: np.ndarray) -> np.ndarray:
    h, t = make_session(head), make_session(tail)
    return np.concatenate(
        [run_session(t, {"boundary": run_session(h, {"input": x[i : i + 1]})[0]})[0] for i in range(len(x))]
    )


def _bypass(model: onnx.ModelProto, q_name: str, dq_name: str) -> None:
    """Remove the Q -> DQ pair ``q_name`` / ``dq_name``: DQ's consumers (or the graph output) read Q's input."""
    g = model.graph
    q = next(n for n in g.node if n.name == q_name)
    dq = next(n for n in g.node if n.name == dq_name)
    src, dst = q.input[0], dq.output[0]
    nodes = [n for n in g.node if n.name not in (q_name, dq_name)]
    del g.node[:]
    g.node.extend(nodes)
    if any(o.name == dst for o in g.output):  # the head: the producer of src now writes the output
        for n in g.node:
            n.output[:] = [dst if v == src else v for v in n.output]
            n.input[:] = [dst if v == src else v for v in n.input]
    else:
        for n in g.node:
            n.input[:] = [src if v == dst else v for v in n.input]


def _quantized_pair(
    head: onnx.ModelProto,
    tail: onnx.ModelProto,
    enc: BoundaryEncoding,
    x_train: np.ndarray,
    x: np.ndarray,
    head_float: Sequence[str],
    tail_float: Sequence[str],
    bypass_code: bool,
) -> np.ndarray:
    with tempfile.TemporaryDirectory() as tmp:
        w = Path(tmp)
        save_model(head, w / "h.onnx")
        save_model(tail, w / "t.onnx")
        quantize_qdq(w / "h.onnx", w / "hq.onnx", {"input": x_train}, keep_float=list(head_float))
        hs = make_session(w / "hq.onnx")
        b = np.concatenate([run_session(hs, {"input": x_train[i : i + 1]})[0] for i in range(len(x_train))])
        quantize_qdq(
            w / "t.onnx", w / "tq.onnx", {"boundary": b.astype(np.float32)}, keep_float=list(tail_float)
        )
        hq, tq = onnx.load(str(w / "hq.onnx")), onnx.load(str(w / "tq.onnx"))
        if bypass_code:
            for m in (hq, tq):
                if any(n.name == "boundary_QuantizeLinear" for n in m.graph.node):
                    _bypass(m, "boundary_QuantizeLinear", "boundary_DequantizeLinear")
        save_model(encode_head(hq, enc), w / "hqe.onnx")
        save_model(decode_tail(tq, enc), w / "tqe.onnx")
        return _pair(w / "hqe.onnx", w / "tqe.onnx", x)


def _row(label: str, y_full: np.ndarray, y_fp32: np.ndarray, y: np.ndarray, labels: np.ndarray) -> str:
    a, b = compare_logits(y_full, y), compare_logits(y_fp32, y)
    gate = GATES["int8-qdq"]
    verdict = "pass" if gate.check(a)[0] else "FAIL"
    acc = float((y.argmax(1) == labels).mean())
    return (
        f"{label:34s} vs full: {a['max_abs_rel']:.3f} / {a['cosine']:.4f} / {a['top1_agreement']:.2f} {verdict:4s} | "
        f"vs fp32 pair: {b['max_abs_rel']:.3f} / {b['cosine']:.4f} / {b['top1_agreement']:.2f} "
        f"{'pass' if gate.check(b)[0] else 'FAIL'} | accuracy {acc:.2f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("bundle", type=Path)
    args = ap.parse_args()
    m = contract.read_manifest(args.bundle)
    opts = m.options
    if opts.model is None or opts.data is None or opts.seed is None:
        raise SystemExit(
            f"{args.bundle}: the manifest records no model, data or seed: export with this version"
        )
    spec = load_model(opts.model, opts.weights)
    images = load_images(Path(opts.data), spec.preprocessing, class_names=spec.class_names)
    x_all, _, names = images.tensor(limit=opts.verify_images)
    calibration = contract.load_calibration(
        args.bundle / "calibration" / "inputs.npz", "calibration/inputs.npz"
    )
    x, labels = calibration.input, calibration.labels
    y_full = run_session(make_session(args.bundle / "full.onnx"), {"input": x})[0]
    print("max_abs_rel / cosine / top-1 agreement; gate int8-qdq:", GATES["int8-qdq"].to_json())
    for split in m.splits:
        if split.holdout is None:
            continue  # not a bottleneck split: nothing was trained, nothing to hold out
        train_idx, _ = split_holdout(names, split.holdout, opts.seed)
        x_train = x_all[train_idx].numpy()
        enc = BoundaryEncoding.from_json(split.boundary.to_json())
        head_file = contract.split_file(m, args.bundle, split, "head")
        tail_file = contract.split_file(m, args.bundle, split, "tail")
        head = strip_head_encoding(_load(head_file, args.bundle))
        tail = strip_tail_decoding(_load(tail_file, args.bundle))
        hn = [n.name for n in head.graph.node if n.op_type in QUANTIZED_OP_TYPES]
        tn = [n.name for n in tail.graph.node if n.op_type in QUANTIZED_OP_TYPES]
        # the decoder's de-normalisation is folded into its conv by onnxruntime's pre-processing
        enc_nodes = [n for n in hn if n.startswith("/encoder/")]
        dec_nodes = [n for n in tn if n.startswith("/decoder/") and "/denorm/" not in n]
        groups: list[tuple[str, Sequence[str], Sequence[str], bool]] = [
            ("nothing (all int8)", (), (), False),
            ("head backbone", [n for n in hn if n.startswith("/head/")], (), False),
            ("encoder", enc_nodes, (), False),
            ("decoder", (), dec_nodes, False),
            ("encoder + decoder", enc_nodes, dec_nodes, False),
            ("tail backbone", (), [n for n in tn if n.startswith("/tail/")], False),
            ("tail Gemm (logits)", (), [n for n in tn if n.startswith("/tail/") and "Gemm" in n], False),
            ("the code's int8 Q/DQ (bypassed)", (), (), True),
        ]
        y_fp32 = _pair(head_file, tail_file, x)
        code = list(split.boundary.shape)
        print(f"\n{split.dir} (code {code}, {split.boundary.bytes_per_image} B/image), kept float:")
        print(_row("everything (the fp32 pair)", y_full, y_fp32, y_fp32, labels))
        for label, hf, tf, bypass in groups:
            y = _quantized_pair(head, tail, enc, x_train, x, hf, tf, bypass)
            print(_row(label, y_full, y_fp32, y, labels), flush=True)


if __name__ == "__main__":
    main()
