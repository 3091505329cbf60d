"""The glyph set (letters rendered from matplotlib's fonts, isplit_export.zoo): the same seed gives the same
images, every letter is equally represented, and the held-out tail is balanced too (no training here)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from isplit_export.zoo import (
    GLYPH_CLASSES,
    GLYPH_FONTS,
    GlyphsResNet,
    glyph_font_paths,
    glyphs_arrays,
    glyphs_held_out_start,
    glyphs_resnet,
    write_glyphs_imagefolder,
)


def test_the_fonts_ship_with_matplotlib() -> None:
    assert all(p.is_file() for p in glyph_font_paths()) and len(GLYPH_FONTS) == 16


def test_glyphs_are_deterministic_and_balanced() -> None:
    images, labels = glyphs_arrays(seed=0, variants=2)
    again, labels_again = glyphs_arrays(seed=0, variants=2)
    other, _ = glyphs_arrays(seed=1, variants=2)
    assert images.shape == (2 * 16 * 26, 32, 32) and images.dtype == np.uint8
    assert np.array_equal(images, again) and np.array_equal(labels, labels_again)
    assert not np.array_equal(images, other)
    assert np.bincount(labels, minlength=26).tolist() == [2 * 16] * 26
    tail = labels[glyphs_held_out_start(variants=2) :]
    assert len(tail) == 2 * 16 * 26 and np.bincount(tail, minlength=26).tolist() == [2 * 16] * 26
    ink = (images > 127).reshape(len(images), -1).sum(axis=1)
    assert ink.min() > 10 and ink.max() < 32 * 32 // 2  # every glyph is drawn, none fills the frame
    assert (images[:, 0, :] < 128).all() and (images[:, -1, :] < 128).all()  # nothing clipped at the edge


def test_the_model_spec_names_the_letters() -> None:
    spec = glyphs_resnet()
    assert spec.class_names == GLYPH_CLASSES and spec.preprocessing.input_shape == (1, 32, 32)
    params = sum(p.numel() for p in GlyphsResNet().parameters())
    assert 5_000 < params < 100_000


def test_the_imagefolder_is_named_after_the_classes(tmp_path: Path) -> None:
    root = write_glyphs_imagefolder(tmp_path / "g", seed=0, start=0, count=52)
    assert sorted(p.name for p in root.iterdir()) == GLYPH_CLASSES
    assert all(len(list((root / c).iterdir())) == 2 for c in GLYPH_CLASSES)
