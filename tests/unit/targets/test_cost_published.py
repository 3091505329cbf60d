"""The cost model held to published Jetson measurements (each figure's source: isplit_export/profiles/README.md).

ResNet-50 v1.5, 224x224, INT8, as counted by the tool (``graph.trace``: 8,204,815,360 FLOPs, 2 x MACs).
The model's estimate is FLOPs / the profile's effective rate; every check allows 25 %.

- GPU, batch 1: MLPerf Inference v3.1, closed, edge, SingleStream p90 latency (JetPack 5.1.1,
  TensorRT 8.5.2): Jetson AGX Orin 64GB 0.640258 ms, Jetson Orin NX 16GB 1.082300 ms.
- DLA: NVIDIA Deep-Learning-Accelerator-SW README, "DLA Dense performance", 2 DLAs, JetPack 5.1.1,
  ResNet-50 224x224 bs=2: 2037 img/s (AGX Orin 64GB, MAXN); 1072 img/s in the 15 W mode, which the same
  README calls comparable to the Orin NX 16GB's maximum DLA clocks.
- GPU + 2 DLA, Offline (MLPerf v3.1, same submissions): 6423.63 img/s AGX Orin, 2640.51 img/s Orin NX
  16GB. A batch-1 model cannot fit the AGX figure: Offline batches the GPU (the DLA-SW README's GPU
  runs use bs=256), which the model does not represent. The test states that misfit instead of tuning
  a rate to hide it.
"""

from __future__ import annotations

import pytest

from isplit_export.targets.profiles import load_target

RESNET50_FLOPS = 8_204_815_360
TOLERANCE = 0.25


def _gpu_ms(target: str, precision: str = "int8") -> float:
    profile = load_target(target)
    assert profile.cost is not None
    return RESNET50_FLOPS / (profile.cost.rate(precision) * 1e6)


def _dla_img_s(target: str, cores: int = 2) -> float:
    profile = load_target(target)
    assert profile.cost is not None
    return cores * profile.cost.rate("int8", dla=True) * 1e9 / RESNET50_FLOPS


def _within(estimate: float, published: float) -> bool:
    return abs(estimate - published) / published <= TOLERANCE


@pytest.mark.parametrize(
    ("target", "published_ms"),
    [("jetson-orin-agx", 0.640258), ("jetson-orin-agx-jp7", 0.640258), ("jetson-orin-nx", 1.082300)],
)
def test_resnet50_int8_gpu_batch1_matches_mlperf_v31(target: str, published_ms: float) -> None:
    est = _gpu_ms(target)
    assert _within(est, published_ms), f"{target}: model {est:.3f} ms, MLPerf v3.1 {published_ms} ms"


@pytest.mark.parametrize(("target", "published"), [("jetson-orin-agx", 2037.0), ("jetson-orin-nx", 1072.0)])
def test_resnet50_int8_two_dla_throughput_matches_dla_sw(target: str, published: float) -> None:
    est = _dla_img_s(target)
    assert _within(est, published), f"{target}: model {est:.0f} img/s on 2 DLAs, published {published}"


def test_offline_gpu_plus_two_dla_figures_and_the_stated_misfit() -> None:
    """Batch-1 GPU rate + 2 DLAs against MLPerf Offline: the Orin NX figure fits, the AGX Orin one cannot."""
    nx = 1e3 / _gpu_ms("jetson-orin-nx") + _dla_img_s("jetson-orin-nx")
    agx = 1e3 / _gpu_ms("jetson-orin-agx") + _dla_img_s("jetson-orin-agx")
    assert _within(nx, 2640.51), nx
    assert agx / 6423.63 < 1 - TOLERANCE, agx  # batched GPU throughput is outside a batch-1 model


def test_the_orin_nx_profile_is_no_longer_twice_too_slow() -> None:
    """The issue's finding: 8.20 GFLOP / the old rate (3760.1) gave 2.18 ms against 1.08 ms measured."""
    assert RESNET50_FLOPS / 3760.1e6 > 2.0 * 1.0823
    assert _gpu_ms("jetson-orin-nx") < 1.25 * 1.0823
