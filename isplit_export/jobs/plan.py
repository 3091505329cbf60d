"""The plan job (``isplit-export plan``): ranking -> cost -> selection on a bundle, torch-free.

    from isplit_export import plan
    result = plan("bundle", link="ethernet")            # re-plan an exported bundle for another link
    print(result.table())

At export (:func:`~isplit_export.bundle.cost_block.choose_cuts`, the hook in ``bundle.export``) the cost block is computed from the
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

- ``run.json`` (``isplit-export run`` against a served tail, :mod:`isplit_export.jobs.run`, read as
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

A bundle exported from a (cut, budget) chosen on the probe's grid (``--budgets``, its manifest's
``grid_choice``) is re-chosen by :func:`plan_pair`: the same choice (:func:`~isplit_export.bundle.grid_choice.choose_pair`)
on the bundle's ``ranking.json`` grid for another link, server or target, which says whether the pair it
picks there is the exported one (printed only; estimates: the grid's scores and the cost model).

It writes ``plan.json`` into the bundle (an output, like ``verify.json``: not listed in the manifest,
not hashed) unless ``write=False``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from isplit_export import contract
from isplit_export.bundle.cost_block import build_cost
from isplit_export.bundle.cost_table import format_cost_table
from isplit_export.bundle.grid_choice import GridChoice, choose_pair
from isplit_export.bundle.grid_export import replan_lines
from isplit_export.bundle.plan_measurements import (
    MEASURED_LINK,
    local_runs_note,
    manifest_figures,
    measured_link,
    run_figures,
)
from isplit_export.bundle.selection import Selection
from isplit_export.bundle.split_verdict import split_verdict
from isplit_export.contract.grid_export import GridExport
from isplit_export.contract.rate_accuracy import grid_of
from isplit_export.errors import BadInputError
from isplit_export.exporting.encoding import element_bytes
from isplit_export.files import json_dumps, write_text_atomic
from isplit_export.links import parse_link
from isplit_export.options import OBJECTIVES, Constraints
from isplit_export.options_grid import PairChoice
from isplit_export.targets.cost import compute_for
from isplit_export.targets.profiles import load_target, validate_profile

PLAN_FILE = contract.PLAN_FILE
PLAN_SCHEMA = "isplit.plan/1"


@dataclass
class PlanResult:
    """The re-plan of a bundle: the ranking with its new ``cost`` block, and where it was written."""

    bundle: Path
    ranking: contract.RankingFile
    selection: Selection
    written: Path | None

    @property
    def cost(self) -> contract.CostBlock:
        """The new cost block (always present in a plan)."""
        if self.ranking.cost is None:
            raise AssertionError("a plan's ranking carries its cost block")
        return self.ranking.cost

    def table(self) -> str:
        return format_cost_table(self.ranking)

    def to_json(self) -> dict[str, Any]:
        """``plan.json``: the cost block, one row per cut (index, node, module, CUI, rank, cost) and the verdict."""
        verdict = split_verdict(self.cost, self.ranking.candidates)
        return {
            "schema": PLAN_SCHEMA,
            "model": self.ranking.model,
            "cost": self.cost.to_json(),
            "cuts": [c.plan_row() for c in self.ranking.candidates],
            "verdict": None if verdict is None else verdict.to_json(),
        }


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
    recorded = m.options
    named = recorded.link
    if link is None and not any(r.measures_link for r in runs.values()) and named is not None:
        link = named  # no remote run: the export's named link, not one derived from loopback overhead
    link_measured = measured and (link is None or link.strip().lower() == MEASURED_LINK)
    lk = measured_link(bundle, runs) if link_measured else parse_link(str(link))
    run_note = local_runs_note(runs, f"{lk.name}") if measured else None
    target_json = dict(m.block("target"))
    if "name" not in target_json:
        raise BadInputError(f"{bundle / contract.MANIFEST_FILE} has no target block: rebuild the bundle")
    device_profile = validate_profile(target_json, "manifest.json target")  # every profile has a cost block
    objective = objective or recorded.objective or "cui"
    if objective not in OBJECTIVES:
        raise BadInputError(f"manifest.json options.objective {objective!r} is unknown: pass --objective")
    if constraints is None:
        constraints = Constraints(**recorded.constraints)
        if m.grid_choice is not None:  # its --max-latency-ms chose the (cut, budget): no bound on the cut
            constraints = dataclasses.replace(constraints, max_latency_ms=None)
    if server_profile is None:
        server_profile = load_target(recorded.server or "x86-tensorrt")
    device, srv = compute_for(device_profile, head=True), compute_for(server_profile, head=False)
    encoding = str(m.boundary_encoding or device_profile.default_boundary)
    element_bytes(encoding)  # an unknown encoding is one line here, not a KeyError later
    bytes_override = {
        s.index: s.boundary.bytes_per_image
        for s in m.splits
        if s.index is not None and s.boundary.bytes_per_image is not None
    }
    meas = manifest_figures(m, device, device_profile, srv, server_profile) if measured else {}
    if (
        measured
    ):  # what `isplit-export run` measured over a real connection wins over the build host's figures
        for key, row in run_figures(runs, device_profile, link_measured).items():
            meas.setdefault(key, {}).update(row)
    k = top if top is not None else m.ranking_top
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
    per_cut = block.pop("per_cut")
    cost = block | {"exported": [s.index for s in m.splits if s.index is not None]}
    if run_note is not None:
        cost["note"] = f"{sel.note}; {run_note}" if sel.note else run_note
    result = PlanResult(bundle, ranking.with_cost(per_cut, cost), sel, None)
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
            f"cannot write {path} ({e}): the plan is above; pass --out PATH or --no-write (e.g. for a read-only bundle)"
        ) from e
    result.written = path
    return path


@dataclass(frozen=True)
class PairPlan:
    """The (cut, budget) choice re-run on a bundle's grid, and the pair the bundle exported (None: none)."""

    bundle: Path
    choice: GridChoice
    exported: GridExport | None

    @property
    def same(self) -> bool | None:
        """Whether the re-run choice picks the exported pair (None without a choice or an exported pair)."""
        if self.choice.chosen is None or self.exported is None:
            return None
        p = self.choice.chosen.point
        return (p.cut, p.budget) == (self.exported.cut, self.exported.budget)

    def lines(self) -> list[str]:
        return replan_lines(self.choice, self.exported)


