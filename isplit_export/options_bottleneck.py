"""The bottleneck's options: the ``--bottleneck`` size (a ratio of the boundary or bytes per image,
:func:`parse_size`) and how the bottleneck is trained (:class:`BottleneckOptions`), for the export, the
ranking's probe and the study. Torch-free."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal, get_args

from isplit_export.errors import BadInputError

Finetune = Literal["none", "tail"]
FINETUNE: tuple[str, ...] = get_args(Finetune)
"""``--finetune`` values: train only the encoder/decoder, or also the tail's own weights."""

DEFAULT_ENCODING = "int8"
"""Boundary encoding of the code when ``--bottleneck`` is given and ``--boundary`` is not."""

_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}


@dataclass(frozen=True)
class SizeSpec:
    """A parsed ``--bottleneck`` value: ``kind`` ``ratio`` (of the boundary's elements) or ``bytes`` per image."""

    kind: str
    value: float
    text: str

    def elements(self, boundary_elements: int, bytes_per_element: int) -> int:
        """Code elements this spec allows at a boundary of ``boundary_elements`` (may be 0: unreachable)."""
        if self.kind == "ratio":
            return math.floor(self.value * boundary_elements + 1e-9)
        return int(self.value) // bytes_per_element

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.text, "kind": self.kind, "value": self.value}


def parse_size(text: str) -> SizeSpec:
    """Parse ``1/16``, ``0.0625`` (ratios in (0, 1]) or ``64B``, ``2KiB``, ``1MB`` (bytes per image)."""
    t = str(text).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KkMm]i?[Bb]|[Bb])", t)
    if m:
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
        if n < 1 or n != int(n):
            raise BadInputError(
                f"--bottleneck {t}: a size must be a whole number of bytes >= 1 (e.g. 64B, 2KiB)"
            )
        return SizeSpec("bytes", float(int(n)), t)
    try:
        ratio = float(Fraction(t)) if "/" in t else float(t)
    except (ValueError, ZeroDivisionError) as err:
        raise BadInputError(
            f"--bottleneck {t!r} is neither a ratio (1/16, 0.0625) nor a size (64B, 2KiB): pass one of those"
        ) from err
    if not 0.0 < ratio <= 1.0 or not math.isfinite(ratio):
        raise BadInputError(
            f"--bottleneck {t}: a ratio must be in (0, 1] (e.g. 1/16); for a fixed size add a unit (e.g. {t}B)"
        )
    return SizeSpec("ratio", ratio, t)


HOLDOUT = 0.25
"""The fraction of the images held out from the bottleneck's (and the probe's) fitting."""

DEFAULT_LADDER_FACTOR = 2
"""The step of a ``--budgets`` range without ``*F``: a log2 ladder."""

MAX_LADDER_POINTS = 64
"""At most this many budgets in one ladder (each is a tail pass per probed cut); an open range stops there."""


@dataclass(frozen=True)
class Ladder:
    """A parsed ``--budgets`` value: bytes per image, as a list (``16B,64B,1KiB``) or a range ``A..B`` with a
    step factor (``16B..16KiB``, ``16B..1KiB*4``; ``*2`` when omitted). A range without an end (``16B..``)
    runs up to the largest probed cut's fp16 boundary size (:meth:`budgets`)."""

    text: str
    values: tuple[int, ...] = ()
    start: int | None = None
    stop: int | None = None
    factor: int = DEFAULT_LADDER_FACTOR

    def budgets(self, fp16_boundary_bytes: int) -> list[int]:
        """The ladder's budgets in bytes, ascending; an open range ends at ``fp16_boundary_bytes``."""
        if self.start is None:
            return sorted(set(self.values))
        stop = self.stop if self.stop is not None else fp16_boundary_bytes
        out: list[int] = []
        b = self.start
        while b <= stop and len(out) < MAX_LADDER_POINTS:
            out.append(b)
            b *= self.factor
        return out

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.text, "factor": self.factor if self.start is not None else None}


def _ladder_bytes(text: str, whole: str) -> int:
    """One rung of a ladder: a size in bytes (``64B``, ``2KiB``); a ratio is refused."""
    hint = f"--budgets {whole}: {text!r} is not a size in bytes; pass e.g. 16B..16KiB, 16B..1KiB*4 or 16B,64B,1KiB"
    if not text:
        raise BadInputError(hint)
    try:
        spec = parse_size(text)
    except BadInputError as err:
        raise BadInputError(hint) from err
    if spec.kind != "bytes":
        raise BadInputError(hint)
    return int(spec.value)


