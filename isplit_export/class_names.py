"""Class folders and class names matched without a model: which sub-folders of ``--data`` are classes, and
which model class a folder name or a ``--classes`` entry names. Torch-free, so the checks that use them
run before any model work (:mod:`isplit_export.class_labels`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from isplit_export.errors import BadInputError


def resolve_folder_classes(classes: Sequence[str], folders: Sequence[str]) -> set[str]:
    """Map ``--classes`` entries (folder names or 0-based folder indices) to folder names."""
    keep: set[str] = set()
    lower = {f.lower(): f for f in folders}
    for c in classes:
        if c.lower() in lower:
            keep.add(lower[c.lower()])
        elif c.isdigit() and int(c) < len(folders):
            keep.add(folders[int(c)])
        else:
            have = ", ".join(folders[:10]) + (f" and {len(folders) - 10} more" if len(folders) > 10 else "")
            raise BadInputError(
                f"class '{c}' has no class folder in --data (have: {have}): pass folder names or indices"
            )
    return keep


def resolve_model_classes(
    classes: Sequence[str], class_names: Sequence[str] | None, num_classes: int
) -> list[int]:
    """Map ``--classes`` entries (model class names / synonyms or indices) to model class indices."""
    out: list[int] = []
    index = class_index(class_names)
    for c in classes:
        key = c.strip().lower()
        if key in index:
            out.append(index[key])
        elif key.isdigit() and int(key) < num_classes:
            out.append(int(key))
        else:
            raise BadInputError(
                f"class '{c}' is not a class of the model: use its name or an index 0..{num_classes - 1}"
            )
    return sorted(set(out))


def class_index(class_names: Sequence[str] | None) -> dict[str, int]:
    """Lower-case class name and every comma-separated synonym -> class index (the first wins)."""
    index: dict[str, int] = {}
    for i, name in enumerate(class_names or []):
        for syn in [name, *name.split(",")]:
            index.setdefault(syn.strip().lower(), i)
    return index


def class_folders(root: Path) -> list[str]:
    """The class sub-folders of ``--data`` (sorted, hidden ones left out); empty for a flat folder."""
    return sorted(p.name for p in Path(root).iterdir() if p.is_dir() and not p.name.startswith("."))


def folder_label(folder: str, class_names: Sequence[str] | None) -> int:
    """The model class a folder name names (a class name, any comma-separated synonym, case-insensitive,
    or a class index), -1 when none."""
    key = folder.strip().lower()
    index = class_index(class_names)
    n = len(class_names) if class_names else 0
    return index.get(key, int(key) if key.isdigit() and (not n or int(key) < n) else -1)
