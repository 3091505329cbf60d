"""The one place :mod:`isplit_export.serving` reads a bundle: manifest fields, split entries, paths, hashes.

Everything the serve and run jobs (and the Triton repository writer) need from a bundle comes through
here, on top of the bundle contract (:mod:`isplit_export.contract`): manifest validation, path containment,
hashes and size-bounded goldens.

A bundle is untrusted input: every path is resolved by the contract's readers (inside the bundle, no
``..``), every file is re-hashed before it is served or run (:func:`open_bundle` with ``verify``), and
a modified file is a :class:`~isplit_export.errors.GateFailedError` naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from isplit_export import contract
from isplit_export.bundle.triton import model_name
from isplit_export.errors import BadInputError
from isplit_export.exporting.encoding import BoundaryEncoding
from isplit_export.verification.verify import split_encoding


@dataclass(frozen=True)
class SplitAccess:
    """One split of an opened bundle: where its files are and what crosses the wire."""

    pos: int
    """1-based split number (the ``NN`` of ``splits/NN-*``)."""
    dir: str
    node: str
    index: int | None
    """The cut's index in the ranking (``plan`` keys measured figures by it)."""
    model: str
    """Served model name (Triton / MLServer)."""
    head: Path
    tail: Path
    golden: Path
    encoding: BoundaryEncoding
    shape: tuple[int, ...]
    """Boundary shape of one image, without the batch axis."""
    bytes_per_image: int
    split_dir: Path
    engine_plan: Path | None = None
    """``engine_plan.json`` (TensorRT targets): the engines' files, precision and DLA core."""
    golden_budget: Mapping[str, int] | None = None
    """Bytes each golden member may expand to (:func:`isplit_export.contract.golden_budget`)."""

    @property
    def dtype(self) -> np.dtype[Any]:
        """The transmitted dtype (float32, float16 or uint8)."""
        return np.dtype(self.encoding.dtype)

    def load_golden(self) -> contract.Golden:
        """The split's golden ``input``, ``boundary``, ``logits`` and ``labels`` (-1 when unknown)."""
        return contract.load_golden(self.golden, self.dir + "/golden.npz", self.golden_budget)


@dataclass(frozen=True)
class BundleAccess:
    """An opened (and, by default, re-hashed) bundle."""

    root: Path
    manifest: contract.Manifest
    manifest_sha256: str
    splits: tuple[SplitAccess, ...]
    full: Path | None
    """``full.onnx`` when the manifest lists it: the run's agreement reference."""

    @property
    def input_name(self) -> str:
        return self.manifest.input_name

    @property
    def input_shape(self) -> tuple[int, ...]:
        """(C, H, W) of one preprocessed image."""
        return self.manifest.input_shape

    @property
    def preprocessing(self) -> dict[str, Any]:
        """The manifest's preprocessing block (resize, crop, mean, std, channels, interpolation)."""
        prep = self.manifest.block("preprocessing")
        if not prep:
            raise BadInputError("manifest.json has no preprocessing block: rebuild the bundle")
        return dict(prep)

    @property
    def class_names(self) -> list[str] | None:
        return self.manifest.class_names

    @property
    def target(self) -> dict[str, Any]:
        return dict(self.manifest.block("target"))

    def split(self, pos: int) -> SplitAccess:
        for s in self.splits:
            if s.pos == pos:
                return s
        raise BadInputError(f"split {pos} is not selected: pass --split {self.splits[0].pos}")


def _split(bundle: Path, manifest: contract.Manifest, pos: int, entry: contract.Split) -> SplitAccess:
    enc = split_encoding(manifest, entry)
    b = entry.boundary
    shape = tuple(int(d) for d in b.shape[1:])
    if not shape or any(d < 1 for d in shape):
        raise BadInputError(f"manifest.json split {entry.dir} has no boundary shape: rebuild the bundle")
    nbytes = b.bytes_per_image
    if nbytes is None or nbytes < 1:
        raise BadInputError(
            f"manifest.json split {entry.dir} has no boundary bytes_per_image: rebuild the bundle"
        )
    return SplitAccess(
        pos=pos,
        dir=entry.dir,
        node=entry.node or "",
        index=entry.index,
        model=model_name(entry),
        head=contract.split_file(manifest, bundle, entry, "head"),
        tail=contract.split_file(manifest, bundle, entry, "tail"),
        golden=contract.split_file(manifest, bundle, entry, "golden"),
        encoding=enc,
        shape=shape,
        bytes_per_image=nbytes,
        split_dir=contract.bundle_path(bundle, entry.dir),
        engine_plan=(
            contract.split_file(manifest, bundle, entry, "engine_plan_json")
            if "engine_plan_json" in entry.files
            else None
        ),
        golden_budget=contract.golden_budget(manifest, entry),
    )


def open_bundle(
    bundle: Path | str, split: int | None = None, *, verify: bool = True, expect_sha256: str | None = None
) -> BundleAccess:
    """Read ``bundle``'s manifest, pin it to ``expect_sha256`` (None: no pin), select ``split`` (None: all)
    and, with ``verify``, re-hash every file and refuse unlisted ones.

    Raises :class:`BadInputError` (no bundle, bad manifest, malformed pin, split out of range) or
    :class:`GateFailedError` naming the first missing, modified or unlisted file, or a manifest other
    than the pinned one.
    """
    m = contract.read_manifest(bundle)
    contract.check_expected_sha256(m, expect_sha256)
    root = m.bundle
    selected = contract.select_splits(m, split)
    if verify:
        contract.check_files(root, m)
    full = contract.bundle_path(root, "full.onnx") if "full.onnx" in m.files else None
    return BundleAccess(
        root=root,
        manifest=m,
        manifest_sha256=m.sha256,
        splits=tuple(_split(root, m, pos, entry) for pos, entry in selected),
        full=full,
    )
