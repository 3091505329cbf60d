"""What runs on this machine in ``isplit-export run``: the images, the split's head, the local reference.

Torch-free (the device has no PyTorch): the images are preprocessed with PIL and numpy as
:func:`isplit_export.data.preprocess` does, the head runs on the runner of the backend chosen
(:mod:`isplit_export.verification.backends`: onnxruntime or its TensorRT engine), and the local pair
(head + tail here) and the full model give the logits the served ones are compared with.
"""

from __future__ import annotations

from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np

from isplit_export import contract
from isplit_export.errors import BadInputError, GateFailedError, NotRunError, first_line
from isplit_export.numbers import rounded
from isplit_export.options_serving import RunOptions
from isplit_export.serving.bundle_access import BundleAccess, SplitAccess
from isplit_export.serving.records import ERROR_CHARS, Image_
from isplit_export.verification.backends import Backend, SplitHead, head_backend
from isplit_export.verification.runners import OnnxrtRunner, median_ms, to_wire

# --------------------------------------------------------------------------------------------------
# images (torch-free: the device has no PyTorch)

_INTERP = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4, "hamming": 5}


def preprocess_image(path: Path, prep: dict[str, Any]) -> np.ndarray:
    """One image file as the model's (1, C, H, W) float32 input, as :func:`isplit_export.data.preprocess`
    computes it (torchvision on PIL images: short side resized with PIL, center crop, /255, normalize)."""
    from PIL import Image

    with Image.open(path) as im:
        img = im.convert("L" if int(prep["channels"]) == 1 else "RGB")
    size, crop = int(prep["resize"]), int(prep["crop"])
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), _INTERP[str(prep.get("interpolation", "bilinear"))])
    top, left = round((new_h - crop) / 2.0), round((new_w - crop) / 2.0)
    img = img.crop((left, top, left + crop, top + crop))
    a = np.asarray(img, dtype=np.uint8)
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    x = a.astype(np.float32) / np.float32(255.0)
    mean = np.asarray(prep["mean"], dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(prep["std"], dtype=np.float32).reshape(-1, 1, 1)
    return np.ascontiguousarray(((x - mean) / std)[None], dtype=np.float32)


_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def load_images(options: RunOptions, bundle: BundleAccess, split: SplitAccess) -> tuple[list[Image_], str]:
    """The images of the run: ``--data`` (class sub-folders give labels) or the split's golden inputs."""
    if options.data is None:
        g = split.load_golden()
        n = g.images if options.images is None else min(options.images, g.images)
        images = [
            Image_(f"golden[{i}]", np.ascontiguousarray(g.input[i : i + 1]), int(g.labels[i]))
            for i in range(n)
        ]
        return images, f"{split.dir}/golden.npz"
    root = options.data
    if not root.is_dir():
        raise BadInputError(
            f"--data {root} is not a directory: pass a folder of images or of class sub-folders"
        )
    classes = bundle.manifest.num_classes or 0
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    items: list[tuple[str, Path, int]] = []
    for d in subdirs or [root]:
        label = int(d.name) if d is not root and d.name.isdigit() and int(d.name) < classes else -1
        for f in sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES):
            items.append((f.relative_to(root).as_posix(), f, label))
    if options.images is not None:
        items = items[: options.images]
    if not items:
        raise BadInputError(
            f"no images found in --data {root}: pass a folder of .png/.jpg files or class sub-folders"
        )
    prep = bundle.preprocessing
    images = []
    for name, path, label in items:
        try:
            images.append(Image_(name, preprocess_image(path, prep), label))
        except Exception as e:  # an unreadable file is skipped and counted, never silently dropped
            images.append(Image_(name, None, label, f"unreadable image: {first_line(e, ERROR_CHARS)}"))
    return images, str(root)


# --------------------------------------------------------------------------------------------------
# the head here


