"""Stage 3, targets: device profiles, TensorRT build plans and runners, and the cost model.

``profiles`` (``targets/*.json``), ``engine_plan`` (``build_engines.sh``, ``engine_plan.json``),
``trt_backend`` (TensorRT 10 builder and runner, on the device), ``cost`` (device, link, server ms).
"""
