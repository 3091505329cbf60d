"""A small real model trained in seconds on real labelled data, for tests, demos and CI.

``digits_cnn`` is a VGG-style CNN for scikit-learn's 8x8 handwritten digits (1,797 labelled
images). :func:`train_digits_cnn` trains it (seeded, a few seconds on a CPU) to ~97 % held-out
accuracy, and :func:`write_digits_imagefolder` writes the images as an ImageFolder of PNGs, so the
whole pipeline can run on a genuinely trained network with real labels and no download:

    isplit-export rank isplit_export.zoo:digits_cnn --weights digits.pt --data digits/
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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


def fit_classifier(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, n_train: int, *, seed: int, epochs: int
) -> float:
    """Train ``model`` (Adam, cross-entropy, seeded batches of 64) on ``x[:n_train]``; returns its accuracy on
    the rest. The zoo's trained models share this loop, so they train the same way."""
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
        return float((model(x[n_train:]).argmax(1) == y[n_train:]).float().mean())


def train_digits_cnn(seed: int = 0, epochs: int = 12, holdout: float = 0.25) -> tuple[DigitsCNN, float]:
    """Train :class:`DigitsCNN` on the first (1 - holdout) of the digits; returns it and held-out accuracy."""
    torch.manual_seed(seed)
    images, labels = digits_arrays()
    x, y = digits_tensor(images), torch.from_numpy(labels)
    n_train = int(len(x) * (1 - holdout))
    model = DigitsCNN()
    return model, fit_classifier(model, x, y, n_train, seed=seed, epochs=epochs)


def write_digits_imagefolder(root: Path, *, start: int = 0, count: int | None = None) -> Path:
    """Write digits[start:start+count] as ``root/<label>/<index>.png`` (an ImageFolder)."""
    images, labels = digits_arrays()
    stop = len(images) if count is None else start + count
    for i in range(start, min(stop, len(images))):
        folder = root / str(int(labels[i]))
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:04d}.png")
    return root


# --------------------------------------------------------------------------------------------------
# glyphs: the letters A-Z rendered from the fonts matplotlib ships, and a small ResNet

GLYPH_CLASSES = [chr(ord("A") + i) for i in range(26)]
GLYPH_FONTS = (
    "DejaVuSans.ttf",
    "DejaVuSans-Bold.ttf",
    "DejaVuSans-Oblique.ttf",
    "DejaVuSans-BoldOblique.ttf",
    "DejaVuSerif.ttf",
    "DejaVuSerif-Bold.ttf",
    "DejaVuSerif-Italic.ttf",
    "DejaVuSerif-BoldItalic.ttf",
    "DejaVuSansMono.ttf",
    "DejaVuSansMono-Bold.ttf",
    "DejaVuSansMono-Oblique.ttf",
    "DejaVuSansMono-BoldOblique.ttf",
    "STIXGeneral.ttf",
    "STIXGeneralBol.ttf",
    "STIXGeneralItalic.ttf",
    "STIXGeneralBolIta.ttf",
)
"""The TrueType fonts of ``matplotlib.get_data_path()/fonts/ttf`` the glyphs are drawn from (16 faces)."""
GLYPH_SIZE = 32
GLYPH_VARIANTS = 8
"""Renderings per (font, letter), each with its own rotation, scale, shift and stroke: 16 x 26 x 8 = 3,328."""
GLYPH_HOLDOUT_VARIANTS = 2
"""The last variants of every (font, letter) are held out of training: the last quarter of the set."""
GLYPHS_PREPROCESSING = Preprocessing(
    resize=GLYPH_SIZE, crop=GLYPH_SIZE, mean=(0.5,), std=(0.5,), channels=1, interpolation="bilinear"
)


class GlyphsResNet(nn.Module):
    """A small ResNet (torchvision's ``BasicBlock``): stem conv, three stages of one block (widths
    ``w``, ``2w``, ``4w``, strides 1, 2, 2), global average pool, linear: 32x32x1 -> 26 logits."""

    def __init__(self, width: int = 8) -> None:
        super().__init__()
        from torchvision.models.resnet import BasicBlock

        w = width
        self.stem = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True)
        )
        self.layer1 = BasicBlock(w, w)
        self.layer2 = BasicBlock(w, 2 * w, stride=2, downsample=_downsample(w, 2 * w))
        self.layer3 = BasicBlock(2 * w, 4 * w, stride=2, downsample=_downsample(2 * w, 4 * w))
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4 * w, len(GLYPH_CLASSES))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layer3(self.layer2(self.layer1(self.stem(x))))
        return self.fc(torch.flatten(self.pool(x), 1))


def _downsample(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=2, bias=False), nn.BatchNorm2d(cout))


