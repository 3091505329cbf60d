"""Stage 4, verification: run the exported pairs and hold them to the gates.

``metrics`` (errors, agreement, correlations, CIs), ``gates`` (tolerances per encoding and
precision), ``checks`` (judging a pair: task metric, gate, boundary and code checks), ``runtime``
(onnxruntime / TensorRT pair runners, one latency timer), ``results`` (verify's rows and table),
``verify`` (the torch-free ``isplit-export verify``).
"""
