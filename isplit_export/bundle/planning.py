"""Ranking -> cost -> selection, at export time and later on a bundle (``isplit-export plan``), torch-free.

    from isplit_export import plan
    result = plan("bundle", link="ethernet")            # re-plan an exported bundle for another link
    print(result.table())

At export (:func:`choose_cuts`, the hook in ``bundle.export``) the cost block is computed from the
ranking and the target profiles and stored in ``ranking.json``; the selection decides which cuts are
exported. :func:`plan` recomputes the same block from the bundle alone (``ranking.json`` carries the
FLOPs, ``manifest.json`` the target, encoding and bytes per split), for another link, objective or
constraints, and with the latencies measured so far in place of the estimates:

- ``manifest.run.latency_ms`` (onnxruntime, one thread, on the machine that built the bundle): the head
  replaces the device estimate when the target runs onnxruntime (``cpu``, ``onnx``: the bundle's models
  are what runs there), the tail the server estimate when the server profile is ``cpu``, ``full`` the
  all-on-device / all-on-server baselines likewise;
- ``verify.json`` rows that carry ``latency_ms`` (``head_ms``, ``tail_ms``) from ``verify --backend
  tensorrt`` on the device, at the device's precision: the head replaces the device estimate.

It writes ``plan.json`` into the bundle (an output, like ``verify.json``: not listed in the manifest,
not hashed) unless ``write=False``.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from isplit_export.bundle.selection import Selection, select
from isplit_export.errors import BadInputError
from isplit_export.files import write_text_atomic
from isplit_export.options import OBJECTIVES, Constraints
from isplit_export.targets.cost import Compute, Link, boundary_bytes, compute_for, cost_rows, parse_link
from isplit_export.targets.profiles import TargetProfile, load_target, validate_profile

if TYPE_CHECKING:
    from isplit_export.api import RankResult
    from isplit_export.options import ExportOptions
    from isplit_export.ranking.graph import Cut

PLAN_FILE = "plan.json"
PLAN_SCHEMA = "isplit.plan/1"
ASSUMPTIONS = (
    "batch 1; FLOPs = 2 x MACs of conv/linear + one per output element of other ops (graph.py)",
    "device and server times are FLOPs / effective GFLOP/s of the target profiles unless measured",
    "link ms = boundary bytes x 8 / bandwidth + RTT; the result's way back is inside the RTT",
    "all on device: nothing is sent; all on server: the preprocessed input tensor is sent under the boundary encoding",
    "device energy = power budget x device ms (compute only, no radio)",
)


def build_cost(
    ranking: Mapping[str, Any], device: Compute, server: Compute, link: Link, encoding: str, *,
    objective: str, constraints: Constraints, top: int | None,
    bytes_override: Mapping[int, int] | None = None, measured: Mapping[Any, Mapping[str, Any]] | None = None,
) -> tuple[dict[str, Any], Selection]:  # fmt: skip
    """The ``cost`` block of ranking.json (with ``per_cut``) and the selection it leads to."""
    per_cut, baselines = cost_rows(ranking, device, server, link, encoding, bytes_override=bytes_override,
                                   measured=measured)  # fmt: skip
    rows = [
        {"index": c["index"], "node": c["node"], "cui": c["cui"], "rank": c["rank"],
         "head_flops_share": c["head_flops_share"], "bytes": pc["bytes"], "total_ms": pc["total_ms"]}
        for c, pc in zip(ranking["candidates"], per_cut, strict=True)
    ]  # fmt: skip
    sel = select(rows, objective, constraints, top)
    block = {
        "link": link.to_json(),
        "device": device.to_json(),
        "server": server.to_json(),
        "encoding": encoding,
        "total_flops": ranking["total_flops"],
        "constraints": constraints.to_json(),
        "top": top,
        **sel.to_json(),
        "baselines": baselines,
        "assumptions": list(ASSUMPTIONS),
        "per_cut": per_cut,
    }
    return block, sel


def choose_cuts(ranked: RankResult, opts: ExportOptions, profile: TargetProfile, encoding: str) -> list[Cut]:
    """The export hook: the cuts to export. Without a link or constraints, I-Split's top K unchanged.

    With a link, the cost block goes into ``ranked.ranking.cost`` (ranking.json, report, tradeoff.png).
    """
    ranking = ranked.ranking
    if opts.link is None and not opts.constraints.active() and opts.objective == "cui":
        return ranking.ranked(opts.top)
    if opts.link is None:  # head FLOPs / boundary constraints only: no latency column
        data = ranking.to_json()
        rows = [{**c, "bytes": boundary_bytes(c["shape"], encoding), "total_ms": None} for c in data["candidates"]]
        sel = select(rows, opts.objective, opts.constraints, opts.top)
    else:
        block, sel = build_cost(
            ranking.to_json(), compute_for(profile, head=True), compute_for(load_target(opts.server), head=False),
            parse_link(opts.link), encoding, objective=opts.objective, constraints=opts.constraints, top=opts.top,
        )  # fmt: skip
        ranking.cost = block
    return [ranking.cuts[i] for i in sel.selected]


# --------------------------------------------------------------------------------------------------
# plan on a bundle


@dataclass
class PlanResult:
    """The re-plan of a bundle: the ranking dict with its new ``cost`` block, and where it was written."""

    bundle: Path
    ranking: dict[str, Any]
    selection: Selection
    written: Path | None

    @property
    def cost(self) -> dict[str, Any]:
        return dict(self.ranking["cost"])

    def table(self) -> str:
        return format_table(self.ranking)

    def to_json(self) -> dict[str, Any]:
        """``plan.json``: the cost block with one row per cut (index, node, module, CUI, rank, cost)."""
        cuts = [
            {k: c.get(k) for k in ("index", "node", "module", "cui", "rank", "head_flops_share")} | {"cost": c["cost"]}
            for c in self.ranking["candidates"]
        ]
        return {"schema": PLAN_SCHEMA, "model": self.ranking.get("model"), "cost": self.ranking["cost"], "cuts": cuts}


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInputError(f"{path} not found: pass the --out folder of an isplit-export run") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadInputError(f"cannot read {what} {path} ({e}): rebuild the bundle") from e
    if not isinstance(data, dict):
        raise BadInputError(f"{what} {path} is not a JSON object: rebuild the bundle")
    return data


def _measured(
    bundle: Path, manifest: Mapping[str, Any], device: Compute, device_backend: str, server: Compute, server_backend: str
) -> dict[Any, dict[str, Any]]:
    """Measured figures by cut index (and baselines) from the manifest's run block and verify.json."""
    out: dict[Any, dict[str, Any]] = {}
    by_dir = {s["dir"]: int(s["index"]) for s in manifest.get("splits", []) if "dir" in s and "index" in s}
    run = manifest.get("run") or {}
    host = run.get("host", "the build host")
    source = f"onnxruntime 1 thread on {host}"
    full: list[float] = []
    for rel, lat in (run.get("latency_ms") or {}).items():
        if rel not in by_dir or not isinstance(lat, dict):
            continue
        i = by_dir[rel]
        if device_backend == "onnxruntime" and lat.get("head_ms") is not None:
            out.setdefault(i, {}).update(device_ms=lat["head_ms"], device=source)
        if server_backend == "onnxruntime" and lat.get("tail_ms") is not None:
            out.setdefault(i, {}).update(server_ms=lat["tail_ms"], server=source)
        if lat.get("full_ms") is not None:
            full.append(float(lat["full_ms"]))
    if full:  # every split timed the full model too: the baselines take the median of those runs
        full_ms = statistics.median(full)
        if device_backend == "onnxruntime":
            out["device_only"] = {"device_ms": full_ms, "device": source}
        if server_backend == "onnxruntime":
            out["server_only"] = {"server_ms": full_ms, "server": source}
    vpath = bundle / "verify.json"
    if vpath.is_file():
        verify = _read_json(vpath, "verify result")
        for row in verify.get("rows") or []:
            lat = row.get("latency_ms") if isinstance(row, dict) else None
            if not isinstance(lat, dict) or row.get("backend") != "tensorrt" or row.get("precision") != device.precision:
                continue
            if row.get("dir") in by_dir and lat.get("head_ms") is not None:
                src = f"tensorrt {device.precision} on the device (verify.json)"
                out.setdefault(by_dir[row["dir"]], {}).update(device_ms=lat["head_ms"], device=src)
    return out


