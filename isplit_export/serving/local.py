"""What runs on this machine in ``isplit-export run``: the images, the split's head, the local reference.

Torch-free (the device has no PyTorch): the images are preprocessed with PIL and numpy as
:func:`isplit_export.data.preprocess` does, the head runs with onnxruntime or its TensorRT engine, and
the local pair (head + tail here) and the full model give the logits the served ones are compared with.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from isplit_export import contract
from isplit_export.errors import BadInputError, GateFailedError, NotRunError, first_line
from isplit_export.exporting.encoding import encode_array
from isplit_export.exporting.onnx_utils import make_session
from isplit_export.numbers import rounded
from isplit_export.options import RunOptions
from isplit_export.serving.bundle_access import BundleAccess, SplitAccess
from isplit_export.serving.records import ERROR_CHARS

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


@dataclass
class Image_:
    """One image to send: its name, its (1, C, H, W) input (None: unreadable) and label (-1 unknown)."""

    name: str
    x: np.ndarray | None
    label: int = -1
    error: str | None = None


def load_images(options: RunOptions, bundle: BundleAccess, split: SplitAccess) -> tuple[list[Image_], str]:
    """The images of the run: ``--data`` (class sub-folders give labels) or the split's golden inputs."""
    if options.data is None:
        g = split.load_golden()
        n = g["input"].shape[0] if options.images is None else min(options.images, g["input"].shape[0])
        images = [Image_(f"golden[{i}]", np.ascontiguousarray(g["input"][i : i + 1]), int(g["labels"][i]))
                  for i in range(n)]  # fmt: skip
        return images, f"{split.dir}/golden.npz"
    root = options.data
    if not root.is_dir():
        raise BadInputError(f"--data {root} is not a directory: pass a folder of images or of class sub-folders")
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
        raise BadInputError(f"no images found in --data {root}: pass a folder of .png/.jpg files or class sub-folders")
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
        raise BadInputError(f"split {split.dir} has no engine build plan: export the bundle for a TensorRT target")
    m = contract.read_manifest(bundle.root)
    if m.sha256 != bundle.manifest_sha256:
        raise GateFailedError(f"{bundle.root}/manifest.json changed while the run started: run again")
    (_, entry), *_ = contract.select_splits(m, split.pos)
    head = contract.read_engine_plan(m, entry).parts["head"]
    if not head.engine.is_file():
        raise NotRunError(f"no engine {head.engine}: run isplit-export build-engines {bundle.root} first")
    return head.engine, head.dla_core


def choose_backend(bundle: BundleAccess, split: SplitAccess, backend: str, trust: bool) -> tuple[str, str]:
    """(the head's runtime, why): ``auto`` takes the TensorRT head engine when TensorRT imports here and
    ``build-engines`` built that engine on this machine (or ``trust``), else onnxruntime."""
    if backend != "auto":
        return backend, f"--backend {backend}"
    from isplit_export.targets import engine_trust, trt_backend  # lazy: imports tensorrt

    if not trt_backend.tensorrt_available():
        return "onnxruntime", "auto: TensorRT does not import here"
    try:
        engine, _ = _head_engine(bundle, split)
    except (BadInputError, NotRunError) as e:
        return "onnxruntime", f"auto: no TensorRT head engine ({first_line(e, ERROR_CHARS).split(':')[0]})"
    if not (trust or engine_trust.trusted(engine.read_bytes())):
        return "onnxruntime", f"auto: {engine.name} was not built here by build-engines"
    return "tensorrt", f"auto: {engine.name}, built here by build-engines"


class Head:
    """The split's head on this machine: onnxruntime, or its TensorRT engine (``--backend tensorrt``, or
    ``auto`` where :func:`choose_backend` finds one built here). ``why`` says which and why, in a few words."""

    def __init__(self, bundle: BundleAccess, split: SplitAccess, backend: str, threads: int, trust: bool = False) -> None:
        self.split = split
        self.backend, self.why = choose_backend(bundle, split, backend, trust)
        self._input = bundle.input_name
        if self.backend == "onnxruntime":
            self._session = make_session(split.head, threads=threads)
            self._name = self._session.get_inputs()[0].name
            return
        from isplit_export.targets import trt_backend  # lazy: imports tensorrt

        if not trt_backend.tensorrt_available():
            raise NotRunError(
                "TensorRT is not available on this machine: run with --backend tensorrt on the device, "
                "or use --backend onnxruntime"
            )
        self._engine, self._dla = _head_engine(bundle, split)
        trt_backend.check_engine_record(split.split_dir)
        # loaded once for the whole run; only an engine built here (or --trust-engines) is deserialised
        self._loaded = trt_backend.Engine(self._engine, dla_core=self._dla, trust=trust)
        self._lock = threading.Lock()  # one execution context: one request at a time through it

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The boundary as transmitted (the encoding applied here when the engine emits float)."""
        if self.backend == "onnxruntime":
            return np.asarray(self._session.run(None, {self._name: x})[0])
        with self._lock:
            outputs = self._loaded({self._input: x})
        b = np.asarray(next(iter(outputs.values())))
        return b if b.dtype == self.split.dtype else encode_array(b, self.split.encoding)

    def close(self) -> None:
        """Free the engine's device memory (nothing to do for onnxruntime)."""
        if self.backend != "onnxruntime":
            self._loaded.close()


# --------------------------------------------------------------------------------------------------
# the local reference


def local_reference(
    bundle: BundleAccess, split: SplitAccess, images: list[Image_], head: Head, threads: int
) -> dict[int, dict[str, np.ndarray]]:
    """Per readable image: the boundary (head here), the local tail's logits and the full model's."""
    tail = make_session(split.tail, threads=threads)
    full = make_session(bundle.full, threads=threads) if bundle.full is not None else None
    t_in = tail.get_inputs()[0].name
    ref: dict[int, dict[str, np.ndarray]] = {}
    for i, im in enumerate(images):
        if im.x is None:
            continue
        b = head(im.x)
        r = {"boundary": b, "pair": np.asarray(tail.run(None, {t_in: b})[0])}
        if full is not None:
            r["full"] = np.asarray(full.run(None, {full.get_inputs()[0].name: im.x})[0])
        ref[i] = r
    return ref


def local_latency(split: SplitAccess, images: list[Image_], threads: int) -> dict[str, float] | None:
    """Median local head and tail ms (onnxruntime, interleaved) on the first readable image."""
    from isplit_export.verification.runtime import measure_latency

    x = next((im.x for im in images if im.x is not None), None)
    if x is None:
        return None
    lat = measure_latency({"head": split.head, "tail": split.tail}, x, runs=30, threads=max(threads, 1))
    return {k: rounded(v, 4, decimals=True) for k, v in lat.items()}


__all__ = ["Head", "Image_", "choose_backend", "load_images", "local_latency", "local_reference", "preprocess_image"]
