"""Stage 4, verification: run the exported pairs and hold them to the gates.

``metrics`` (errors, agreement, correlations, CIs), ``gates`` (tolerances per encoding and
precision), ``verify`` (export-time checks and the torch-free ``isplit-export verify``).
"""