def plan(
    bundle: Path | str, *, link: str, objective: str | None = None, constraints: Constraints | None = None,
    server: str | None = None, top: int | None = None, measured: bool = True, write: bool = True,
) -> PlanResult:  # fmt: skip
    """Re-plan an exported bundle for ``link`` (torch-free); see the module docstring.

    ``objective``, ``constraints``, ``server`` and ``top`` default to the export's (else ``cui``, none,
    ``x86-tensorrt``, all);
    ``measured=False`` gives the pure estimates (what the export computed for the same link).
    """
    bundle = Path(bundle)
    if objective is not None and objective not in OBJECTIVES:
        raise BadInputError(f"unknown --objective {objective!r}: choose {', '.join(OBJECTIVES)}")
    lk = parse_link(link)
    if not bundle.is_dir():
        raise BadInputError(f"bundle directory {bundle} not found: pass the --out folder of an isplit-export run")
    manifest = _read_json(bundle / "manifest.json", "manifest")
    ranking = _read_json(bundle / str((manifest.get("ranking") or {}).get("file", "ranking.json")), "ranking")
    target_json = manifest.get("target")
    if not isinstance(target_json, dict) or "name" not in target_json:
        raise BadInputError(f"{bundle / 'manifest.json'} has no target block: rebuild the bundle")
    device_profile = validate_profile(target_json, "manifest.json target")  # every profile has a cost block
    options = manifest.get("options") or {}
    objective = objective or str(options.get("objective") or "cui")
    if constraints is None:
        constraints = Constraints(**(options.get("constraints") or {}))
    server_profile = load_target(server or options.get("server") or "x86-tensorrt")
    device, srv = compute_for(device_profile, head=True), compute_for(server_profile, head=False)
    encoding = str(manifest.get("boundary_encoding") or device_profile.default_boundary)
    bytes_override = {
        int(s["index"]): int(s["boundary"]["bytes_per_image"])
        for s in manifest.get("splits", [])
        if isinstance(s.get("boundary"), dict) and s["boundary"].get("bytes_per_image") is not None
    }
    meas = _measured(bundle, manifest, device, device_profile.backend, srv, server_profile.backend) if measured else {}
    k = top if top is not None else (manifest.get("ranking") or {}).get("top")
    block, sel = build_cost(ranking, device, srv, lk, encoding, objective=objective, constraints=constraints, top=k,
                            bytes_override=bytes_override, measured=meas)  # fmt: skip
    candidates = [{**c, "cost": pc} for c, pc in zip(ranking["candidates"], block["per_cut"], strict=True)]
    exported = [int(s["index"]) for s in manifest.get("splits", []) if "index" in s]
    cost = {key: v for key, v in block.items() if key != "per_cut"} | {"exported": exported}
    result = PlanResult(bundle, {**ranking, "candidates": candidates, "cost": cost}, sel, None)
    if write:
        result.written = bundle / PLAN_FILE
        try:
            write_text_atomic(result.written, json.dumps(result.to_json(), indent=2, sort_keys=False) + "\n")
        except OSError as e:
            raise BadInputError(
                f"cannot write {result.written} ({e}): make the bundle writable or plan with write=False"
            ) from e
    return result



