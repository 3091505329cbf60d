"""The private model store of ``serve``: only the manifest's listed, hash-checked tail files, copied out.

MLServer (like Triton) treats its model repository as trusted: a folder holding a
``model-settings.json`` can name any Python class as its implementation. So ``serve`` never points
MLServer at the bundle. It copies, for each served split, the tail ONNX and the external-data files
that ONNX reads (each one listed in the manifest, hashed as it is copied) into a fresh private
temporary folder (mode 0700), serves those copies, and hands MLServer an empty repository root next
to them. A file added to the bundle, or swapped after the check, is never read by the server.
"""

from __future__ import annotations

import posixpath
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from isplit_export import contract
from isplit_export.bundle.triton import external_locations
from isplit_export.serving.bundle_access import BundleAccess, SplitAccess


@dataclass
class ModelStore:
    """A private folder: ``files/`` (the copies, at their bundle paths) and ``repository/`` (empty)."""

    root: Path
    tails: dict[str, Path] = field(default_factory=dict)
    """Served model name -> its tail ONNX copy."""
    copied: dict[str, Path] = field(default_factory=dict)
    """Bundle path -> its copy (each file copied once, shared by the tails that read it)."""

    @property
    def repository(self) -> Path:
        """The repository root MLServer is given: an empty folder of ours."""
        return self.root / "repository"

    def _copy(self, bundle: BundleAccess, rel: str) -> Path:
        if rel not in self.copied:
            self.copied[rel] = contract.copy_listed(
                bundle.manifest, bundle.root, rel, self.root / "files" / rel
            )
        return self.copied[rel]

    def add(self, bundle: BundleAccess, split: SplitAccess) -> Path:
        """Copy ``split``'s tail and the external-data files it names (hashed; all listed) into the store."""
        rel = split.tail.relative_to(bundle.root.resolve()).as_posix()
        tail = self._copy(bundle, rel)
        for loc in external_locations(tail):  # read from the checked copy, not from the bundle
            self._copy(bundle, contract.join_rel(posixpath.dirname(rel), loc, f"{rel} external data"))
        self.tails[split.model] = tail
        return tail

    def remove(self) -> None:
        """Delete the store (the copies and the empty repository)."""
        shutil.rmtree(self.root, ignore_errors=True)


def stage(bundle: BundleAccess) -> ModelStore:
    """A new private store holding the selected splits' tails; removed again if staging fails."""
    store = ModelStore(Path(tempfile.mkdtemp(prefix="isplit-serve-")))
    try:
        store.repository.mkdir()
        for s in bundle.splits:
            store.add(bundle, s)
    except BaseException:
        store.remove()
        raise
    return store
