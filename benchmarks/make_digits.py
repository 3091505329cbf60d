"""Make the digits study's inputs as the tests do (``tests/support/fixtures.py``): W, the DigitsCNN trained on 75 %
of scikit-learn's digits (seed 0), and D, 200 digits it never saw (indices 1500-1699) as an ImageFolder.
W is trained with 2 torch threads, so it is byte-identical from run to run (the numbers in docs/probe.md,
sha256 9eedfdbb...); another thread count trains a slightly different CNN, and the study's numbers move
with it. The tests' committed copy, tests/data/digits.pt, is this W (``--weights-only``: no images).

    python benchmarks/make_digits.py OUT      # writes OUT/digits.pt and OUT/digits/
    python benchmarks/make_digits.py tests/data --weights-only    # the tests' weights, again
    isplit-export study isplit_export.zoo:digits_cnn --weights OUT/digits.pt --data OUT/digits \\
        --cuts all --bottleneck 64B --repeats 5
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(out: Path, *, images: bool = True) -> None:
    """Write ``out/digits.pt`` (W) and, with ``images``, ``out/digits/`` (D)."""
    import torch

    from isplit_export.zoo import train_digits_cnn, write_digits_imagefolder

    torch.set_num_threads(2)
    out.mkdir(parents=True, exist_ok=True)
    model, acc = train_digits_cnn(seed=0)
    torch.save(model.state_dict(), out / "digits.pt")
    print(f"wrote {out / 'digits.pt'} (held-out accuracy {acc:.3f})")
    if images and not (out / "digits").exists():
        write_digits_imagefolder(out / "digits", start=1500, count=200)
        print(f"wrote {out / 'digits'}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--weights-only"]
    main(Path(args[0] if args else "digits-study"), images="--weights-only" not in sys.argv[1:])
