"""The bundle contract's names and limits: schema strings, file names, size/depth/value bounds."""

from __future__ import annotations

import re

SCHEMA = "isplit.bundle/1"
MANIFEST_FILE = "manifest.json"
RANKING_FILE = "ranking.json"
REPORT_FILE = "report.md"
VERIFY_FILE = "verify.json"
RUN_FILE = "run.json"
RUN_SCHEMA = "isplit.run/1"
PLAN_FILE = "plan.json"
ENGINE_PLAN_FILE = "engine_plan.json"
ENGINE_PLAN_SCHEMA = "isplit.engine_plan/1"
ENGINES_DIR = "engines"
"""Inside a split folder: the only place ``build-engines`` writes (engines, timing cache, build.json)."""
TRITON_ENGINE_FILE = "model.plan"
"""``triton/<model>/1/model.plan``: where a Triton server's own tail engine goes (built there, not shipped)."""
MAX_BATCH_SIZE = 8
"""Largest batch a served tail takes: the Triton configs' ``max_batch_size`` and the engine plans' ``max_batch``."""
RANKING_SCHEMA_PREFIX = "isplit.ranking/"
RANK_OUTPUT_FILES = frozenset(
    {"ranking.json", "cui.png", "cde.png", "probe.png", "tradeoff.png", "rate_accuracy.png", "pareto.png"}
)
"""What ``isplit-export rank --out`` writes: a folder holding only these is a rank output of this tool."""

MAX_JSON_BYTES = 64 << 20
"""Largest JSON file a reader accepts (a resnet50 bundle's manifest is ~100 KB, its ranking ~1 MB)."""
MAX_JSON_DEPTH = 64
"""Deepest nesting of ``[``/``{`` accepted (our files nest < 10 deep); deeper is refused before parsing."""
MAX_NPZ_MEMBER_BYTES = 512 << 20
"""Largest decompressed ``.npy`` member of an ``.npz`` (a golden input batch is a few MB)."""
MAX_NPZ_TOTAL_BYTES = 1 << 30
"""Largest decompressed total of one ``.npz``."""
MAX_NPZ_MEMBERS = 64

MAX_MS = 1e7
"""Largest latency figure accepted (ms; about 3 hours per image)."""
MAX_FLOPS = 1e18
MAX_DIM = 1 << 31
MAX_ELEMENTS = 1 << 40

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_TENSOR_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:/-]{0,127}$")
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"', re.S)
_BRACKETS = re.compile(r"[\[\]{}]")
