"""A small real model trained in seconds on real labelled data, for tests, demos and CI.

``digits_cnn`` is a VGG-style CNN for scikit-learn's 8x8 handwritten digits (1,797 labelled
images). :func:`train_digits_cnn` trains it (seeded, a few seconds on a CPU) to ~97 % held-out
accuracy, and :func:`write_digits_imagefolder` writes the images as an ImageFolder of PNGs, so the
whole pipeline can run on a genuinely trained network with real labels and no download:

    isplit-export rank isplit_export.zoo:digits_cnn --weights digits.pt --data digits/
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from isplit_export.models import ModelSpec, Preprocessing

DIGITS_PREPROCESSING = Preprocessing(
    resize=16, crop=16, mean=(0.5,), std=(0.5,), channels=1, interpolation="bilinear"
)


class DigitsCNN(nn.Module):
    """conv-relu x2, pool, conv-relu x2, pool, linear: 16x16x1 -> 10 logits."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(w, w, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(w, 2 * w, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(2 * w, 2 * w, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Linear(2 * w * 4 * 4, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.features(x), 1))


def digits_cnn() -> ModelSpec:
    """Model factory for ``isplit_export.zoo:digits_cnn`` (weights via ``--weights``)."""
    return ModelSpec(DigitsCNN(), DIGITS_PREPROCESSING, [str(i) for i in range(10)])


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The digits as uint8 images [N, 8, 8] (0..255) and int labels [N]."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return (d.images * (255.0 / 16.0)).round().astype(np.uint8), d.target.astype(np.int64)


def digits_tensor(images: np.ndarray) -> torch.Tensor:
    """Preprocess uint8 8x8 digits exactly as the PNG path does (PIL resize to 16, normalize)."""
    from isplit_export.data import preprocess

    return torch.stack([preprocess(Image.fromarray(im), DIGITS_PREPROCESSING) for im in images])


def train_digits_cnn(seed: int = 0, epochs: int = 12, holdout: float = 0.25) -> tuple[DigitsCNN, float]:
    """Train :class:`DigitsCNN` on the first (1 - holdout) of the digits; returns it and held-out accuracy."""
    torch.manual_seed(seed)
    images, labels = digits_arrays()
    x, y = digits_tensor(images), torch.from_numpy(labels)
    n_train = int(len(x) * (1 - holdout))
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(n_train, generator=gen).split(64):
            opt.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            opt.step()
    model.eval()
    with torch.no_grad():
        acc = float((model(x[n_train:]).argmax(1) == y[n_train:]).float().mean())
    return model, acc


def write_digits_imagefolder(root: Path, *, start: int = 0, count: int | None = None) -> Path:
    """Write digits[start:start+count] as ``root/<label>/<index>.png`` (an ImageFolder)."""
    images, labels = digits_arrays()
    stop = len(images) if count is None else start + count
    for i in range(start, min(stop, len(images))):
        folder = root / str(int(labels[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:04d}.png")
    return root
