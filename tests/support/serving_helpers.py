"""A real MLServer (``isplit-export serve``) in a child process on 127.0.0.1, for the serving tests.

The process starter lives in ``benchmarks/serve_process.py`` (the serving benchmark uses it too, and benchmarks
never import tests); the tests know it as ``Server``.
"""

from __future__ import annotations

from benchmarks.serve_process import LOOPBACK, free_port
from benchmarks.serve_process import ServeProcess as Server

__all__ = ["LOOPBACK", "Server", "free_port"]