def glyphs_resnet() -> ModelSpec:
    """Model factory for ``isplit_export.zoo:glyphs_resnet`` (weights via ``--weights``)."""
    return ModelSpec(GlyphsResNet(), GLYPHS_PREPROCESSING, list(GLYPH_CLASSES))


def glyph_font_paths() -> list[Path]:
    """The font files of :data:`GLYPH_FONTS`, inside the installed matplotlib (offline)."""
    import matplotlib

    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return [root / name for name in GLYPH_FONTS]


def glyphs_arrays(seed: int = 0, variants: int = GLYPH_VARIANTS) -> tuple[np.ndarray, np.ndarray]:
    """The glyphs as uint8 images [N, 32, 32] (white on black) and int labels [N], N = 16 fonts x 26 x
    ``variants``, ordered by variant, then font, then letter (so the last variants are a balanced tail).
    Every rendering's rotation (+-12 degrees), scale (0.75-1.05), shift (+-2 px) and stroke (0-1 px) come
    from one ``numpy`` generator seeded with ``seed``: the same seed gives the same images."""
    from PIL import ImageFont

    rng = np.random.default_rng(seed)
    fonts = [ImageFont.truetype(str(p), size=96) for p in glyph_font_paths()]
    images, labels = [], []
    for _ in range(variants):
        for font in fonts:
            for label, letter in enumerate(GLYPH_CLASSES):
                angle, scale, dx, dy = rng.uniform(-12, 12), rng.uniform(0.75, 1.05), *rng.uniform(-2, 2, 2)
                stroke = int(rng.integers(0, 2))
                images.append(_render(font, letter, angle, scale, (dx, dy), stroke))
                labels.append(label)
    return np.stack(images), np.asarray(labels, dtype=np.int64)


def _render(
    font: Any, letter: str, angle: float, scale: float, shift: tuple[float, float], stroke: int
) -> np.ndarray:
    """One letter, drawn 4x larger, centred, rotated, scaled into 32x32 and shifted (antialiased)."""
    from PIL import ImageDraw

    big = 4 * GLYPH_SIZE
    canvas = Image.new("L", (big, big), 0)
    draw = ImageDraw.Draw(canvas)
    left, top, right, bottom = draw.textbbox((0, 0), letter, font=font, stroke_width=2 * stroke)
    xy = ((big - (right - left)) / 2 - left, (big - (bottom - top)) / 2 - top)
    draw.text(xy, letter, fill=255, font=font, stroke_width=2 * stroke, stroke_fill=255)
    canvas = canvas.rotate(angle, resample=Image.Resampling.BILINEAR)
    side = round(GLYPH_SIZE * scale)
    small = canvas.resize((side, side), Image.Resampling.LANCZOS)
    out = Image.new("L", (GLYPH_SIZE, GLYPH_SIZE), 0)
    out.paste(small, (round((GLYPH_SIZE - side) / 2 + shift[0]), round((GLYPH_SIZE - side) / 2 + shift[1])))
    return np.asarray(out, dtype=np.uint8)


def glyphs_tensor(images: np.ndarray) -> torch.Tensor:
    """Preprocess uint8 glyphs exactly as the PNG path does."""
    from isplit_export.data import preprocess

    return torch.stack([preprocess(Image.fromarray(im), GLYPHS_PREPROCESSING) for im in images])


def glyphs_held_out_start(variants: int = GLYPH_VARIANTS) -> int:
    """Index of the first held-out glyph: the last :data:`GLYPH_HOLDOUT_VARIANTS` variants are held out."""
    return (variants - GLYPH_HOLDOUT_VARIANTS) * len(GLYPH_FONTS) * len(GLYPH_CLASSES)


def train_glyphs_resnet(seed: int = 0, epochs: int = 15) -> tuple[GlyphsResNet, float]:
    """Train :class:`GlyphsResNet` on the glyphs before :func:`glyphs_held_out_start` (seeded); returns it and
    its accuracy on the held-out variants."""
    torch.manual_seed(seed)
    images, labels = glyphs_arrays(seed)
    x, y = glyphs_tensor(images), torch.from_numpy(labels)
    n_train = glyphs_held_out_start()
    model = GlyphsResNet()
    return model, fit_classifier(model, x, y, n_train, seed=seed, epochs=epochs)


def write_glyphs_imagefolder(root: Path, *, seed: int = 0, start: int = 0, count: int | None = None) -> Path:
    """Write glyphs[start:start+count] of :func:`glyphs_arrays` (``seed``) as ``root/<letter>/<index>.png``."""
    images, labels = glyphs_arrays(seed)
    stop = len(images) if count is None else start + count
    for i in range(start, min(stop, len(images))):
        folder = root / GLYPH_CLASSES[int(labels[i])]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(images[i]).save(folder / f"{i:04d}.png")
    return root
