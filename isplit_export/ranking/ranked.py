"""What the rank job computed (:class:`RankResult`): the value the export, the study and the probe start from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from isplit_export.data import ImageSet
    from isplit_export.models import LoadedModel
    from isplit_export.options import RankOptions
    from isplit_export.ranking.candidates import Ranking
    from isplit_export.ranking.graph import TracedModel


@dataclass
class RankResult:
    """The options, the loaded model, its trace, the images and the ranking (:func:`isplit_export.rank`)."""

    options: RankOptions
    model: LoadedModel
    traced: TracedModel
    images: ImageSet
    ranking: Ranking