def parse_ladder(text: str) -> Ladder:
    """Parse a ``--budgets`` ladder (:class:`Ladder`); a bad one is one line naming the fix."""
    t = str(text).strip()
    if ".." in t:
        rng, _, factor_text = t.partition("*")
        a, _, b = rng.partition("..")
        factor = DEFAULT_LADDER_FACTOR
        if factor_text:
            if not factor_text.strip().isdigit() or int(factor_text) < 2:
                raise BadInputError(
                    f"--budgets {t}: the step factor after '*' must be a whole number >= 2 (e.g. 16B..1KiB*4)"
                )
            factor = int(factor_text)
        start = _ladder_bytes(a.strip(), t)
        stop = _ladder_bytes(b.strip(), t) if b.strip() else None
        if stop is not None and stop < start:
            raise BadInputError(f"--budgets {t}: the range's end is below its start; pass e.g. 16B..1KiB")
        ladder = Ladder(t, start=start, stop=stop, factor=factor)
        if stop is not None and math.log(stop / start, factor) >= MAX_LADDER_POINTS:
            raise BadInputError(
                f"--budgets {t}: more than {MAX_LADDER_POINTS} budgets; pass a larger step factor"
            )
        return ladder
    if "*" in t:
        raise BadInputError(f"--budgets {t}: a step factor needs a range (e.g. 16B..1KiB*4)")
    values = tuple(_ladder_bytes(part.strip(), t) for part in t.split(","))
    if len(set(values)) > MAX_LADDER_POINTS:
        raise BadInputError(f"--budgets {t}: more than {MAX_LADDER_POINTS} budgets; pass fewer")
    return Ladder(t, values=values)


@dataclass(frozen=True)
class BottleneckOptions:
    """How the bottleneck is sized and trained (``ExportOptions.bottleneck``, ``StudyOptions.bottleneck``).

    ``size``: ratio or bytes per image (:func:`parse_size`); ``finetune``: ``none`` or ``tail``;
    ``train_steps`` / ``train_batch``: the budget (0 steps keeps the probe's linear code,
    :mod:`isplit_export.bottleneck.pca`); ``holdout``: the fraction of images held out from
    training (measured on, never trained on). Training runs all ``train_steps`` under a cosine learning-rate
    decay (no early stopping) and keeps the checkpoint best on the validation slice (``validation``).
    """

    size: str = "1/16"
    finetune: Finetune = "none"
    train_steps: int = 256
    train_batch: int = 8
    temperature: float = 4.0
    mse_weight: float = 1.0
    lr: float = 2e-3
    holdout: float = HOLDOUT
    validation: float = 0.2
    """Fraction of the *train* images kept out of the gradient steps to choose the checkpoint on."""

    def __post_init__(self) -> None:
        parse_size(self.size)
        if self.finetune not in FINETUNE:
            raise BadInputError(f"--finetune {self.finetune!r}: choose {' or '.join(FINETUNE)}")
        if self.train_steps < 0 or self.train_batch < 1:
            raise BadInputError(
                f"--train-steps {self.train_steps} / --train-batch {self.train_batch}: pass 0 or more steps "
                "(0: the probe's untrained code) and a positive batch"
            )
        if not 0.0 < self.validation < 1.0:
            raise BadInputError(
                f"validation fraction {self.validation}: pass a fraction strictly between 0 and 1"
            )
        if not 0.0 < self.holdout < 1.0:
            raise BadInputError(f"held-out fraction {self.holdout}: pass a fraction strictly between 0 and 1")
        if self.temperature <= 0 or self.lr <= 0 or self.mse_weight < 0:
            raise BadInputError("bottleneck temperature and lr must be positive, mse_weight >= 0")

    @property
    def spec(self) -> SizeSpec:
        return parse_size(self.size)


def as_bottleneck(value: BottleneckOptions | str | None) -> BottleneckOptions | None:
    """Accept a :class:`BottleneckOptions`, a size spec string (``"1/16"``) or None."""
    if value is None or isinstance(value, BottleneckOptions):
        return value
    if isinstance(value, str):
        return BottleneckOptions(size=value)
    raise BadInputError(
        f"bottleneck must be a size spec like '1/16' or BottleneckOptions, got {type(value).__name__}"
    )
