"""cost + selection: latency, transfer and energy on a toy model with hand-computed FLOPs; objectives; constraints."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from isplit_export.bundle.cost_block import build_cost
from isplit_export.bundle.cost_table import format_cost_table
from isplit_export.bundle.selection import CutRow, pareto_layers, select
from isplit_export.contract import RankingFile
from isplit_export.errors import BadInputError
from isplit_export.links import LINKS, parse_link
from isplit_export.options import Constraints
from isplit_export.ranking.candidates import Ranking
from isplit_export.targets.cost import compute_for
from isplit_export.targets.profiles import list_targets, validate_profile

torch = pytest.importorskip("torch")  # only the toy model's trace needs torch; cost/selection are torch-free

TARGETS = Path(__file__).resolve().parents[3] / "isplit_export" / "profiles"

# Toy model on a 1x8x8 input, FLOPs = 2 x MACs for conv/linear, one per output element otherwise:
#   conv1 1->2 3x3: 2*128*9 = 2304, relu 128           -> cut 0 after 2432
#   conv2 2->4 3x3: 2*256*18 = 9216, relu 256          -> cut 1 after 11904
#   F.conv2d 4->4 1x1 (a function call): 2*256*4 = 2048, relu 256 -> cut 2 after 14208
#   avg pool 4                                          -> cut 3 after 14212
#   flatten 4, linear 4->3: 2*3*4 = 24                 -> total 14240
HEAD = [2432, 11904, 14208, 14212]
TOTAL = 14240


def _toy() -> Any:
    from torch import nn
    from torch.nn import functional as F

    class Toy(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.c1, self.c2 = nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 4, 3, padding=1)
            self.w = nn.Parameter(torch.ones(4, 4, 1, 1))
            self.fc = nn.Linear(4, 3)

        def forward(self, x: Any) -> Any:
            x = torch.relu(self.c2(torch.relu(self.c1(x))))
            x = torch.relu(F.conv2d(x, self.w))
            return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))

    return Toy().eval()


def _profile(name: str, gflops: float, power: float | None = None, kind: str = "onnx") -> Any:
    data = json.loads((TARGETS / "onnx.json").read_text())
    data.update(name=name, cost={"gflops": {"fp32": gflops}, "dla_gflops": None, "power_w": power})
    return validate_profile(data, f"{name} (test)")


@pytest.fixture(scope="module")
def toy_ranking() -> RankingFile:
    from isplit_export.ranking.graph import trace

    traced = trace(_toy(), (1, 8, 8))
    assert traced.total_flops == TOTAL
    assert [round(c.head_flops_share * TOTAL) for c in traced.cuts] == HEAD
    # CUI per cut given by hand: local maxima at cuts 0 and 2 (0.5 > 0.2 < 0.9 > 0.3)
    r = Ranking(
        "toy", "none", 4, None, "top", traced.cuts, np.array([0.5, 0.2, 0.9, 0.3]), 4 * 64, total_flops=TOTAL
    )
    data = r.to_json()
    assert data["schema"] == "isplit.ranking/2" and [c["head_flops"] for c in data["candidates"]] == HEAD
    return RankingFile.from_json(data)


def _cost(
    ranking: RankingFile,
    link: str = "8,10",
    objective: str = "cui",
    top: int | None = None,
    constraints: Constraints | None = None,
    encoding: str = "fp32",
) -> dict[str, Any]:
    device = compute_for(_profile("dev", 0.001, power=5.0), head=True)  # 1e6 FLOP/s: ms = FLOPs / 1e3
    server = compute_for(_profile("srv", 0.01), head=False)  # 1e7 FLOP/s: ms = FLOPs / 1e4
    block, _ = build_cost(
        ranking,
        device,
        server,
        parse_link(link),
        encoding,
        objective=objective,
        constraints=constraints or Constraints(),
        top=top,
    )
    return block


def test_latency_transfer_and_energy_by_hand(toy_ranking: RankingFile) -> None:
    block = _cost(toy_ranking)
    c0 = block["per_cut"][0]
    # head 2432 FLOPs at 1e6 FLOP/s; boundary 2x8x8 fp32 = 512 B at 8 Mbit/s = 0.512 ms, + RTT 10 ms
    assert c0["device_ms"] == pytest.approx(2.432) and c0["bytes"] == 512
    assert c0["transfer_ms"] == pytest.approx(0.512) and c0["link_ms"] == pytest.approx(10.512)
    assert c0["server_ms"] == pytest.approx((TOTAL - 2432) / 1e4)
    assert c0["total_ms"] == pytest.approx(2.432 + 10.512 + 1.1808)
    assert c0["device_energy_mj"] == pytest.approx(5.0 * 2.432)  # 5 W x 2.432 ms
    c3 = block["per_cut"][3]  # 4x1x1 fp32 = 16 B
    assert c3["bytes"] == 16 and c3["transfer_ms"] == pytest.approx(16 * 8 / 8e3)
    dev, srv = block["baselines"]["device_only"], block["baselines"]["server_only"]
    assert dev["device_ms"] == pytest.approx(14.24) and dev["link_ms"] == 0 and dev["bytes"] == 0
    assert dev["total_ms"] == pytest.approx(14.24)
    # all on server: the 1x8x8 fp32 input (256 B) + RTT, then 14240 FLOPs at 1e7 FLOP/s
    assert srv["bytes"] == 256 and srv["total_ms"] == pytest.approx(256 * 8 / 8e3 + 10 + 1.424)
    assert srv["device_ms"] == 0 and srv["device_energy_mj"] == 0
    # fp16 halves the bytes of the boundary and of the input sent by the server-only baseline
    half = _cost(toy_ranking, encoding="fp16")
    assert half["per_cut"][0]["bytes"] == 256 and half["baselines"]["server_only"]["bytes"] == 128


def test_link_presets_and_custom_links() -> None:
    assert set(LINKS) == {"wifi", "lte", "5g", "ethernet"}
    assert all(lk.mbit_s > 0 and lk.rtt_ms >= 0 and lk.source for lk in LINKS.values())
    assert parse_link("LTE") is LINKS["lte"]
    lk = parse_link("20,40")
    assert (lk.mbit_s, lk.rtt_ms) == (20.0, 40.0) and lk.transfer_ms(2500) == pytest.approx(1.0)
    assert parse_link(" 100 ").rtt_ms == 0.0
    for bad, msg in (
        ("fiber", r"unknown --link 'fiber': choose wifi, lte, 5g, ethernet"),
        ("0", "bandwidth must be a positive number"),
        ("-5,10", "bandwidth must be a positive"),
        ("10,-1", "RTT must be a non-negative"),
        ("10,x", "unknown --link"),
        ("nan", "bandwidth"),
    ):
        with pytest.raises(BadInputError, match=msg):
            parse_link(bad)


def test_objectives_and_constraints(toy_ranking: RankingFile) -> None:
    # candidates: cut 0 (CUI 0.5, fast: 14.12 ms) and cut 2 (CUI 0.9, slow: 24.35 ms)
    cui = _cost(toy_ranking, objective="cui")
    assert cui["selected"] == [2, 0] and sorted(cui["pareto"]) == [0, 2]
    lat = _cost(toy_ranking, objective="latency")
    assert lat["selected"] == [0, 2]
    assert _cost(toy_ranking, objective="balanced", top=1)["selected"] == [2]  # front, then CUI
    # constraints are applied before the top K: exactly the cuts that meet them remain
    assert _cost(toy_ranking, constraints=Constraints(max_head_flops=0.5))["selected"] == [0]
    assert _cost(toy_ranking, constraints=Constraints(max_boundary_kib=0.5))["selected"] == [
        0
    ]  # 512 B; cut 2 = 1 KiB
    ms0 = cui["per_cut"][0]["total_ms"]
    only0 = _cost(toy_ranking, constraints=Constraints(max_latency_ms=ms0))
    assert only0["selected"] == [0] and only0["excluded"]["2"] == ["--max-latency-ms"]
    # a cut that is not a local maximum is never selected, even when it is the fastest
    slow_link = _cost(toy_ranking, link="0.01,0", objective="latency")
    assert 3 not in slow_link["selected"] and slow_link["selected"] == [0, 2]
    assert slow_link["note"] and "cut 3 (adaptive_avg_pool2d) is not a local maximum" in slow_link["note"]
    gain = slow_link["per_cut"][0]["total_ms"] - slow_link["per_cut"][3]["total_ms"]
    assert f"{gain:.3f} ms faster" in slow_link["note"]
    text = format_cost_table(toy_ranking.with_cost(slow_link["per_cut"], slow_link))
    assert "all on device" in text and "all on server" in text and "note: cut 3" in text


def test_the_probe_objective_with_a_link_ranks_by_the_probe(toy_ranking: RankingFile) -> None:
    """With a link, the selection rows carry the probe's scores too (they used to be dropped there)."""
    data = toy_ranking.to_json()
    scores = {0: 0.9, 2: 0.1}  # the probe prefers cut 0, the CUI cut 2
    data["candidates"] = [
        {**c, "probe": {"value": scores[c["index"]]}} if c["index"] in scores else c
        for c in data["candidates"]
    ]
    probed = RankingFile.from_json(data)
    assert _cost(probed, objective="probe")["selected"] == [0, 2]
    assert _cost(probed, objective="cui")["selected"] == [2, 0]
    with pytest.raises(BadInputError, match="needs the probe's scores"):
        _cost(toy_ranking, objective="probe")


