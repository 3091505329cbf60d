"""The public Python API; the CLI (``isplit_export.cli``) is a thin layer over these functions.

    from isplit_export import rank, export, verify
    result = rank("efficientnet_lite0", top=3)                 # I-Split ranking
    print(result.ranking.table())
    export("efficientnet_lite0", out="bundle", top=3, target="onnx")   # verified bundle
    verify("bundle")                                            # re-check a bundle anywhere
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import BadInputError

if TYPE_CHECKING:  # torch-free at import time: `verify` must run without PyTorch
    from .data import ImageSet
    from .graph import TracedModel
    from .models import LoadedModel
    from .ranking import Ranking

DEFAULT_BATCH = 16


@dataclass
class RankResult:
    """What :func:`rank` computed: the loaded model, its trace, the images and the ranking."""

    model: LoadedModel
    traced: TracedModel
    images: ImageSet
    ranking: Ranking


def rank(
    model: str = "efficientnet_lite0",
    *,
    data: str | Path | None = None,
    classes: Sequence[str] | None = None,
    weights: str = "default",
    images: int | None = None,
    score: str = "top",
    top: int | None = None,
    input_size: int | None = None,
    batch_size: int = DEFAULT_BATCH,
    out: str | Path | None = None,
    progress: bool = False,
    seed: int = 0,
    device: str = "cpu",
) -> RankResult:
    """Rank every valid cut of ``model`` by I-Split's CUI on ``data`` (default: skimage photos).

    ``classes`` restricts the CUI to a class subset (ImageFolder folder names/indices, or model class
    names/indices matched against the model's predictions for unlabelled data). With ``out`` the
    ranking is written as ``out/ranking.json``, ``out/cui.png`` and ``out/cde.png``. ``device``
    (e.g. ``"cuda"``) is where the forward/backward passes of the ranking run.
    """
    from . import data as data_mod
    from .graph import trace
    from .importance import compute_importance
    from .models import load_model
    from .ranking import Ranking

    if top is not None and top < 1:
        raise BadInputError(f"--top {top}: pass a positive number of splits")
    if batch_size < 1:
        raise BadInputError(f"--batch-size {batch_size}: pass a positive batch size")
    _check_device(device)
    loaded = load_model(model, weights, input_size=input_size, seed=seed)
    imgs = data_mod.load_images(
        Path(data) if data is not None else None,
        loaded.preprocessing,
        class_names=loaded.class_names,
        classes=classes,
        limit=images,
    )
    traced = trace(loaded.module, loaded.preprocessing.input_shape)
    imp = compute_importance(traced, imgs, score=score, batch_size=batch_size, device=device, progress=progress)
    subset: list[int] | None = None
    if classes and not imgs.folders:
        subset = data_mod.resolve_model_classes(classes, loaded.class_names, loaded.num_classes)
    cui = imp.cui(subset)
    curves = {"all images": imp.cui().tolist(), "selected classes": cui.tolist()} if subset is not None else None
    c, h, w = loaded.preprocessing.input_shape
    ranking = Ranking(
        model=loaded.name,
        weights=loaded.weights,
        images=imp.images if subset is None else sum(imp.counts.get(k, 0) for k in subset),
        classes=list(classes) if classes else None,
        score=score,
        cuts=traced.cuts,
        cui=cui,
        input_bytes=4 * c * h * w,
        top=top,
        curves=curves,
    )
    if out is not None:
        write_ranking(ranking, Path(out))
    return RankResult(loaded, traced, imgs, ranking)


def _check_device(device: str) -> None:
    import torch

    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise BadInputError(f"--device {device!r} is not a torch device: use cpu or cuda") from err
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise BadInputError(f"--device {device}: no CUDA GPU is usable here: use --device cpu")


def write_ranking(ranking: Ranking, out: Path) -> list[Path]:
    """Write ``ranking.json``, ``cui.png`` and ``cde.png`` into ``out`` (created if needed)."""
    from .files import write_json
    from .plots import plot_cde, plot_cui

    out.mkdir(parents=True, exist_ok=True)
    data = ranking.to_json()
    paths = [out / "ranking.json", out / "cui.png", out / "cde.png"]
    write_json(paths[0], data)
    plot_cui(data, paths[1])
    plot_cde(data, paths[2])
    return paths