# --------------------------------------------------------------------------------------------------
# table


def _ms(v: Any) -> str:
    return "-" if v is None else f"{float(v):.2f}"


def cost_table_rows(ranking: Mapping[str, Any]) -> tuple[list[str], list[list[str]]]:
    """Header and rows: every candidate (local maximum) and every selected cut, then the two baselines."""
    cost = ranking["cost"]
    selected = list(cost.get("selected") or [])
    pareto = set(cost.get("pareto") or [])
    exported = set(cost.get("exported") or [])
    header = ["sel", "rank", "cut", "node", "head FLOPs", "bytes", "device ms", "link ms", "server ms",
              "end-to-end ms", "energy mJ", "log10 CUI", "pareto", "figures"]  # fmt: skip
    rows = []
    cands = [c for c in ranking["candidates"] if c.get("rank") is not None or int(c["index"]) in selected]
    cands.sort(key=lambda c: (c.get("rank") is None, c.get("rank") or 0, c["index"]))
    for c in cands:
        pc = c["cost"]
        i = int(c["index"])
        mark = f"#{selected.index(i) + 1}" if i in selected else ""
        if i in exported and cost.get("exported") is not None:
            mark += "*"
        meas = pc.get("measured") or {}
        figures = "measured " + "+".join(sorted(meas)) if meas else "estimated"
        log10 = c.get("log10_cui")
        rows.append([mark, str(c.get("rank") or "-"), str(i), str(c["node"]), f"{100 * float(c['head_flops_share']):.1f}%",
                     str(pc["bytes"]), _ms(pc["device_ms"]), _ms(pc["link_ms"]), _ms(pc["server_ms"]),
                     _ms(pc["total_ms"]), _ms(pc["device_energy_mj"]), "-inf" if log10 is None else f"{log10:.3f}",
                     "yes" if i in pareto else "", figures])  # fmt: skip
    for name, label in (("device_only", "all on device"), ("server_only", "all on server")):
        b = cost["baselines"][name]
        meas = b.get("measured") or {}
        rows.append(["", "-", "-", label, "100.0%" if name == "device_only" else "0.0%", str(b["bytes"]),
                     _ms(b["device_ms"]), _ms(b["link_ms"]), _ms(b["server_ms"]), _ms(b["total_ms"]),
                     _ms(b["device_energy_mj"]), "-", "", "measured " + "+".join(sorted(meas)) if meas else "estimated"])  # fmt: skip
    return header, rows


def format_table(ranking: Mapping[str, Any]) -> str:
    """The terminal table of a ranking dict with a ``cost`` block, with a one-line header and the note."""
    cost = ranking["cost"]
    lk, dev, srv = cost["link"], cost["device"], cost["server"]
    head = (
        f"objective {cost['objective']}; link {lk['name']} ({lk['mbit_s']:g} Mbit/s, RTT {lk['rtt_ms']:g} ms); "
        f"device {dev['target']} {dev['unit']} {dev['precision']} ({dev['gflops']:g} GFLOP/s); "
        f"server {srv['target']} {srv['unit']} {srv['precision']} ({srv['gflops']:g} GFLOP/s); "
        f"boundary {cost['encoding']}"
    )
    header, rows = cost_table_rows(ranking)
    table = [header, *rows]
    widths = [max(len(r[c]) for r in table) for c in range(len(header))]
    lines = [head, *("  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip() for r in table)]
    lines.append("sel: #N = selected in that order" + ("; * = exported in the bundle" if cost.get("exported") else ""))
    if cost.get("note"):
        lines.append(f"note: {cost['note']}")
    return "\n".join(lines)