def test_constraints_leaving_no_cut_name_the_tightest(toy_ranking: RankingFile) -> None:
    tight = Constraints(
        max_head_flops=0.1, max_boundary_kib=0.9
    )  # head drops both candidates, KiB only cut 2
    with pytest.raises(
        BadInputError,
        match=r"no candidate split: --max-head-flops 0\.1 is the tightest \(it alone "
        r"drops 2 of 2 candidates; the smallest candidate value is 0\.1708\)",
    ):
        _cost(toy_ranking, constraints=tight)
    with pytest.raises(BadInputError, match=r"--max-head-flops 1\.5: pass the head.s share"):
        Constraints(max_head_flops=1.5)
    with pytest.raises(BadInputError, match="--max-latency-ms -1"):
        Constraints(max_latency_ms=-1)
    with pytest.raises(BadInputError, match="unknown --objective 'fast': choose cui, latency, balanced"):
        _cost(toy_ranking, objective="fast")


def test_pareto_layers_by_hand() -> None:
    # (cui, ms): a dominates c; b trades CUI for speed; d is dominated by b
    pts = [(0.9, 10.0), (0.5, 2.0), (0.8, 12.0), (0.4, 3.0)]
    assert pareto_layers(pts) == [0, 0, 1, 1]
    rows = [CutRow(i, f"n{i}", c, 1 + i, 0.1, 1, m) for i, (c, m) in enumerate(pts)]
    sel = select(rows, "balanced", Constraints(), None)
    assert sel.pareto == [0, 1] and sel.selected == [0, 1, 2, 3]


