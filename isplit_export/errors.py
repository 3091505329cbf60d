"""Error types and the exit codes they map to.

Every failure a user can cause or meet ends in exactly one line (the exception message) and one of
these exit codes, so CI can tell a failed gate from a broken run from a check that did not run.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE_FAILED = 1  # a verification gate failed, or a bundle file was tampered with / missing
EXIT_BAD_INPUT = 2  # the user asked for something that cannot be done as asked (message names the fix)
EXIT_TECHNICAL = 3  # something broke while running (export, onnxruntime, TensorRT...)
EXIT_NOT_RUN = 4  # the requested check could not run here (e.g. no TensorRT on this machine)


class IsplitError(Exception):
    """Base class: ``str(err)`` is the one line shown to the user, ``exit_code`` the process status."""

    exit_code = EXIT_TECHNICAL


class BadInputError(IsplitError):
    """Unknown model/target, unreadable weights or data, out-of-range index... (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class GateFailedError(IsplitError):
    """A verification gate failed or a bundle does not match its manifest (exit 1)."""

    exit_code = EXIT_GATE_FAILED


class TechnicalError(IsplitError):
    """A stage crashed for a reason that is not the user's input (exit 3)."""

    exit_code = EXIT_TECHNICAL


class NotRunError(IsplitError):
    """The requested check cannot run on this machine, e.g. TensorRT without a GPU (exit 4)."""

    exit_code = EXIT_NOT_RUN


def first_line(err: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's message (its type name when it has none), cut to ``limit`` characters.

    The one way a caught error is quoted in a one-line message or recorded (run.json caps it at 300)."""
    text = str(err).strip()
    line = text.splitlines()[0] if text else type(err).__name__
    return line if limit is None else line[:limit]
