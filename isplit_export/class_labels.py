"""Which model class the images of each class folder are, decided before any model work.

For an ImageFolder ``--data`` (class sub-folders), in this order:

* ``--class-map FILE`` (:class:`isplit_export.options.ClassMap`): folder -> class index; every class
  folder must be in it and every index must be a class of the model;
* the folder names: every folder names a model class (a class name, a comma-separated synonym, or a
  class index, case-insensitive), where the weights carry class names (torchvision's
  ``weights.meta["categories"]``, a factory's ``ModelSpec.class_names``; ``--weights none`` has none);
* no folder names a class: the images are unlabelled and a study measures the agreement with the full
  model, not accuracy; the commands say so once (:func:`announce`), and ``ranking.json`` / ``study.json`` name the labels' source.

Some folders naming classes while others do not, a folder missing from the map, an index out of range
and a ``--classes`` entry that has no folder are refused in one line, before the model is loaded
(:func:`resolve_class_labels` runs first in ``rank`` and ``study``).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from isplit_export.class_names import (
    class_folders,
    folder_label,
    resolve_folder_classes,
    resolve_model_classes,
)
from isplit_export.errors import BadInputError
from isplit_export.options import RankOptions

log = logging.getLogger(__name__)

LABEL_SOURCES = ("class_map", "folder_names", "none")
"""Where the images' labels come from: ``--class-map``, the folder names, or nowhere (agreement)."""
MAP_HINT = "--class-map FILE (a JSON object {folder: class index})"


@dataclass(frozen=True)
class ClassLabels:
    """The resolved labels of ``--data`` and the ``--classes`` selection.

    ``folders``: the class folders (empty for a flat folder or the default photos); ``labels``: folder ->
    model class index (empty when no folder names a class); ``keep``: the folders ``--classes`` chose
    (None: all); ``subset``: the model classes ``--classes`` chose on data without class folders (None:
    not yet known, or all); ``source``: one of :data:`LABEL_SOURCES`.
    """

    folders: tuple[str, ...]
    labels: dict[str, int]
    keep: frozenset[str] | None
    subset: tuple[int, ...] | None
    source: str
    note: str | None = None

    def check_range(self, num_classes: int) -> None:
        """Every mapped index is a class of a model with ``num_classes`` classes."""
        for folder, index in sorted(self.labels.items()):
            if index >= num_classes:
                raise BadInputError(
                    f"--class-map: class folder '{folder}' maps to class {index}, but the model has "
                    f"{num_classes} classes (0..{num_classes - 1}): map it to one of them"
                )

    def subset_for(
        self, classes: Sequence[str] | None, class_names: Sequence[str] | None, n: int
    ) -> list[int] | None:
        """After loading: the model classes of ``--classes`` on data without class folders (None with class
        folders or without ``--classes``), indices checked against the loaded model's ``n`` classes."""
        if not classes or self.folders:
            return None
        return (
            list(self.subset) if self.subset is not None else resolve_model_classes(classes, class_names, n)
        )


def resolve_class_labels(opts: RankOptions) -> ClassLabels:
    """Resolve the labels and the ``--classes`` selection of ``opts`` (torch model not loaded; a
    ``module:factory`` is called for its class names). Mismatches raise :class:`BadInputError`."""
    data = Path(opts.data) if opts.data is not None else None
    folders = class_folders(data) if data is not None and data.is_dir() else []
    cmap = opts.class_map
    if not folders:
        if cmap is not None:
            where = f"--data {data}" if data is not None else "the default photos"
            raise BadInputError(
                f"--class-map maps class folders, but {where} has none: pass --data with one sub-folder per class"
            )
        return ClassLabels((), {}, None, _model_subset(opts.classes, opts), "none")
    keep = frozenset(resolve_folder_classes(opts.classes, folders)) if opts.classes else None
    if cmap is not None:
        return _from_map(opts, folders, keep)
    from isplit_export.models import declared_class_names  # lazy: imports torch (after the checks without it)

    names = declared_class_names(opts.model, opts.weights)
    labels = {f: folder_label(f, names) for f in folders}
    named = [f for f in folders if labels[f] >= 0]
    unnamed = [f for f in folders if labels[f] < 0]
    if not unnamed:
        return ClassLabels(tuple(folders), labels, keep, None, "folder_names")
    if named:
        raise BadInputError(
            f"class folder(s) {_listed(unnamed)} of {data} name no class of {opts.model} while "
            f"{_listed(named)} do: rename them after its classes or pass {MAP_HINT}"
        )
    why = " (--weights none: random weights have no classes)" if opts.weights == "none" else ""
    note = (
        f"the class folders of {data} ({_listed(folders)}) name no class of {opts.model}{why}: "
        f"measuring agreement with the full model, not accuracy; pass {MAP_HINT} for accuracy"
    )
    return ClassLabels(tuple(folders), {}, keep, None, "none", note)


def _from_map(opts: RankOptions, folders: list[str], keep: frozenset[str] | None) -> ClassLabels:
    assert opts.class_map is not None
    mapping = opts.class_map.mapping()
    path = opts.class_map.path
    missing = [f for f in folders if f not in mapping]
    if missing:
        raise BadInputError(
            f"--class-map {path} does not map class folder(s) {_listed(missing)} of {opts.data}: "
            "add them (every class folder needs a class index)"
        )
    result = ClassLabels(tuple(folders), {f: mapping[f] for f in folders}, keep, None, "class_map")
    from isplit_export.models import declared_class_names  # lazy: imports torch (after the checks without it)

    names = declared_class_names(opts.model, opts.weights)
    if names:  # without class names the range is checked once the model is loaded
        result.check_range(len(names))
    return result


def _model_subset(classes: Sequence[str] | None, opts: RankOptions) -> tuple[int, ...] | None:
    """``--classes`` on data without class folders: model classes, matched against the predictions."""
    from isplit_export.models import declared_class_names  # lazy: imports torch

    if not classes:
        return None
    names = declared_class_names(opts.model, opts.weights)
    if names:
        return tuple(resolve_model_classes(classes, names, len(names)))
    for c in classes:
        if not c.strip().isdigit():
            raise BadInputError(
                f"class '{c}' cannot be matched: the model declares no class names (--weights none, or a "
                "factory without class_names): pass class indices"
            )
    return None  # indices: checked against the model's number of classes once it is loaded


def _listed(folders: Sequence[str], most: int = 5) -> str:
    shown = ", ".join(f"'{f}'" for f in folders[:most])
    return shown + (f" and {len(folders) - most} more" if len(folders) > most else "")


def announce(opts: RankOptions) -> ClassLabels:
    """:func:`resolve_class_labels`, saying its note (agreement, not accuracy) as one warning line: the
    commands call it once, before their job (which resolves the labels again, silently)."""
    from isplit_export.distributed import is_primary

    labels = resolve_class_labels(opts)
    if labels.note and is_primary():  # under torchrun, process 0 alone says it
        log.warning(labels.note)
    return labels
