"""Make the digits study's inputs as the tests do (``tests/support/fixtures.py``): W, the DigitsCNN trained on 75 %
of scikit-learn's digits (seed 0), and D, 200 digits it never saw (indices 1500-1699) as an ImageFolder.
W is byte-identical for the same torch thread count (the numbers in docs/probe.md: 2 threads, sha256
9eedfdbb...); another thread count trains a slightly different CNN, and the study's numbers move with it.

    python benchmarks/make_digits.py OUT      # writes OUT/digits.pt and OUT/digits/
    isplit-export study isplit_export.zoo:digits_cnn --weights OUT/digits.pt --data OUT/digits \\
        --cuts all --bottleneck 64B --repeats 5
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(out: Path) -> None:
    import torch

    from isplit_export.zoo import train_digits_cnn, write_digits_imagefolder

    out.mkdir(parents=True, exist_ok=True)
    model, acc = train_digits_cnn(seed=0)
    torch.save(model.state_dict(), out / "digits.pt")
    if not (out / "digits").exists():
        write_digits_imagefolder(out / "digits", start=1500, count=200)
    print(f"wrote {out / 'digits.pt'} (held-out accuracy {acc:.3f}) and {out / 'digits'}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else "digits-study"))
