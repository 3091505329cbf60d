"""The jobs import without PyTorch (verify, plan, build-engines, serve and run run on the device; rank,
export and study import torch inside the functions that need it), and the public API still lists them."""

from __future__ import annotations

import subprocess
import sys

TORCH_FREE_TO_IMPORT = ("verify", "plan", "build_engines", "serve", "run", "rank")


def test_jobs_import_without_torch() -> None:
    code = (
        "import sys\n"
        "sys.modules.update(dict.fromkeys(['torch', 'torchvision']))\n"
        f"for job in {TORCH_FREE_TO_IMPORT!r}:\n"
        "    __import__(f'isplit_export.jobs.{job}')\n"
        "from isplit_export import plan, rank, verify_bundle\n"
        "print(verify_bundle.__module__, plan.__module__, rank.__module__)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'torchvision') and sys.modules[m]))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    modules, torch_loaded = proc.stdout.splitlines()
    assert modules == "isplit_export.jobs.verify isplit_export.jobs.plan isplit_export.jobs.rank"
    assert torch_loaded == "[]"


def test_public_api_names_the_jobs() -> None:
    import isplit_export

    for name in ("rank", "export", "study", "verify_bundle", "plan"):
        assert callable(getattr(isplit_export, name)), name
    assert isplit_export.study.__module__ == "isplit_export.jobs.study"
