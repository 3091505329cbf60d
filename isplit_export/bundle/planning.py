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

- ``run.json`` (``isplit-export run`` against a served tail, :mod:`isplit_export.serving.run`, read as
  :class:`~isplit_export.contract.RunRecord`): the served tail's compute time replaces the server
  estimate, the head's time the device estimate when the run's backend is the device's. The link is
  the round trip minus the server's compute (transfer and protocol), and only a run against a
  ``remote`` server measures one: a loopback or same-host round trip is protocol overhead, so from such
  a run no bandwidth is derived (one note line says so) and the link stays the named one (``--link``,
  else the export's). With ``--link measured`` (the default when ``--link`` is omitted and a remote run
  exists) the measured link times replace the estimates of the splits run; the others get the link
  fitted to the runs (RTT + bytes / bandwidth when the runs had two or more boundary sizes, else the
  effective rate bytes / link time with RTT 0), range-checked as ``--link`` is.
  Each figure is flagged ``measured`` with its source.

It writes ``plan.json`` into the bundle (an output, like ``verify.json``: not listed in the manifest,
not hashed) unless ``write=False``.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from isplit_export import contract
from isplit_export.bundle.selection import Selection, select
from isplit_export.errors import BadInputError
from isplit_export.exporting.encoding import element_bytes
from isplit_export.files import json_dumps, write_text_atomic
from isplit_export.options import OBJECTIVES, Constraints
from isplit_export.targets.cost import (
    LINK_MBIT_RANGE,
    LINK_RTT_RANGE,
    Compute,
    Link,
    boundary_bytes,
    compute_for,
    cost_rows,
    parse_link,
)
from isplit_export.targets.profiles import TargetProfile, load_target, validate_profile
from isplit_export.text_table import text_table

if TYPE_CHECKING:
    from isplit_export.api import RankResult
    from isplit_export.options import ExportOptions
    from isplit_export.ranking.graph import Cut

PLAN_FILE = contract.PLAN_FILE
PLAN_SCHEMA = "isplit.plan/1"
ASSUMPTIONS = (
    "batch 1; FLOPs = 2 x MACs of conv/linear + one per output element of other ops (graph.py)",
    "device and server times are FLOPs / effective GFLOP/s of the target profiles unless measured",
    "link ms = boundary bytes x 8 / bandwidth + RTT; the result's way back is inside the RTT",
    "all on device: nothing is sent; all on server: the preprocessed input tensor is sent under the boundary encoding",
    "device energy = power budget x device ms (compute only, no radio)",
)


def build_cost(
    ranking: Mapping[str, Any],
    device: Compute,
    server: Compute,
    link: Link,
    encoding: str,
    *,
    objective: str,
    constraints: Constraints,
    top: int | None,
    bytes_override: Mapping[int, int] | None = None,
    measured: Mapping[Any, Mapping[str, Any]] | None = None,
) -> tuple[dict[str, Any], Selection]:
    """The ``cost`` block of ranking.json (with ``per_cut``) and the selection it leads to."""
    per_cut, baselines = cost_rows(
        ranking, device, server, link, encoding, bytes_override=bytes_override, measured=measured
    )
    rows = [
        {
            "index": c["index"],
            "node": c["node"],
            "cui": c["cui"],
            "rank": c.get("rank"),
            "head_flops_share": c["head_flops_share"],
            "bytes": pc["bytes"],
            "total_ms": pc["total_ms"],
        }
        for c, pc in zip(ranking["candidates"], per_cut, strict=True)
    ]
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
        rows = [
            {**c, "bytes": boundary_bytes(c["shape"], encoding), "total_ms": None} for c in data["candidates"]
        ]
        sel = select(rows, opts.objective, opts.constraints, opts.top)
    else:
        block, sel = build_cost(
            ranking.to_json(),
            compute_for(profile, head=True),
            compute_for(load_target(opts.server), head=False),
            parse_link(opts.link),
            encoding,
            objective=opts.objective,
            constraints=opts.constraints,
            top=opts.top,
        )
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
        return format_cost_table(self.ranking)

    def to_json(self) -> dict[str, Any]:
        """``plan.json``: the cost block with one row per cut (index, node, module, CUI, rank, cost)."""
        cuts = [
            {k: c.get(k) for k in ("index", "node", "module", "cui", "rank", "head_flops_share")}
            | {"cost": c["cost"]}
            for c in self.ranking["candidates"]
        ]
        return {
            "schema": PLAN_SCHEMA,
            "model": self.ranking.get("model"),
            "cost": self.ranking["cost"],
            "cuts": cuts,
        }


