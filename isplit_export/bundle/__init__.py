"""Stage 5, bundle: assemble, describe and re-plan the output directory.

``build`` (``export()``: the whole pipeline into an atomically written bundle), ``report``
(``report.md``), ``summary`` (the CI summary), ``weights`` (shared content-addressed external data),
``selection`` + ``planning`` (objectives, constraints and the torch-free ``isplit-export plan``).
"""
