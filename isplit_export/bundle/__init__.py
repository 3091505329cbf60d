"""Stage 5, bundle: assemble, describe and re-plan the output directory (the plan job:
:mod:`isplit_export.jobs.plan`).

``build`` (``export()``: the whole pipeline into an atomically written bundle), ``report``
(``report.md``), ``summary`` (the CI summary), ``weights`` (shared content-addressed external data),
``selection`` (objectives, constraints), ``cost_block`` + ``cost_table`` + ``plan_measurements`` (the
cost block, its table, the measured figures a re-plan uses).
"""
