"""The measured figures a re-plan (:func:`isplit_export.jobs.plan.plan`) puts in place of the
estimates, by cut index: from the manifest's ``run`` block and ``verify.json`` (:func:`manifest_figures`),
from ``run.json`` (:func:`run_figures`), and the link of ``--link measured`` fitted to the remote runs
(:func:`measured_link`). Which figure replaces which estimate: the docstring of ``jobs/plan.py``.
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from isplit_export import contract
from isplit_export.errors import BadInputError
from isplit_export.links import LINK_MBIT_RANGE, LINK_RTT_RANGE, Link
from isplit_export.targets.cost import Compute
from isplit_export.targets.profiles import TargetProfile
from isplit_export.verification.backends import BACKENDS

MEASURED_LINK = "measured"
"""``plan --link measured`` (the default when run.json exists): the link as ``isplit-export run`` measured it."""


def manifest_figures(
    m: contract.Manifest,
    device: Compute,
    device_profile: TargetProfile,
    server: Compute,
    server_profile: TargetProfile,
) -> dict[Any, dict[str, Any]]:
    """Measured figures by cut index (and baselines) from the manifest's run block and verify.json.

    The build host's timings (onnxruntime, one thread) stand for a side whose target runs the bundle's
    models as they are (:attr:`TargetProfile.runs_bundle_models`); ``verify.json`` rows for the device when
    their backend ran engines built on the device (:attr:`Backend.device_engines`) at its precision.
    Every figure was validated by :mod:`isplit_export.contract` (finite, positive, bounded);
    ``verify.json`` is used only when it names this manifest.
    """
    out: dict[Any, dict[str, Any]] = {}
    by_dir = {s.dir: s.index for s in m.splits if s.index is not None}
    source = f"onnxruntime 1 thread on {m.build_host or 'the build host'}"
    on_device, on_server = device_profile.runs_bundle_models, server_profile.runs_bundle_models
    full: list[float] = []
    for rel, lat in m.build_latencies.items():
        if rel not in by_dir:
            continue
        i = by_dir[rel]
        if on_device and lat.head_ms is not None:
            out.setdefault(i, {}).update(device_ms=lat.head_ms, device=source)
        if on_server and lat.tail_ms is not None:
            out.setdefault(i, {}).update(server_ms=lat.tail_ms, server=source)
        if lat.full_ms is not None:
            full.append(lat.full_ms)
    if full:  # every split timed the full model too: the baselines take the median of those runs
        full_ms = statistics.median(full)
        if on_device:
            out["device_only"] = {"device_ms": full_ms, "device": source}
        if on_server:
            out["server_only"] = {"server_ms": full_ms, "server": source}
    for row in contract.read_verify_latencies(m):
        backend = BACKENDS.get(row.backend)
        if backend is None or not backend.device_engines or row.precision != device.precision:
            continue
        if row.dir in by_dir and row.latency.head_ms is not None:
            src = f"{row.backend} {device.precision} on the device (verify.json)"
            out.setdefault(by_dir[row.dir], {}).update(device_ms=row.latency.head_ms, device=src)
    return out


def run_figures(
    runs: Mapping[str, contract.RunRecord], device_profile: TargetProfile, link_measured: bool
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
        if r.head_ms is not None and device_profile.runs_on(r.backend):
            row.update(device_ms=r.head_ms, device=f"head p50, {r.backend} on {r.host} (run.json)")
        if row:
            out[r.index] = row
    return out


def local_runs_note(runs: Mapping[str, contract.RunRecord], link: str) -> str | None:
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


def measured_link(bundle: Path, runs: Mapping[str, contract.RunRecord]) -> Link:
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