def test_every_profile_has_a_cost_block_and_bad_blocks_are_refused() -> None:
    for t in list_targets():
        assert t.cost is not None, t.name
        assert all(t.cost.rate(p) > 0 for p in t.precisions)
        assert (t.cost.dla_gflops is not None) == t.has_dla
    data = json.loads((TARGETS / "jetson-orin-nx.json").read_text())
    for cost, msg in (
        ({**data["cost"], "gflops": {"fp32": 1.0}}, "has no throughput for fp16, int8"),
        ({**data["cost"], "dla_gflops": None}, "must give the DLA throughput"),
        ({**data["cost"], "power_w": 0}, "positive number of watts"),
        ({**data["cost"], "gflops": {"fp32": -1, "fp16": 1, "int8": 1}}, "positive GFLOP/s"),
        ({"gflops": {}}, "exactly gflops, dla_gflops, power_w"),
    ):
        with pytest.raises(BadInputError, match=msg):
            validate_profile({**data, "cost": cost}, "jetson-orin-nx.json")
    # the head goes to DLA core 0 at fp16, like the TensorRT plan; the server runs its GPU
    nx = validate_profile(data, "jetson-orin-nx.json")
    assert compute_for(nx, head=True).unit == "dla0" and compute_for(nx, head=False).unit == "gpu"
