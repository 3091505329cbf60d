"""The names the CLI knows without importing PyTorch: its commands and the models it accepts, with a
"did you mean" for a near miss. A mistyped command or model fails in a fraction of a second, not after
seconds of imports and model loading."""

from __future__ import annotations

import difflib
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from isplit_export.errors import BadInputError
from isplit_export.model_list import TORCHVISION_MODELS, TORCHVISION_VERSION
from isplit_export.options import DEFAULT_MODEL

CLOSE = 0.75
"""difflib's similarity at which a word counts as a typo of a name (``verfy`` -> ``verify``: 0.91)."""


def closest(word: str, names: list[str] | tuple[str, ...]) -> str | None:
    """The name ``word`` is most likely a typo of, or None."""
    found = difflib.get_close_matches(word, names, n=1, cutoff=CLOSE)
    return found[0] if found else None


def _torchvision_listed() -> bool:
    """Whether :data:`TORCHVISION_MODELS` is the installed torchvision's list (then it decides alone)."""
    try:
        return version("torchvision") == TORCHVISION_VERSION
    except PackageNotFoundError:
        return False


def known_model(name: str) -> bool | None:
    """True for a model name :func:`isplit_export.models.load_model` accepts, False for one it refuses,
    None when only loading can tell (another torchvision release than the listed one)."""
    if ":" in name or name == DEFAULT_MODEL or name in TORCHVISION_MODELS:
        return True
    return False if _torchvision_listed() else None


def listed_models() -> list[str] | None:
    """The model names ``isplit-export models`` prints, without torch; None when only torchvision can say
    (another release than the listed one)."""
    return sorted({DEFAULT_MODEL, *TORCHVISION_MODELS}) if _torchvision_listed() else None


def check_model(name: str) -> str:
    """The model argument's check (a typer callback): an unknown name is one line, exit 2, before torch."""
    if known_model(name) is False:
        near = closest(name, (DEFAULT_MODEL, *TORCHVISION_MODELS))
        hint = f"did you mean '{near}'? " if near else ""
        raise BadInputError(
            f"unknown model '{name}': {hint}(isplit-export models lists them; or pass package.module:factory)"
        )
    return name


def check_command(word: str, commands: list[str]) -> None:
    """Refuse ``word``, the first argument, when it reads as a mistyped command rather than a model
    (``isplit-export verfy b``): close to a command, and not a known model, a path or a factory."""
    near = closest(word, commands)
    if near is None or word.startswith("-") or known_model(word) or Path(word).exists():
        return
    raise BadInputError(f"unknown command '{word}': did you mean '{near}'? (isplit-export -h lists them)")


_NOT_ONE_OF = re.compile(r"'(?P<value>[^']*)' is not one of (?P<choices>.*?)\.?$")


_NOT_A = {"a valid integer": "pass a whole number", "a valid number": "pass a number"}
"""What typer says of a value of the wrong type, and the fix, as the options' own checks word it."""


def _given(flags: list[str], args: list[str]) -> str | None:
    """The value ``args`` gave option ``flags`` (``--flag VALUE`` or ``--flag=VALUE``; the last one)."""
    value = None
    for i, arg in enumerate(args):
        for flag in flags:
            if arg == flag and i + 1 < len(args):
                value = args[i + 1]
            elif arg.startswith(f"{flag}="):
                value = arg.partition("=")[2]
    return value


def usage_line(err: Any, args: list[str]) -> str:
    """A usage error of typer/click (a bad choice, a value of the wrong type, an unknown option, a missing
    argument) as one line that names the fix, in the words of the options' own checks: ``unknown --target
    'jetsn': did you mean 'jetson'? choose one of ...``, ``--split 'x': pass a whole number``."""
    message = str(err.format_message()).replace("Value error, ", "")
    param = getattr(err, "param", None)
    found = _NOT_ONE_OF.search(message)
    ctx = getattr(err, "ctx", None)
    where = f" ({ctx.command_path} -h lists the options)" if ctx is not None else ""
    if param is not None and found:
        flag = max(param.opts, key=len)
        choices = [c.strip().strip("'") for c in found["choices"].split(",")]
        near = closest(found["value"], choices)
        hint = f"did you mean '{near}'? " if near else ""
        return f"unknown {flag} '{found['value']}': {hint}choose one of {', '.join(choices)}"
    fix = next((f for what, f in _NOT_A.items() if what in message), None)
    if param is not None and fix is not None and (value := _given(list(param.opts), args)) is not None:
        return f"{max(param.opts, key=len)} '{value}': {fix}"
    return f"{message.rstrip('.')}{where}"