def _measured(
    m: contract.Manifest, device: Compute, device_backend: str, server: Compute, server_backend: str
) -> dict[Any, dict[str, Any]]:
    """Measured figures by cut index (and baselines) from the manifest's run block and verify.json.

    Every figure was validated by :mod:`isplit_export.contract` (finite, positive, bounded);
    ``verify.json`` is used only when it names this manifest.
    """
    out: dict[Any, dict[str, Any]] = {}
    by_dir = {s.dir: s.index for s in m.splits if s.index is not None}
    run = m.block("run")
    host = run.get("host", "the build host")
    source = f"onnxruntime 1 thread on {host}"
    full: list[float] = []
    for rel, lat in (run.get("latency_ms") or {}).items():
        if rel not in by_dir:
            continue
        i = by_dir[rel]
        if device_backend == "onnxruntime" and lat.get("head_ms") is not None:
            out.setdefault(i, {}).update(device_ms=float(lat["head_ms"]), device=source)
        if server_backend == "onnxruntime" and lat.get("tail_ms") is not None:
            out.setdefault(i, {}).update(server_ms=float(lat["tail_ms"]), server=source)
        if lat.get("full_ms") is not None:
            full.append(float(lat["full_ms"]))
    if full:  # every split timed the full model too: the baselines take the median of those runs
        full_ms = statistics.median(full)
        if device_backend == "onnxruntime":
            out["device_only"] = {"device_ms": full_ms, "device": source}
        if server_backend == "onnxruntime":
            out["server_only"] = {"server_ms": full_ms, "server": source}
    for row in contract.read_verify_latencies(m):
        lat = row["latency_ms"]
        if row["backend"] != "tensorrt" or row["precision"] != device.precision:
            continue
        if row["dir"] in by_dir and lat.get("head_ms") is not None:
            src = f"tensorrt {device.precision} on the device (verify.json)"
            out.setdefault(by_dir[row["dir"]], {}).update(device_ms=float(lat["head_ms"]), device=src)
    return out


MEASURED_LINK = "measured"
"""``plan --link measured`` (the default when run.json exists): the link as ``isplit-export run`` measured it."""


def _run_measured(
    runs: Mapping[str, contract.RunRecord], device_backend: str, link_measured: bool
) -> dict[Any, dict[str, Any]]:
    """Measured figures by cut index from ``run.json`` (``isplit-export run``): server compute (p50), the
    link (round trip p50 minus server compute, only with ``--link measured`` and only from a remote
    server) and the head when the run's backend is the device's. ``runs``: :func:`isplit_export.contract.read_runs`."""
    out: dict[Any, dict[str, Any]] = {}
    for r in runs.values():
        if r.index < 0 or not r.ok:
            continue
        where = f"{r.protocol} {r.address}, run.json"
        row: dict[str, Any] = {}
        if r.server_ms is not None:
            row.update(server_ms=r.server_ms, server=f"served tail compute p50 ({where})")
        if link_measured and r.measures_link:
            row.update(link_ms=r.link_ms, link=f"round trip p50 minus server compute ({where})")
        if r.head_ms is not None and r.backend == device_backend:
            row.update(device_ms=r.head_ms, device=f"head p50, {r.backend} on {r.host} (run.json)")
        if row:
            out[r.index] = row
    return out


def _local_runs_note(runs: Mapping[str, contract.RunRecord], link: str) -> str | None:
    """The line that says why a run against this machine gives no link (None: no such run)."""
    local = [r for r in runs.values() if not r.measures_link and r.link_ms is not None]
    if not local:
        return None
    where = ", ".join(sorted({f"{r.address_class} {r.address}" for r in local}))
    return (
        f"run.json: {len(local)} run(s) against a server on this machine or of unknown place ({where}): their round "
        f"trip is protocol overhead, not a network, so no bandwidth is derived from it; the link stays {link} "
        "(server compute and head times are used)"
    )