def plan_pair(
    bundle: Path | str,
    *,
    link: str | None = None,
    max_latency_ms: float | None = None,
    min_accuracy: str | None = None,
    server: str | None = None,
    expect_sha256: str | None = None,
) -> PairPlan | None:
    """Re-run the (cut, budget) choice on the bundle's grid for ``link`` (default: the export's) and a target
    (torch-free; see the module docstring). None when the bundle was not exported from a grid choice and
    ``min_accuracy`` asks for none: then ``--max-latency-ms`` is :func:`plan`'s constraint on the cuts.
    """
    if expect_sha256 is not None:
        expect_sha256 = contract.check_sha256_text(expect_sha256, "--expect-sha256")
    m = contract.read_manifest(bundle)
    contract.check_expected_sha256(m, expect_sha256)
    exported = m.grid_choice
    if exported is None and min_accuracy is None:
        return None
    grid = grid_of(contract.read_ranking(m).to_json())
    if grid is None:
        raise BadInputError(
            f"{contract.RANKING_FILE} of {bundle} has no rate-accuracy grid: export with --budgets 16B..1KiB"
        )
    recorded = m.options
    link = link or recorded.link
    if link is None or link.strip().lower() == MEASURED_LINK:
        raise BadInputError(
            "--min-accuracy / --max-latency-ms on the grid need a link: pass --link wifi|lte|5g|ethernet"
        )
    if max_latency_ms is None and min_accuracy is None and exported is not None:  # the export's own target
        if exported.mode == "max_latency_ms":
            max_latency_ms = exported.limit
        else:
            min_accuracy = f"{exported.limit:g}"  # the absolute score it had to reach
    profiles = {"target": m.target_name, "server": server or recorded.server}
    pair = PairChoice(
        link=link,
        max_latency_ms=max_latency_ms,
        min_accuracy=min_accuracy,
        **{k: v for k, v in profiles.items() if v is not None},
    )
    return PairPlan(Path(bundle), choose_pair(grid, pair), exported)
