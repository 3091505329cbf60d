"""Network links: the presets (``wifi``, ``lte``, ``5g``, ``ethernet``, each with its source) and
``--link <Mbit/s>[,<RTT ms>]``, range-checked. Torch- and onnx-free, so the options refuse a bad
``--link`` before any work; the cost model (:mod:`isplit_export.targets.cost`) prices a link.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

from isplit_export.errors import BadInputError


@dataclass(frozen=True)
class Link:
    """A network link: uplink bandwidth in Mbit/s (device -> server) and round-trip time in ms."""

    name: str
    mbit_s: float
    rtt_ms: float
    source: str

    def transfer_ms(self, nbytes: float) -> float:
        """Milliseconds to send ``nbytes`` at the link's bandwidth (RTT not included)."""
        return nbytes * 8.0 / (self.mbit_s * 1e3)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "mbit_s": self.mbit_s, "rtt_ms": self.rtt_ms, "source": self.source}


LINKS: dict[str, Link] = {
    "wifi": Link(
        "wifi",
        38.32,
        20.0,
        "upload: Ookla Speedtest global median fixed-broadband upload, Q3 2023 (the home uplink behind the Wi-Fi); "
        "RTT: the Wi-Fi hop alone, median about 20 ms (Li et al., INFOCOM 2016, 47 APs: over 50% of packets above "
        "20 ms): assumption that the rest of the path adds little",
    ),
    "lte": Link(
        "lte",
        6.3,
        55.25,
        "Opensignal, State of Mobile: USA, May 2019 (Q1 2019): 4G average upload 6.3 Mbit/s; latency 44.1-66.4 ms "
        "across operators, midpoint used",
    ),
    "5g": Link(
        "5g",
        21.08,
        32.0,
        "upload: Ookla, State of 5G worldwide, Q3 2021 global median 5G upload; RTT: Ookla Speedtest Intelligence "
        "Q1 2021 US median 5G latency (AT&T, Verizon 32 ms; T-Mobile 33 ms)",
    ),
    "ethernet": Link(
        "ethernet",
        941.5,
        0.2,
        "1000BASE-T (IEEE 802.3ab) TCP goodput: 1000 Mbit/s x 1448 payload / 1538 wire bytes per frame; "
        "RTT 0.2 ms: assumption (one switched LAN hop)",
    ),
}
LINK_MBIT_RANGE = (1e-3, 1e6)
"""Physical range of a custom link's bandwidth in Mbit/s: 1 kbit/s to 1 Tbit/s (1e-320 gave inf ms)."""
LINK_RTT_RANGE = (0.0, 600_000.0)
"""Physical range of a custom link's RTT in ms: 0 to 10 minutes."""
_CUSTOM = re.compile(r"^\s*([^,]+?)\s*(?:,\s*([^,]+?)\s*)?$")


def parse_link(text: str) -> Link:
    """A preset (``wifi``, ``lte``, ``5g``, ``ethernet``) or ``<Mbit/s>[,<RTT ms>]`` (RTT 0 when omitted)."""
    key = text.strip().lower()
    if key in LINKS:
        return LINKS[key]
    m = _CUSTOM.match(text)
    usage = f"choose {', '.join(LINKS)} or <Mbit/s>[,<RTT ms>] (e.g. 20,40)"
    if not m:
        raise BadInputError(f"unknown --link {text!r}: {usage}")
    try:
        mbit = float(m.group(1))
        rtt = float(m.group(2)) if m.group(2) is not None else 0.0
    except ValueError:
        raise BadInputError(f"unknown --link {text!r}: {usage}") from None
    if not math.isfinite(mbit) or not LINK_MBIT_RANGE[0] <= mbit <= LINK_MBIT_RANGE[1]:
        raise BadInputError(
            f"--link {text!r}: the bandwidth must be a positive number of Mbit/s from {LINK_MBIT_RANGE[0]:g} to "
            f"{LINK_MBIT_RANGE[1]:g} (1 kbit/s to 1 Tbit/s), got {m.group(1)}"
        )
    if not math.isfinite(rtt) or not LINK_RTT_RANGE[0] <= rtt <= LINK_RTT_RANGE[1]:
        raise BadInputError(
            f"--link {text!r}: the RTT must be a non-negative number of ms up to {LINK_RTT_RANGE[1]:g}, got {m.group(2)}"
        )
    return Link(f"{mbit:g} Mbit/s, {rtt:g} ms", mbit, rtt, "given on the command line")