def _measured_link(bundle: Path, runs: Mapping[str, contract.RunRecord]) -> Link:
    """The link of ``--link measured`` from the remote runs of run.json: RTT + bytes / bandwidth fitted when
    they had two or more boundary sizes, else their effective rate (bytes / link time) with RTT 0.

    Splits that were run use their own measured link time; this link estimates the others. Both figures
    are range-checked as ``--link`` is: anything outside is one line (exit 2).
    """
    pairs = [(float(r.bytes_per_image), float(r.link_ms or 0.0)) for r in runs.values() if r.measures_link]
    if not pairs:
        local = sorted({f"{r.address_class} {r.address}" for r in runs.values() if r.link_ms is not None})
        why = f"no measured link in {bundle / contract.RUN_FILE}"
        if local:
            why = f"run.json's runs were against a server on this machine ({', '.join(local)}): no link to measure"
        raise BadInputError(
            f"{why}: pass --link wifi|lte|5g|ethernet|<Mbit/s>[,<RTT ms>], or run `isplit-export run` against a "
            "server on another machine"
        )
    rtt, how = 0.0, "effective rate = bytes / (round trip - server compute), RTT 0"
    sizes = {b for b, _ in pairs}
    if len(sizes) >= 2:  # least squares ms = rtt + bytes * slope
        mb, mm = statistics.fmean(b for b, _ in pairs), statistics.fmean(ms for _, ms in pairs)
        slope = sum((b - mb) * (ms - mm) for b, ms in pairs) / sum((b - mb) ** 2 for b, _ in pairs)
        intercept = mm - slope * mb
        if slope > 0 and intercept >= 0:
            mbit, rtt = 8.0 / (slope * 1e3), intercept
            how = f"RTT + bytes / bandwidth fitted to {len(sizes)} boundary sizes"
    if not rtt and "fitted" not in how:
        mbit = sum(b for b, _ in pairs) * 8 / (sum(ms for _, ms in pairs) * 1e3)
    if not (
        LINK_MBIT_RANGE[0] <= mbit <= LINK_MBIT_RANGE[1] and LINK_RTT_RANGE[0] <= rtt <= LINK_RTT_RANGE[1]
    ):
        raise BadInputError(
            f"{contract.RUN_FILE}: its link times give {mbit:.4g} Mbit/s, RTT {rtt:.4g} ms, outside what --link takes "
            f"({LINK_MBIT_RANGE[0]:g}..{LINK_MBIT_RANGE[1]:g} Mbit/s, RTT {LINK_RTT_RANGE[0]:g}..{LINK_RTT_RANGE[1]:g} ms): "
            "re-run isplit-export run, or pass --link"
        )
    return Link(
        "measured", float(f"{mbit:.6g}"), float(f"{rtt:.6g}"), f"run.json: {len(pairs)} remote run(s); {how}"
    )


def plan(
    bundle: Path | str,
    *,
    link: str | None = None,
    objective: str | None = None,
    constraints: Constraints | None = None,
    server: str | None = None,
    top: int | None = None,
    measured: bool = True,
    write: bool = True,
    expect_sha256: str | None = None,
    report: Path | None = None,
) -> PlanResult:
    """Re-plan an exported bundle for ``link`` (torch-free); see the module docstring.

    ``objective``, ``constraints``, ``server`` and ``top`` default to the export's (else ``cui``, none,
    ``x86-tensorrt``, all);
    ``measured=False`` gives the pure estimates (what the export computed for the same link).
    The bundle is read through :mod:`isplit_export.contract`: manifest validated, ``ranking.json``
    hashed and validated, ``expect_sha256`` pinned. With ``write`` the plan goes to ``report`` or else
    ``bundle/plan.json``.
    """
    bundle = Path(bundle)
    if objective is not None and objective not in OBJECTIVES:
        raise BadInputError(f"unknown --objective {objective!r}: choose {', '.join(OBJECTIVES)}")
    if top is not None and (isinstance(top, bool) or top < 1):
        raise BadInputError(f"--top {top}: pass a positive number of splits")
    if expect_sha256 is not None:
        expect_sha256 = contract.check_sha256_text(expect_sha256, "--expect-sha256")
    server_profile = load_target(server) if server is not None else None  # options first, then the bundle
    m = contract.read_manifest(bundle)
    contract.check_expected_sha256(m, expect_sha256)
    ranking = contract.read_ranking(m)
    if link is None and not measured:
        raise BadInputError("--estimated needs a link: pass --link wifi|lte|5g|ethernet|<Mbit/s>[,<RTT ms>]")
    runs = contract.read_runs(m) if measured else {}
    options = m.block("options")
    named = options.get("link") if isinstance(options.get("link"), str) else None
    if link is None and not any(r.measures_link for r in runs.values()) and named is not None:
        link = named  # no remote run: the export's named link, not one derived from loopback overhead
    link_measured = measured and (link is None or link.strip().lower() == MEASURED_LINK)
    lk = _measured_link(bundle, runs) if link_measured else parse_link(str(link))
    run_note = _local_runs_note(runs, f"{lk.name}") if measured else None
    target_json = dict(m.block("target"))
    if "name" not in target_json:
        raise BadInputError(f"{bundle / contract.MANIFEST_FILE} has no target block: rebuild the bundle")
    device_profile = validate_profile(target_json, "manifest.json target")  # every profile has a cost block
    objective = objective or str(options.get("objective") or "cui")
    if objective not in OBJECTIVES:
        raise BadInputError(f"manifest.json options.objective {objective!r} is unknown: pass --objective")
    if constraints is None:
        constraints = Constraints(**(options.get("constraints") or {}))
    if server_profile is None:
        server_profile = load_target(options.get("server") or "x86-tensorrt")
    device, srv = compute_for(device_profile, head=True), compute_for(server_profile, head=False)
    encoding = str(m.boundary_encoding or device_profile.default_boundary)
    element_bytes(encoding)  # an unknown encoding is one line here, not a KeyError later
    bytes_override = {
        s.index: s.boundary.bytes_per_image
        for s in m.splits
        if s.index is not None and s.boundary.bytes_per_image is not None
    }
    meas = _measured(m, device, device_profile.backend, srv, server_profile.backend) if measured else {}
    if (
        measured
    ):  # what `isplit-export run` measured over a real connection wins over the build host's figures
        for key, row in _run_measured(runs, device_profile.backend, link_measured).items():
            meas.setdefault(key, {}).update(row)
    k = top if top is not None else m.block("ranking").get("top")
    block, sel = build_cost(
        ranking,
        device,
        srv,
        lk,
        encoding,
        objective=objective,
        constraints=constraints,
        top=k,
        bytes_override=bytes_override,
        measured=meas,
    )
    candidates = [{**c, "cost": pc} for c, pc in zip(ranking["candidates"], block["per_cut"], strict=True)]
    exported = [s.index for s in m.splits if s.index is not None]
    cost = {key: v for key, v in block.items() if key != "per_cut"} | {"exported": exported}
    if run_note is not None:
        cost["note"] = f"{cost['note']}; {run_note}" if cost.get("note") else run_note
    result = PlanResult(bundle, {**ranking, "candidates": candidates, "cost": cost}, sel, None)
    if write:
        write_plan(result, report)
    return result


