"""DLA capability check (targets/dla.py) on hand-built ONNX graphs and on real model heads, and the plan's choice.

Each hand-built graph has exactly one node the DLA cannot run (a kernel over the limit, an activation
the DLA lacks, a dynamic dimension, ...): the report must name that node and the restriction it breaks,
and count every other node as on the DLA. The model-head tests export real heads (weights none) and
check the fraction the rules give and what the plan does with it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from isplit_export.targets.dla import check_model, choose_device
from isplit_export.targets.engine_build import ENGINE_BUILD_FILE, write_engine_build
from isplit_export.targets.profiles import load_target

RNG = np.random.default_rng(0)


def _w(name: str, shape: tuple[int, ...]) -> onnx.TensorProto:
    return numpy_helper.from_array(RNG.standard_normal(shape).astype(np.float32), name)


def _model(
    nodes: list[onnx.NodeProto], inputs: list[onnx.ValueInfoProto], output: str, inits: list[onnx.TensorProto]
) -> onnx.ModelProto:
    graph = helper.make_graph(
        nodes, "g", inputs, [helper.make_tensor_value_info(output, TensorProto.FLOAT, None)], inits
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model = onnx.shape_inference.infer_shapes(model, strict_mode=True)  # fills in the output's shape
    onnx.checker.check_model(model)
    return model


def _x(shape: list[int | str]) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)


def _fallbacks(model: onnx.ModelProto) -> list[tuple[str, str, str]]:
    report = check_model(model)
    return [(f.node, f.op, f.reason) for f in report.fallback]


def test_a_supported_graph_runs_entirely_on_the_dla() -> None:
    model = _model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["c"], ["r"], name="relu"),
            helper.make_node("MaxPool", ["r"], ["y"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        ],
        [_x([1, 3, 16, 16])],
        "y",
        [_w("w", (8, 3, 3, 3))],
    )
    report = check_model(model)
    assert (report.layers, report.on_dla, report.fallback, report.fraction) == (3, 3, [], 1.0)


def test_kernel_over_the_limit_is_named() -> None:
    model = _model(
        [
            helper.make_node(
                "Conv", ["x", "w1"], ["a"], name="small", kernel_shape=[3, 3], pads=[1, 1, 1, 1]
            ),
            helper.make_node(
                "Conv", ["a", "w2"], ["y"], name="huge", kernel_shape=[33, 33], pads=[16, 16, 16, 16]
            ),
        ],
        [_x([1, 3, 40, 40])],
        "y",
        [_w("w1", (4, 3, 3, 3)), _w("w2", (4, 4, 33, 33))],
    )
    [(node, op, reason)] = _fallbacks(model)
    assert (node, op) == ("huge", "Conv")
    assert "kernel [33, 33] outside [1,32]" in reason


def test_unsupported_activation_is_named() -> None:
    model = _model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[1, 1]),
            helper.make_node("HardSwish", ["c"], ["h"], name="hswish"),
            helper.make_node("Relu", ["h"], ["y"], name="relu"),
        ],
        [_x([1, 3, 8, 8])],
        "y",
        [_w("w", (4, 3, 1, 1))],
    )
    [(node, op, reason)] = _fallbacks(model)
    assert (node, op) == ("hswish", "HardSwish")
    assert "not among the DLA supported layers" in reason


def test_dynamic_dimension_is_named() -> None:
    """A dynamic batch (leading) axis is fine (the DLA profile fixes it); a dynamic width is not."""
    model = _model(
        [
            helper.make_node("Relu", ["x"], ["a"], name="static_relu"),
            helper.make_node("Sigmoid", ["z"], ["b"], name="dynamic_sigmoid"),
            helper.make_node("Add", ["a", "b"], ["y"], name="add"),
        ],
        [
            _x(["batch", 4, 8, 8]),
            helper.make_tensor_value_info("z", TensorProto.FLOAT, ["batch", 4, 8, "width"]),
        ],
        "y",
        [],
    )
    got = _fallbacks(model)
    assert next(g[0] for g in got) == "dynamic_sigmoid"
    assert "dynamic dimension in z" in got[0][2] and "static shapes" in got[0][2]
    assert "static_relu" not in [g[0] for g in got]


@pytest.mark.parametrize(
    ("node", "inits", "expected"),
    [
        (
            helper.make_node("MaxPool", ["x"], ["y"], name="n", kernel_shape=[9, 9]),
            [],
            "window [9, 9] outside [1,8]",
        ),
        (
            helper.make_node("Conv", ["x", "w"], ["y"], name="n", kernel_shape=[3, 3], strides=[9, 9]),
            [_w("w", (4, 4, 3, 3))],
            "stride [9, 9] outside [1,8]",
        ),
        (helper.make_node("Concat", ["x", "x"], ["y"], name="n", axis=3), [], "channel axis"),
        (helper.make_node("GlobalAveragePool", ["x"], ["y"], name="n"), [], "no DLA implementation"),
        (helper.make_node("Div", ["x", "x"], ["y"], name="n"), [], "not among the DLA supported layers"),
    ],
)
def test_pooling_stride_concat_and_elementwise_limits(
    node: onnx.NodeProto, inits: list[onnx.TensorProto], expected: str
) -> None:
    [(name, _, reason)] = _fallbacks(_model([node], [_x([1, 4, 32, 32])], "y", inits))
    assert name == "n" and expected in reason


def test_constant_subgraphs_and_qdq_are_not_layers() -> None:
    """TensorRT folds constant-only nodes and fuses Q/DQ: they count neither for nor against the DLA."""
    scale = numpy_helper.from_array(np.array(0.1, np.float32), "s")
    zero = numpy_helper.from_array(np.array(0, np.int8), "z")
    model = _model(
        [
            helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"], name="q"),
            helper.make_node("DequantizeLinear", ["q", "s", "z"], ["dq"], name="dq"),
            helper.make_node("Mul", ["w", "s"], ["w2"], name="fold_me"),
            helper.make_node("Conv", ["dq", "w2"], ["y"], name="conv", kernel_shape=[1, 1]),
        ],
        [_x([1, 3, 8, 8])],
        "y",
        [_w("w", (4, 3, 1, 1)), scale, zero],
    )
    report = check_model(model)
    assert (report.layers, report.on_dla) == (1, 1)


def test_choose_device_follows_the_fraction() -> None:
    model = _model(
        [
            helper.make_node("Relu", ["x"], ["a"], name="r1"),
            helper.make_node("HardSwish", ["a"], ["y"], name="hs"),
        ],
        [_x([1, 3, 8, 8])],
        "y",
        [],
    )
    report = check_model(model)
    keep, why = choose_device(report, 0.9)
    assert not keep and why.startswith("GPU: only 1/2 layers (50.0 %)") and "hs HardSwish" in why
    keep, why = choose_device(report, 0.5)
    assert keep and why.startswith("DLA: 1/2 layers") and "1 planned GPU fallback" in why


def test_plan_moves_a_mostly_unsupported_head_to_the_gpu(tmp_path: Path) -> None:
    model = _model(
        [
            helper.make_node("Conv", ["x", "w"], ["c"], name="conv", kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
            helper.make_node("HardSwish", ["c"], ["h"], name="hswish"),
            helper.make_node("Relu", ["h"], ["boundary"], name="relu"),
        ],
        [_x(["batch", 3, 16, 16])],
        "boundary",
        [_w("w", (4, 3, 3, 3))],
    )
    onnx.save(model, str(tmp_path / "head.onnx"))
    onnx.save(model, str(tmp_path / "tail.onnx"))
    for fraction, device in ((0.9, "gpu"), (0.5, "dla")):
        write_engine_build(
            tmp_path,
            load_target("jetson-orin-agx"),
            precision="fp16",
            head_onnx="head.onnx",
            tail_onnx="tail.onnx",
            input_shape=(1, 3, 16, 16),
            boundary_shape=(1, 4, 16, 16),
            min_dla_fraction=fraction,
        )
        plan = json.loads((tmp_path / ENGINE_BUILD_FILE).read_text())
        assert plan["engines"]["head"]["device"] == device == plan["dla"]["device"]
        assert plan["dla"]["fallback"] == [
            {"node": "hswish", "op": "HardSwish", "reason": "HardSwish is not among the DLA supported layers"}
        ]
        script = (tmp_path / "build_engines.sh").read_text()
        assert ("# DLA check: GPU: only 2/3 layers" in script) == (device == "gpu")
        if device == "dla":  # the planned fallback is allowed, one more fails the script
            assert "--allowGPUFallback" in plan["engines"]["head"]["trtexec"]
            assert 'if [ "${FALLBACK:-0}" -gt 1 ]; then' in script


def test_report_lines_show_the_version_and_the_dla_check(tmp_path: Path) -> None:
    from isplit_export.targets.engine_build import engine_build_lines, read_engine_build

    model = _model(
        [helper.make_node("HardSwish", ["x"], ["boundary"], name="hs")],
        [_x(["batch", 3, 8, 8])],
        "boundary",
        [],
    )
    onnx.save(model, str(tmp_path / "head.onnx"))
    onnx.save(model, str(tmp_path / "tail.onnx"))
    write_engine_build(
        tmp_path,
        load_target("jetson-orin-agx"),
        precision="fp16",
        head_onnx="head.onnx",
        tail_onnx="tail.onnx",
        input_shape=(1, 3, 8, 8),
        boundary_shape=(1, 3, 8, 8),
    )
    lines = engine_build_lines(read_engine_build(tmp_path))
    assert lines[0] == "  - written for TensorRT 10.3 (weakly typed)"
    assert lines[1].startswith("  - DLA check: 0/1 head layers can run on the DLA; GPU: only 0/1 layers")
    assert lines[2] == "    - `hs` (HardSwish): HardSwish is not among the DLA supported layers"
    assert engine_build_lines(None) == []
