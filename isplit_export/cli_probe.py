"""The probe's lines under a ranking (``rank`` and ``export`` print them): the cut the probe would choose
instead of the CUI's, and the cuts where its code was fitted on too few images. Torch-free."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from isplit_export.ranking.candidates import Ranking


def probe_caveat(r: Ranking) -> str | None:
    """One line when the probe's code was fitted on too few images at some probed cuts (the deepest three named)."""
    probe = r.probe
    if probe is None or not (under := probe.underfitted()):
        return None
    named = "; ".join(f"cut {i}: {why}" for i, why in sorted(under.items(), key=lambda t: -t[0])[:3])
    return (
        f"the probe's code is fitted on too few images at {len(under)} of {len(probe.scores)} probed cuts "
        f"({probe.train_images} train images; {named}): pass more images (--data) for a probe that measures the cut"
    )


def probe_choice(r: Ranking) -> str | None:
    """One line when the probe would choose another cut than the CUI (None otherwise, or without a probe)."""
    if r.probe is None or not r.ranked(1):
        return None
    cui_pick, best = r.ranked(1)[0], r.probe.best()
    if best is None or best == cui_pick.index:
        return None
    s, c = r.probe.scores, r.cuts[best]
    mine = s.get(cui_pick.index)
    if mine is not None and mine["value"] is not None and mine["value"] >= s[best]["value"]:
        return None  # tied: the probe has no reason to move away from the CUI's choice
    theirs = f"{100 * mine['value']:.1f}%" if mine else "not probed"
    return (
        f"the probe at {r.probe.spec.text} would choose cut {best} ({c.node}, {s[best]['metric']} "
        f"{100 * s[best]['value']:.1f}%) over CUI's cut {cui_pick.index} ({cui_pick.node}, {theirs}): "
        "--objective probe exports it"
    )
