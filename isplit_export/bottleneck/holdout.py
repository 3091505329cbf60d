"""A deterministic train / held-out split of an image set, by image name.

The bottleneck at a cut is trained on the *train* part only; its accuracy is measured on the
*held-out* part, which training never sees. The split orders the images by
``sha256(f"{seed}:{name}")`` and holds out the first ``fraction`` of them, so it depends on the
names and the seed only (not on the order the files were listed in), and adding images moves few
others across the line.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from isplit_export.errors import BadInputError

MIN_TRAIN = 6
"""Fewest images a bottleneck trains on."""

MIN_HELD_OUT = 2
"""Fewest held-out images a measurement is made on."""


def minimum_images(fraction: float) -> int:
    """The fewest images for which ``fraction`` holds out at least :data:`MIN_HELD_OUT` and leaves :data:`MIN_TRAIN`."""
    n = MIN_TRAIN + MIN_HELD_OUT
    while _held_count(n, fraction) < MIN_HELD_OUT or n - _held_count(n, fraction) < MIN_TRAIN:
        n += 1
    return n


def _held_count(n: int, fraction: float) -> int:
    return max(MIN_HELD_OUT, math.ceil(n * fraction))


def _key(seed: int, name: str) -> bytes:
    """The hashed key of an image name; a non-UTF-8 file name (a surrogate-escaped ``str``) keeps its raw bytes."""
    return f"{seed}:{name}".encode("utf-8", "surrogateescape")


def split_holdout(names: Sequence[str], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """``(train, held_out)`` indices into ``names`` (each sorted ascending, disjoint, covering all).

    Raises :class:`BadInputError` (one line, naming the minimum) when there are too few images.
    """
    if not 0.0 < fraction < 1.0:
        raise BadInputError(f"held-out fraction {fraction}: pass a fraction strictly between 0 and 1")
    need = minimum_images(fraction)
    if len(names) < need:
        raise BadInputError(
            f"too few images to train a bottleneck and hold some out: {len(names)} given, at least {need} needed "
            f"({MIN_TRAIN} to train, {MIN_HELD_OUT} held out): pass --data with more images"
        )
    if len(set(names)) != len(names):
        raise BadInputError("image names are not unique: the held-out split needs a unique name per image")
    keyed = sorted(range(len(names)), key=lambda i: hashlib.sha256(_key(seed, names[i])).hexdigest())
    k = _held_count(len(names), fraction)
    return sorted(keyed[k:]), sorted(keyed[:k])
