"""Stage 3, targets: device profiles, TensorRT build plans and runners, and the cost model.

``profiles`` (``isplit_export/profiles/*.json``), ``engine_build`` (``build_engines.sh``, ``engine_plan.json``), ``dla``
(which head layers the DLA can run, before the build), ``typed`` (fp16-typed ONNX copies for TensorRT 11),
``trt_backend`` (TensorRT 10/11 builder and runner, on the device) with ``cuda_runtime``, ``cost``
(device, link, server ms). The default of ``--min-dla-fraction`` is ``isplit_export.options.MIN_DLA_FRACTION``.
"""
