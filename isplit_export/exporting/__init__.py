"""Stage 2, export: head/tail ONNX pairs and what travels between them.

``onnx_export`` (torch -> ONNX), ``onnx_utils``, ``encoding`` (fp32 / fp16 / uint8 boundary codecs),
``quantize`` (INT8 QDQ pairs with int8 weights; helped by ``qdq_graph``, ``bias_correction``,
``float_stem``).
"""
