"""The committed glyphs ResNet (``tests/data/glyphs.pt``): ``python benchmarks/make_glyphs.py tests/data
--weights-only`` makes it again (2 torch threads, seed 0), and ``tests/e2e/test_glyphs.py`` checks that
training still gives it and that it reads the held-out glyphs."""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch

GLYPHS_WEIGHTS = Path(__file__).resolve().parents[1] / "data" / "glyphs.pt"
"""GlyphsResNet trained on the first 6 renderings of every (font, letter) (``train_glyphs_resnet(seed=0)``)."""
GLYPHS_WEIGHTS_SHA256 = "e44e215fb8febb25494199b4eaa15b3fc5059b5376393871678f47f616b990e1"


def load_glyphs_weights() -> dict[str, torch.Tensor]:
    """The committed state dict, after checking its sha256 (a changed file fails here, not in some test)."""
    digest = hashlib.sha256(GLYPHS_WEIGHTS.read_bytes()).hexdigest()
    assert digest == GLYPHS_WEIGHTS_SHA256, (
        f"{GLYPHS_WEIGHTS} changed (sha256 {digest}): regenerate it, see above"
    )
    return dict(torch.load(GLYPHS_WEIGHTS, weights_only=True))