def _head_engine(bundle: BundleAccess, split: SplitAccess) -> tuple[Path, int | None]:
    """The split's head engine file and DLA core, from its ``engine_plan.json`` read through the contract
    (validated, paths inside the split's ``engines/``)."""
    if split.engine_plan is None:
        raise BadInputError(
            f"split {split.dir} has no engine build plan: export the bundle for a TensorRT target"
        )
    m = contract.read_manifest(bundle.root)
    if m.sha256 != bundle.manifest_sha256:
        raise GateFailedError(f"{bundle.root}/manifest.json changed while the run started: run again")
    (_, entry), *_ = contract.select_splits(m, split.pos)
    head = contract.read_engine_plan(m, entry).head
    if not head.engine.is_file():
        raise NotRunError(f"no engine {head.engine}: run isplit-export build-engines {bundle.root} first")
    return head.engine, head.dla_core


def _split_head(bundle: BundleAccess, split: SplitAccess) -> SplitHead:
    """Where the split's head lives, for the backends (:mod:`isplit_export.verification.backends`)."""
    return SplitHead(split.head, split.split_dir, bundle.input_name, lambda: _head_engine(bundle, split))


def choose_backend(
    bundle: BundleAccess, split: SplitAccess, backend: str, trust: bool
) -> tuple[Backend, str]:
    """(the head's backend, why): :func:`~isplit_export.verification.backends.head_backend` (``auto``: the
    TensorRT head engine when TensorRT imports here and ``build-engines`` built that engine on this
    machine, or ``trust``; else onnxruntime)."""
    return head_backend(backend, _split_head(bundle, split), trust=trust)


class Head:
    """The split's head on this machine: the runner of the backend :func:`choose_backend` picks, activated
    once for the whole run. ``backend`` names it, ``why`` says why in a few words."""

    def __init__(
        self, bundle: BundleAccess, split: SplitAccess, backend: str, threads: int, trust: bool = False
    ) -> None:
        self.split = split
        chosen, self.why = choose_backend(bundle, split, backend, trust)
        self.backend = chosen.name
        self.runner = chosen.head(_split_head(bundle, split), threads=threads, trust=trust)
        self.runner.activate()  # TensorRT: only an engine built here (or --trust-engines) is deserialised

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The boundary as transmitted (the encoding applied here when the head emits float)."""
        return to_wire(self.runner.infer(x), self.split.encoding)

    def close(self) -> None:
        """Free what the runner holds (a TensorRT engine's device memory)."""
        self.runner.deactivate()


# --------------------------------------------------------------------------------------------------
# the local reference


def local_reference(
    bundle: BundleAccess, split: SplitAccess, images: list[Image_], head: Head, threads: int
) -> dict[int, dict[str, np.ndarray]]:
    """Per readable image: the boundary (head here), the local tail's logits and the full model's."""
    tail = OnnxrtRunner(split.tail, threads=threads)
    full = OnnxrtRunner(bundle.full, threads=threads) if bundle.full is not None else None
    ref: dict[int, dict[str, np.ndarray]] = {}
    with tail, full if full is not None else nullcontext():
        for i, im in enumerate(images):
            if im.x is None:
                continue
            b = head(im.x)
            r = {"boundary": b, "pair": tail.infer(b)}
            if full is not None:
                r["full"] = full.infer(im.x)
            ref[i] = r
    return ref


def local_latency(
    split: SplitAccess, images: list[Image_], head: Head, threads: int
) -> dict[str, float] | None:
    """Median ms of the head as it runs here and of the local tail (onnxruntime), interleaved, on the first
    readable image; the tail is fed the head's boundary as transmitted."""
    x = next((im.x for im in images if im.x is not None), None)
    if x is None:
        return None
    with OnnxrtRunner(split.tail, threads=max(threads, 1)) as tail:
        b = head(x)
        ms = median_ms({"head_ms": lambda: head(x), "tail_ms": lambda: tail.infer(b)}, warmup=5, runs=30)
    return {k: rounded(v, 4, decimals=True) for k, v in ms.items()}


__all__ = [
    "Head",
    "Image_",
    "choose_backend",
    "load_images",
    "local_latency",
    "local_reference",
    "preprocess_image",
]
