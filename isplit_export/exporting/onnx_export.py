"""Export PyTorch modules (the full model, a head, a tail) to ONNX, deterministically.

Uses the TorchScript-based exporter (``dynamo=False``) at the pinned opset (:data:`OPSET`): it emits
the same bytes for the same module, keeps a dynamic batch axis, and its graphs parse in TensorRT 8.5+
and onnxruntime. Every file is canonicalized and passes the ONNX checker (``full_check``).
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import onnx
import torch
from torch import nn

from isplit_export.errors import TechnicalError
from isplit_export.exporting.onnx_utils import OPSET, save_model

BATCH_AXIS = "batch"


def to_onnx(module: nn.Module, example: torch.Tensor, input_name: str, output_name: str) -> onnx.ModelProto:
    """Export ``module`` (one input, one output) with a dynamic batch axis; returns the checked model.

    The exporter writes a private file that is read back: through a file object it would hold its bytes
    twice more (vgg16: 1.1 GB) while they are copied out.
    """
    # nn.MultiheadAttention's inference fast path (ViT encoders) has no ONNX symbolic: export the
    # plain path, which computes the same function
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    with tempfile.TemporaryDirectory(prefix="isplit-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    module,
                    (example,),
                    str(path),
                    dynamo=False,
                    opset_version=OPSET,
                    input_names=[input_name],
                    output_names=[output_name],
                    dynamic_axes={input_name: {0: BATCH_AXIS}, output_name: {0: BATCH_AXIS}},
                    do_constant_folding=True,
                )
        except Exception as err:
            raise TechnicalError(
                f"ONNX export failed ({type(err).__name__}: {str(err).splitlines()[0][:200]})"
            ) from err
        finally:
            torch.backends.mha.set_fastpath_enabled(fastpath)
        return onnx.load(str(path))


def export_file(
    module: nn.Module, example: torch.Tensor, path: Path, input_name: str, output_name: str
) -> Path:
    """:func:`to_onnx` then write ``path`` (canonical bytes, ONNX checker run)."""
    save_model(to_onnx(module, example, input_name, output_name), path)
    return path
