"""Stage 4, verification: run the exported pairs and hold them to the gates.

``metrics`` (errors, agreement, correlations, CIs), ``gates`` (tolerances per encoding and
precision), ``checks`` (judging a pair: task metric, gate, boundary and code checks), ``runners``
(``OnnxrtRunner`` / ``TrtRunner``: activate / infer / deactivate, ``run_pair``, one latency timer),
``backends`` (the one registry by backend name: what each backend runs, its runners, its gates), ``results`` (verify's rows and table),
``verify`` (one split's pairs on the goldens: the library of the torch-free verify job,
:mod:`isplit_export.jobs.verify`).
"""