def write_plan(result: PlanResult, report: Path | None = None) -> Path:
    """Write ``plan.json`` (strict JSON) to ``report`` (default: into the bundle); one line when it cannot."""
    path = Path(report) if report is not None else result.bundle / PLAN_FILE
    try:
        write_text_atomic(path, json_dumps(result.to_json()))
    except (OSError, ValueError) as e:
        raise BadInputError(
            f"cannot write {path} ({e}): the plan is above; pass --report PATH or --no-write (e.g. for a read-only bundle)"
        ) from e
    result.written = path
    return path


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
    header = [
        "sel",
        "rank",
        "cut",
        "node",
        "head FLOPs",
        "bytes",
        "device ms",
        "link ms",
        "server ms",
        "end-to-end ms",
        "energy mJ",
        "log10 CUI",
        "pareto",
        "figures",
    ]
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
        rows.append(
            [
                mark,
                str(c.get("rank") or "-"),
                str(i),
                str(c["node"]),
                f"{100 * float(c['head_flops_share']):.1f}%",
                str(pc["bytes"]),
                _ms(pc["device_ms"]),
                _ms(pc["link_ms"]),
                _ms(pc["server_ms"]),
                _ms(pc["total_ms"]),
                _ms(pc["device_energy_mj"]),
                "-inf" if log10 is None else f"{log10:.3f}",
                "yes" if i in pareto else "",
                figures,
            ]
        )
    for name, label in (("device_only", "all on device"), ("server_only", "all on server")):
        b = cost["baselines"][name]
        meas = b.get("measured") or {}
        rows.append(
            [
                "",
                "-",
                "-",
                label,
                "100.0%" if name == "device_only" else "0.0%",
                str(b["bytes"]),
                _ms(b["device_ms"]),
                _ms(b["link_ms"]),
                _ms(b["server_ms"]),
                _ms(b["total_ms"]),
                _ms(b["device_energy_mj"]),
                "-",
                "",
                "measured " + "+".join(sorted(meas)) if meas else "estimated",
            ]
        )
    return header, rows


def format_cost_table(ranking: Mapping[str, Any]) -> str:
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
    lines = [head, *text_table([header, *rows])]
    lines.append(
        "sel: #N = selected in that order" + ("; * = exported in the bundle" if cost.get("exported") else "")
    )
    if cost.get("note"):
        lines.append(f"note: {cost['note']}")
    return "\n".join(lines)
