"""The torch path (``data.preprocess``) and the torch-free path (``serving.local.preprocess_image``) agree
on real photographs: the 19 default calibration photos, under the recipes the tool's models use (ImageNet
bilinear, efficientnet_lite0's, bicubic as some torchvision weights ask) and a greyscale one with odd sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("torch")  # the reference side is torchvision
pytest.importorskip("skimage")

from isplit_export.data import load_images, preprocess
from isplit_export.models import Preprocessing
from isplit_export.serving.local import preprocess_image

RECIPES = {
    "imagenet-bilinear": Preprocessing(),
    "efficientnet-lite": Preprocessing(resize=256, crop=224, mean=(127 / 255,) * 3, std=(128 / 255,) * 3),
    "bicubic": Preprocessing(resize=146, crop=128, interpolation="bicubic"),
    "grey-odd-sizes": Preprocessing(resize=37, crop=28, mean=(0.5,), std=(0.25,), channels=1),
}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> list[tuple[str, Image.Image, Path]]:
    """The default photos, decoded once, each also saved losslessly (both sides then read the same pixels)."""
    folder = tmp_path_factory.mktemp("photos")
    out = []
    for item in load_images(None, Preprocessing()).items:
        img = item.opener()
        img.load()
        path = folder / f"{item.name}.png"
        img.save(path)
        out.append((item.name, img, path))
    return out


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_both_preprocessings_agree_on_the_default_photos(
    recipe: str, photos: list[tuple[str, Image.Image, Path]]
) -> None:
    prep = RECIPES[recipe]
    assert len(photos) == 19
    for name, img, path in photos:
        want = preprocess(img, prep).numpy()
        got = preprocess_image(path, prep.to_json())
        assert got.shape == (1, *prep.input_shape) and got.dtype == np.float32, name
        # torchvision and PIL differ only by float rounding order (to_tensor/normalize vs numpy)
        np.testing.assert_allclose(got[0], want, rtol=0, atol=1e-5, err_msg=f"{recipe}: {name}")
