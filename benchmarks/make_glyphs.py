"""Make the glyph study's inputs: W, the GlyphsResNet trained on the first 6 of the 8 renderings of every
(font, letter) (``train_glyphs_resnet(seed=0)``), and D, the 832 held-out renderings (the last 2 of every
font and letter, 32 per letter) as an ImageFolder (folders ``A``..``Z``, the model's class names).
W is trained with 2 torch threads, so it is byte-identical from run to run on one machine; the tests'
committed copy, tests/data/glyphs.pt, is this W (``--weights-only``: no images).

    python benchmarks/make_glyphs.py OUT      # writes OUT/glyphs.pt and OUT/glyphs/
    python benchmarks/make_glyphs.py tests/data --weights-only    # the tests' weights, again
    isplit-export study isplit_export.zoo:glyphs_resnet --weights OUT/glyphs.pt --data OUT/glyphs \\
        --cuts all --bottleneck 32B --repeats 5    # 32 B: the pool cut carries 32 values
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def main(out: Path, *, images: bool = True) -> None:
    """Write ``out/glyphs.pt`` (W) and, with ``images``, ``out/glyphs/`` (D)."""
    import torch

    from isplit_export.zoo import glyphs_held_out_start, train_glyphs_resnet, write_glyphs_imagefolder

    torch.set_num_threads(2)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    model, acc = train_glyphs_resnet(seed=0)
    torch.save(model.state_dict(), out / "glyphs.pt")
    seconds = time.perf_counter() - start
    print(f"wrote {out / 'glyphs.pt'} (held-out accuracy {acc:.3f}, {seconds:.0f} s to render and train)")
    if images and not (out / "glyphs").exists():
        write_glyphs_imagefolder(out / "glyphs", start=glyphs_held_out_start())
        print(f"wrote {out / 'glyphs'}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--weights-only"]
    main(Path(args[0] if args else "glyphs-study"), images="--weights-only" not in sys.argv[1:])
