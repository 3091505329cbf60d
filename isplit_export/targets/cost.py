"""What each cut costs, Neurosurgeon-style: head on the device, the boundary over the link, tail on the server.

Torch-free: everything comes from the ranking (FLOPs per cut, boundary shape), the target profiles
(``isplit_export/profiles/*.json``, effective GFLOP/s per precision and power) and a
:class:`~isplit_export.links.Link`.

Per cut, at batch 1:

- device ms = head FLOPs / the device's effective rate for the engine precision (on DLA core 0 when the
  build plan puts the head there: a Jetson with DLA and an fp16/int8 precision);
- transfer ms = boundary bytes x 8 / link bandwidth; the bytes are the boundary under the bundle's
  encoding (elements x 4/2/1 for fp32/fp16/int8), or the manifest's ``bytes_per_image`` where the
  bundle has one (it includes a bottleneck's code size);
- link ms = transfer ms + the link's RTT (request out, the small result back);
- server ms = tail FLOPs / the server's effective rate for its default precision;
- end-to-end ms = device + link + server; device energy mJ = power W x device ms (compute only: the
  radio's energy is not modelled).

Baselines (Neurosurgeon's): all on the device (no link: the result is used on the device) and all on
the server, sending the preprocessed input tensor (C x H x W elements under the same encoding as the
boundary; a JPEG would be smaller, so this baseline is pessimistic for the server).

A measured latency (see :mod:`isplit_export.jobs.plan`) replaces the estimate and is flagged with its source.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from isplit_export.contract import RankingFile
from isplit_export.errors import BadInputError
from isplit_export.exporting.encoding import element_bytes
from isplit_export.links import Link
from isplit_export.numbers import rounded
from isplit_export.targets.profiles import DLA_PRECISIONS, TargetProfile

"""Bytes per boundary element of each encoding (encoding.ENCODINGS)."""


@dataclass(frozen=True)
class Compute:
    """Where one side runs: target, unit (``gpu``, ``dla0``, ``cpu``), precision, GFLOP/s and power."""

    target: str
    unit: str
    precision: str
    gflops: float
    power_w: float | None

    def ms(self, flops: float) -> float:
        return flops / (self.gflops * 1e6)

    def to_json(self) -> dict[str, Any]:
        return {
            "target": self.target,
            "unit": self.unit,
            "precision": self.precision,
            "gflops": self.gflops,
            "power_w": self.power_w,
        }


def compute_for(profile: TargetProfile, *, head: bool) -> Compute:
    """The unit and rate a profile runs at its default precision; the head goes to DLA core 0 like the plan."""
    if profile.cost is None:
        raise BadInputError(
            f"target {profile.name} has no cost profile: add a 'cost' block (isplit_export/profiles/README.md)"
        )
    p = profile.default_precision
    dla = head and profile.has_dla and p in DLA_PRECISIONS  # engine_build.default_head_dla_core's rule
    unit = "dla0" if dla else ("gpu" if profile.uses_tensorrt else "cpu")
    return Compute(profile.name, unit, p, profile.cost.rate(p, dla=dla), profile.cost.power_w)


def cut_cost(
    head_flops: float,
    tail_flops: float,
    nbytes: int,
    device: Compute,
    server: Compute,
    link: Link,
    measured: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The cost row of one cut (or a baseline); ``measured`` may hold ``device_ms`` / ``link_ms`` / ``server_ms`` and sources."""
    measured = measured or {}
    device_ms = measured.get("device_ms")
    device_ms = float(device_ms) if device_ms is not None else (device.ms(head_flops) if head_flops else 0.0)
    server_ms = measured.get("server_ms")
    server_ms = float(server_ms) if server_ms is not None else (server.ms(tail_flops) if tail_flops else 0.0)
    sends = tail_flops > 0
    transfer = link.transfer_ms(nbytes) if sends else 0.0
    link_ms = transfer + link.rtt_ms if sends else 0.0
    if sends and measured.get("link_ms") is not None:  # a real round trip minus the server (run.json)
        link_ms = float(measured["link_ms"])
        transfer = max(link_ms - link.rtt_ms, 0.0)
    energy = device.power_w * device_ms if device.power_w is not None else None
    return {
        "head_flops": int(head_flops),
        "bytes": int(nbytes) if sends else 0,
        "device_ms": rounded(device_ms, 6, decimals=True),
        "transfer_ms": rounded(transfer, 6, decimals=True),
        "link_ms": rounded(link_ms, 6, decimals=True),
        "server_ms": rounded(server_ms, 6, decimals=True),
        "total_ms": rounded(device_ms + link_ms + server_ms, 6, decimals=True),
        "device_energy_mj": rounded(energy, 6, decimals=True),
        "measured": {k: measured[k] for k in ("device", "link", "server") if measured.get(k)},
    }


def boundary_bytes(shape: list[int], encoding: str) -> int:
    """Bytes of a boundary of ``shape`` (batch 1) under ``encoding``."""
    return math.prod(int(d) for d in shape) * element_bytes(encoding)


def cost_rows(
    ranking: RankingFile,
    device: Compute,
    server: Compute,
    link: Link,
    encoding: str,
    *,
    bytes_override: Mapping[int, int] | None = None,
    measured: Mapping[Any, Mapping[str, Any]] | None = None,
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """Cost rows for every cut of an ``isplit.ranking/2`` ranking, and the two baselines.

    ``bytes_override`` (cut index -> bytes) is what a bundle actually sends (e.g. a bottleneck's code);
    ``measured`` (cut index, or ``"device_only"`` / ``"server_only"``, -> measured figures) replaces estimates.
    """
    total, input_bytes = ranking.require_flops()
    bytes_override = bytes_override or {}
    measured = measured or {}
    rows = []
    for cand in ranking.candidates:
        i = cand.index
        head = float(cand.head_flops) if cand.head_flops is not None else cand.head_flops_share * total
        nbytes = bytes_override.get(i, boundary_bytes(list(cand.shape), encoding))
        rows.append(cut_cost(head, max(total - head, 0.0), nbytes, device, server, link, measured.get(i)))
    elements = input_bytes // 4  # the fp32 input tensor, C x H x W
    baselines = {
        "device_only": cut_cost(total, 0.0, 0, device, server, link, measured.get("device_only")),
        "server_only": cut_cost(
            0.0,
            total,
            boundary_bytes([elements], encoding),
            device,
            server,
            link,
            measured.get("server_only"),
        ),
    }
    return rows, baselines
