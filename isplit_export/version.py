"""The tool's version, written once (``pyproject.toml``) and read from the installed package's metadata, and
the run stamp that documents write next to it."""

from __future__ import annotations

import datetime as dt
import platform
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("isplit-export")
except PackageNotFoundError:  # a source tree that was never installed (pip install -e . fixes it)
    __version__ = "0+unknown"


def run_stamp() -> dict[str, str]:
    """The ``created`` (UTC, to the second), ``host`` and ``torch`` keys that begin a document's ``run`` block:
    when, where and with which torch it was written (the part that varies between runs)."""
    import torch  # here: reading the version alone (``--version``) must not load torch

    return {
        "created": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "host": platform.platform(),
        "torch": torch.__version__,
    }
