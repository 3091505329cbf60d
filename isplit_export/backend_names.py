"""The names of the runtimes, spelt once: what a target profile runs (``backend``), what ``verify --backend``
and ``run --backend`` take, and what ``verify.json`` and ``run.json`` record.

A low module (no imports) so that the target profiles (``targets/profiles.py``), the run options
(``options_serving.py``) and the runner registry (``verification/backends.py``, which maps each name to
its runners and gates) all use the same constants; nothing else spells a backend's name.
"""

from __future__ import annotations

from typing import Final, Literal

ONNXRUNTIME: Final = "onnxruntime"
"""The exported ONNX models in onnxruntime (CPU): the ``cpu`` and ``onnx`` targets, ``verify`` by default."""
TENSORRT: Final = "tensorrt"
"""TensorRT engines built from the bundle on the device (``build-engines``): Jetson and server GPU targets."""
AUTO: Final = "auto"
"""``run --backend auto``: the available backend of highest priority for the head."""
RUNTIMES = (TENSORRT, ONNXRUNTIME)
"""What a target profile may run (its ``backend`` field)."""
RUN_BACKENDS = (AUTO, ONNXRUNTIME, TENSORRT)
"""``run --backend`` choices (the head's runtime); ``auto``: TensorRT when its head engine was built here,
else onnxruntime."""
Runtime = Literal["onnxruntime", "tensorrt"]
"""The type of a runtime's name (``verify --backend``): the values of :data:`RUNTIMES`, which the CLI lists
in ``--help`` (``tests/unit/test_backend_names.py`` holds the two equal)."""
RunBackend = Literal["auto", "onnxruntime", "tensorrt"]
"""The type of ``run --backend``: the values of :data:`RUN_BACKENDS`."""
