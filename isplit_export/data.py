"""Calibration / evaluation images: where they come from and how they become model inputs.

Sources, in the order they are tried:

* ``--data DIR`` with class sub-folders (an ImageFolder): images carry labels. A folder name that
  is a model class name (case-insensitive, any of its comma-separated synonyms) or a class index
  maps to that class; other folders are kept but unlabelled for accuracy purposes;
* ``--data DIR`` holding image files directly: unlabelled;
* no ``--data``: the real photographs shipped inside ``scikit-image`` (``skimage.data``), listed in
  ``isplit_export/calibration/skimage_photos.json``; offline, always there.

Images are decoded lazily, batch by batch, so memory does not grow with the data set size; with
``workers > 0`` a :class:`torch.utils.data.DataLoader` decodes them in worker processes while the
main process computes, in the same deterministic order. Every image keeps its global index (its
position in :attr:`ImageSet.items`), whichever process or shard reads it. Unreadable files are
skipped and counted once (workers return a marker; the main process counts); an empty set is an
error.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from isplit_export.class_names import class_folders, folder_label, resolve_folder_classes
from isplit_export.errors import BadInputError
from isplit_export.models import Preprocessing

log = logging.getLogger(__name__)


def default_workers() -> int:
    """DataLoader decoding processes when ``--workers`` is not given: min(4, CPUs per process - 1),
    where the usable CPUs are shared by the ``LOCAL_WORLD_SIZE`` processes torchrun starts here."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    try:
        local = max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        local = 1
    return max(0, min(4, cpus // local - 1))


@dataclass(frozen=True)
class Shard:
    """The part of an image set one process reads: blocks of ``block`` consecutive images (by global
    index), block ``b`` going to process ``b % world``. With ``block`` = the batch size every batch
    holds the same images as in a single-process run. ``check`` runs before each batch (e.g. to stop
    early when another process has failed)."""

    rank: int = 0
    world: int = 1
    block: int = 1
    check: Callable[[], None] | None = field(default=None, compare=False)

    def indices(self, n: int) -> list[int]:
        """The global indices of this shard, in order."""
        return [i for i in range(n) if (i // self.block) % self.world == self.rank]


@dataclass
class Batch:
    """One batch: inputs [B,C,H,W] float32, labels [B] int64, names, global image indices [B] int64."""

    x: torch.Tensor
    labels: torch.Tensor
    names: list[str]
    indices: torch.Tensor

    def __len__(self) -> int:
        return len(self.names)


IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass(frozen=True)
class ImageItem:
    """One image: a name, how to open it, and its label (model class index, -1 = unknown)."""

    name: str
    opener: Callable[[], Image.Image]
    label: int = -1
    folder: str | None = None


@dataclass
class ImageSet:
    """An ordered, lazily decoded set of images plus what is known about their classes."""

    items: list[ImageItem]
    preprocessing: Preprocessing
    source: str
    folders: list[str] = field(default_factory=list)
    unreadable: set[str] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.items)

    @property
    def skipped(self) -> int:
        """How many files could not be decoded (each counted once, however often the set is read)."""
        return len(self.unreadable)

    def batches(
        self, batch_size: int, *, workers: int = 0, pin_memory: bool = False, shard: Shard | None = None
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor, list[str]]]:
        """Yield ``(inputs [B,C,H,W] float32, labels [B] int64, names)``; unreadable files are skipped."""
        for b in self.indexed_batches(batch_size, workers=workers, pin_memory=pin_memory, shard=shard):
            yield b.x, b.labels, b.names

    def indexed_batches(
        self, batch_size: int, *, workers: int = 0, pin_memory: bool = False, shard: Shard | None = None
    ) -> Iterator[Batch]:
        """Yield :class:`Batch` es of ``batch_size`` readable images (the last may be smaller), in order.

        ``workers`` decoding processes (0: decode here), ``pin_memory`` for fast copies to a GPU,
        ``shard``: read only that part of the set. Unreadable files are logged once and added to
        :attr:`unreadable` by this (the main) process.
        """
        if workers < 0:
            raise BadInputError(f"--workers {workers}: pass 0 (decode in the main process) or more")
        indices = shard.indices(len(self.items)) if shard is not None else list(range(len(self.items)))
        check = shard.check if shard is not None else None
        if not indices:
            return
        loader: Iterable[_Decoded] = torch.utils.data.DataLoader(
            _DecodeDataset(self.items, self.preprocessing),
            batch_size=batch_size,
            sampler=indices,
            num_workers=workers,
            collate_fn=_collate,
            pin_memory=pin_memory,
        )
        buf: list[Batch] = []
        held = 0
        for part in _unwrapped(loader):
            if check is not None:
                check()
            for name, err in part.failed:
                if name not in self.unreadable:
                    log.warning("skipping unreadable image %s (%s)", name, err)
                self.unreadable.add(name)
            if not part.batch.names:
                continue
            if not buf and len(part.batch) == batch_size:  # the usual case: pass through (stays pinned)
                yield part.batch
                continue
            buf.append(part.batch)
            held += len(part.batch)
            while held >= batch_size:
                out, buf = _take(buf, batch_size)
                held -= batch_size
                yield out
        if held:
            yield _take(buf, held)[0]

    def tensor(self, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        """All (or the first ``limit``) images as one batch: for small calibration / golden sets."""
        sub = ImageSet(self.items[:limit] if limit else self.items, self.preprocessing, self.source)
        parts = list(sub.batches(64))
        self.unreadable |= sub.unreadable
        if not parts:
            raise BadInputError(f"no readable images in {self.source}: pass --data with image files")
        return (
            torch.cat([p[0] for p in parts]),
            torch.cat([p[1] for p in parts]),
            [n for p in parts for n in p[2]],
        )


def preprocess(img: Image.Image, prep: Preprocessing) -> torch.Tensor:
    """Resize the short side to ``prep.resize``, center-crop ``prep.crop``, scale to [0,1], normalize."""
    import torchvision.transforms.functional as TF
    from torchvision.transforms import InterpolationMode

    img = img.convert("L" if prep.channels == 1 else "RGB")
    img = TF.resize(img, [prep.resize], interpolation=InterpolationMode(prep.interpolation), antialias=True)
    img = TF.center_crop(img, [prep.crop, prep.crop])
    return TF.normalize(TF.to_tensor(img), list(prep.mean), list(prep.std))


def load_images(
    data: Path | None,
    preprocessing: Preprocessing,
    *,
    class_names: Sequence[str] | None = None,
    classes: Sequence[str] | None = None,
    limit: int | None = None,
    folder_labels: Mapping[str, int] | None = None,
) -> ImageSet:
    """Collect the image set; ``classes`` keeps only those ImageFolder classes (names or indices).

    ``folder_labels`` (folder name -> model class index, from :mod:`isplit_export.class_labels`) labels
    the class folders; without it a folder is labelled by :func:`folder_label`.

    For unlabelled sources ``classes`` is applied later, on the model's predictions (see
    :func:`isplit_export.ranking.importance.compute_importance`).
    """
    if limit is not None and limit < 1:
        raise BadInputError(f"--images {limit}: pass a positive number of images")
    if data is None:
        items, source, folders = _skimage_items(), "skimage.data", list[str]()
    else:
        data = Path(data)
        if not data.is_dir():
            raise BadInputError(
                f"--data {data} is not a directory: pass a folder of images or of class sub-folders"
            )
        items, folders = _folder_items(data, class_names, folder_labels)
        source = str(data)
        if classes and folders:
            keep = resolve_folder_classes(classes, folders)
            items = [it for it in items if it.folder in keep]
            if not items:
                raise BadInputError(
                    f"no images of classes {','.join(classes)} in {data}: pick classes that have images"
                )
    if not items:
        raise BadInputError(
            f"no images found in {source}: pass --data with .png/.jpg files or class sub-folders"
        )
    if limit:
        items = items[:limit]
    return ImageSet(items, preprocessing, source, folders)


def _folder_items(
    root: Path, class_names: Sequence[str] | None, folder_labels: Mapping[str, int] | None = None
) -> tuple[list[ImageItem], list[str]]:
    subdirs = [root / name for name in class_folders(root)]
    if not subdirs:
        files = _image_files(root)
        return [ImageItem(f.name, _file_opener(f)) for f in files], []
    items: list[ImageItem] = []
    for d in subdirs:
        if folder_labels is not None:
            label = folder_labels.get(d.name, -1)
        else:
            label = folder_label(d.name, class_names)
        items.extend(ImageItem(f"{d.name}/{f.name}", _file_opener(f), label, d.name) for f in _image_files(d))
    return items, [d.name for d in subdirs]


def _image_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _file_opener(path: Path) -> Callable[[], Image.Image]:
    return _FileOpener(path)


@dataclass(frozen=True)
class _FileOpener:
    """Opens one image file (a picklable callable, so DataLoader workers can be spawned too)."""

    path: Path

    def __call__(self) -> Image.Image:
        with Image.open(self.path) as im:
            im.load()
            return im


@dataclass(frozen=True)
class _SkimageOpener:
    """One of the skimage.data photographs (picklable)."""

    function: str
    pick: int | None

    def __call__(self) -> Image.Image:
        import skimage.data

        arr = getattr(skimage.data, self.function)()
        if self.pick is not None:
            arr = arr[self.pick]
        return Image.fromarray(np.asarray(arr, dtype=np.uint8))


def skimage_recipe() -> dict[str, Any]:
    """The default calibration set's recipe (``isplit_export/calibration/skimage_photos.json``)."""
    from importlib import resources

    text = resources.files("isplit_export").joinpath("calibration", "skimage_photos.json").read_text()
    recipe: dict[str, Any] = json.loads(text)
    return recipe


def _skimage_items() -> list[ImageItem]:
    items = []
    for entry in skimage_recipe()["images"]:
        items.append(ImageItem(entry["name"], _SkimageOpener(entry["function"], entry.get("index"))))
    return items


@dataclass
class _Decoded:
    """What one DataLoader batch carries back: the readable images and the (name, error) of the others."""

    batch: Batch
    failed: list[tuple[str, str]]

    def pin_memory(self) -> _Decoded:
        """Called by the DataLoader's pinning thread (``pin_memory=True``)."""
        b = self.batch
        return _Decoded(Batch(b.x.pin_memory(), b.labels.pin_memory(), b.names, b.indices), self.failed)


class _DecodeDataset(torch.utils.data.Dataset[tuple[torch.Tensor | None, int, str, int, str]]):
    """Item ``i`` -> (tensor or None when unreadable, label, name, i, error text)."""

    def __init__(self, items: Sequence[ImageItem], preprocessing: Preprocessing) -> None:
        self.items = items
        self.preprocessing = preprocessing

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor | None, int, str, int, str]:
        item = self.items[i]
        try:
            return preprocess(item.opener(), self.preprocessing), item.label, item.name, i, ""
        except (OSError, UnidentifiedImageError, ValueError) as err:  # a marker: the parent counts it
            return None, item.label, item.name, i, str(err)
        except Exception as err:  # e.g. a decompression bomb: not skipped, but named
            raise BadInputError(
                f"image {item.name} cannot be used ({type(err).__name__}: {err}): remove or replace it"
            ) from err


def _collate(samples: list[tuple[torch.Tensor | None, int, str, int, str]]) -> _Decoded:
    ok = [s for s in samples if s[0] is not None]
    failed = [(s[2], s[4]) for s in samples if s[0] is None]
    x = torch.stack([s[0] for s in ok if s[0] is not None]) if ok else torch.empty(0)
    labels = torch.tensor([s[1] for s in ok], dtype=torch.int64)
    indices = torch.tensor([s[3] for s in ok], dtype=torch.int64)
    return _Decoded(Batch(x, labels, [s[2] for s in ok], indices), failed)


def _unwrapped(loader: Iterable[_Decoded]) -> Iterator[_Decoded]:
    """Iterate ``loader``; an error raised in a worker comes out with its own one-line message
    (the DataLoader re-raises it with the worker's traceback as its text). The workers are shut down
    whatever happens, so a dead worker is not reported again later (by the SIGCHLD handler)."""
    it = iter(loader)
    try:
        yield from it
    except (EOFError, ConnectionError) as err:  # a worker died while handing over a batch
        raise RuntimeError(
            f"DataLoader worker exited unexpectedly ({type(err).__name__} receiving a batch)"
        ) from err
    except Exception as err:
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        if len(lines) > 1 and lines[0].startswith("Caught ") and "DataLoader worker" in lines[0]:
            last = lines[-1]
            prefix = f"{type(err).__module__}.{type(err).__qualname__}: "
            message = last[len(prefix) :] if last.startswith(prefix) else last
            try:
                clean = type(err)(message)
            except Exception:
                raise err from None
            raise clean from err
        raise
    finally:
        shutdown = getattr(it, "_shutdown_workers", None)
        if callable(shutdown):
            shutdown()


def _take(buf: list[Batch], n: int) -> tuple[Batch, list[Batch]]:
    """The first ``n`` images of the buffered batches as one batch, and what remains."""
    x, labels, indices = (torch.cat([getattr(b, f) for b in buf]) for f in ("x", "labels", "indices"))
    names = [name for b in buf for name in b.names]
    head = Batch(x[:n], labels[:n], names[:n], indices[:n])
    rest = [Batch(x[n:], labels[n:], names[n:], indices[n:])] if len(names) > n else []
    return head, rest
