"""The output directory of a run (``--out``): checked before any work, locked, written atomically.

``--force`` replaces only what this tool wrote (:func:`replaceable`, by the bundle contract); a lock
refuses a second run into the same ``--out``; a run builds in a marked temporary directory and
renames it into place, and the next run removes the leftovers of a killed one.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from isplit_export.contract import is_rank_output, is_tool_bundle
from isplit_export.errors import BadInputError
from isplit_export.files import _chmod_default, umask

TMP_MARKER = ".owner"
"""Suffix of the marker file next to each temporary directory of :func:`atomic_directory`
(``.OUT.tmp-XXXX.owner``, holding ``<pid> <host>`` of the owner; next to it, not inside, so the bundle
never contains it): the next run into the same parent removes the leftovers of a killed run (dead PID,
same host)."""

_LOCKS: dict[str, int] = {}
"""Lock file descriptors this process holds, by absolute ``--out`` path."""

_COMMITTED: list[Path] = []
"""The ``--out`` directories this process has put in place (renamed from their temporary directory)."""


def commits() -> int:
    """How many ``--out`` directories this process has put in place so far (an interrupted command compares
    the count with its start: a directory put in place before the signal is complete)."""
    return len(_COMMITTED)


def _abs(out: Path) -> Path:
    return Path(os.path.abspath(out))


def _os_reason(err: BaseException) -> str:
    """Why the OS refused (``strerror``, without the path the message already names), else the first line."""
    text = (getattr(err, "strerror", None) or str(err)).strip()
    return text.splitlines()[0] if text else type(err).__name__


def replaceable(out: Path) -> bool:
    """``--force`` replaces only an empty directory, a bundle of this tool, or a ``rank --out`` folder."""
    try:
        empty = not any(out.iterdir())
    except OSError:
        return False
    return empty or is_tool_bundle(out) or is_rank_output(out)


def check_writable_file(path: Path, flag: str) -> None:
    """Refuse, before any work, a file path that cannot be written (a folder, an unwritable file or
    folder, a parent that cannot be created); probed for real, nothing is left behind."""
    path = Path(path)
    if path.is_dir():
        raise BadInputError(f"{flag} {path} is a directory: pass a file path")
    try:
        if path.exists():
            with open(path, "ab"):
                pass
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=f".{path.name}.probe-", dir=path.parent)
            os.close(fd)
            os.unlink(probe)
    except OSError as e:
        raise BadInputError(f"cannot write {flag} {path} ({_os_reason(e)}): choose a writable path") from None


def check_out(out: Path, *, force: bool, allow_empty: bool = False) -> None:
    """Refuse an ``out`` that cannot or must not be (re)placed, before any work (BadInputError):

    a file in its place, an existing folder without ``force``, with ``force`` a folder that is neither
    empty nor a bundle / rank output of this tool, the current directory or one above it, and a
    parent that cannot be created or written (probed with a real temporary directory).
    """
    out = Path(out)
    a = _abs(out)
    if a.parent == a:
        raise BadInputError(f"--out {out} is the file system root: choose a new directory")
    if os.path.lexists(a) and os.path.islink(a):
        raise BadInputError(f"--out {out} is a symlink: choose a real directory")
    if a.exists():
        if not a.is_dir():
            raise BadInputError(f"--out {out} is a file, not a directory: choose another --out")
        if not force and not (allow_empty and not any(a.iterdir())):
            raise BadInputError(
                f"output directory {out} already exists: pass --force to replace it, or choose another --out"
            )
        cwd = Path.cwd()
        if cwd == a or a in cwd.parents:
            raise BadInputError(
                f"--out {out} is the current directory (or holds it): choose a directory to create"
            )
        if not replaceable(a):
            raise BadInputError(
                f"--force replaces only an empty folder or a bundle of this tool, and {out} is neither "
                "(it has other files): choose another --out"
            )
    parent = a.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        probe = Path(tempfile.mkdtemp(prefix=f".{a.name}.probe-", dir=parent))
        probe.rmdir()
    except OSError as e:
        raise BadInputError(
            f"cannot create --out {out} ({_os_reason(e)}): choose a writable location"
        ) from None
    _lock(a)
    clean_stale(parent, a.name)  # leftovers of a killed run into the same --out (dead PID, our marker)


def _lock(a: Path) -> None:
    """Hold ``.<name>.lock`` next to ``out`` until :func:`atomic_directory` ends: a second run into the
    same ``--out`` is refused instead of silently replacing the first one's bundle."""
    if str(a) in _LOCKS:
        return
    try:
        import fcntl
    except ImportError:  # Windows: no advisory locks; the final re-check still guards the rename
        return
    path = a.parent / f".{a.name}.lock"
    for _ in range(5):
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666 & ~umask())
        except OSError as e:
            raise BadInputError(
                f"cannot create --out {a} ({_os_reason(e)}): choose a writable location"
            ) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            raise BadInputError(
                f"another isplit-export run is writing --out {a}: wait for it, or choose another --out"
            ) from None
        try:
            same = os.fstat(fd).st_ino == os.stat(path).st_ino  # not unlinked by a finishing run meanwhile
        except FileNotFoundError:
            same = False
        if same:
            _LOCKS[str(a)] = fd
            return
        os.close(fd)
    raise BadInputError(f"could not lock --out {a}: retry")


def _unlock_all() -> None:
    for key in list(_LOCKS):
        _unlock(Path(key))


atexit.register(_unlock_all)


def _unlock(a: Path) -> None:
    fd = _LOCKS.pop(str(a), None)
    if fd is not None:
        with contextlib.suppress(OSError):
            (a.parent / f".{a.name}.lock").unlink()
        os.close(fd)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def clean_stale(parent: Path, name: str) -> list[Path]:
    """Remove ``.<name>.tmp-*`` / ``.<name>.old-*`` directories of this tool whose owner (marker file:
    PID and host) is dead on this host; returns what was removed. Anything without our marker stays."""
    import socket

    removed = []
    host = socket.gethostname()
    for d in list(parent.glob(f".{glob_escape(name)}.tmp-*")) + list(
        parent.glob(f".{glob_escape(name)}.old-*")
    ):
        marker = _marker(d)
        try:
            if d.name.endswith(TMP_MARKER) or d.is_symlink() or not d.is_dir() or not marker.is_file():
                continue
            pid_text, _, owner = marker.read_text(encoding="utf-8").strip().partition(" ")
            if owner != host or _pid_alive(int(pid_text)):
                continue
        except (OSError, ValueError):
            continue
        shutil.rmtree(d, ignore_errors=True)
        marker.unlink(missing_ok=True)
        removed.append(d)
    return removed


def _marker(d: Path) -> Path:
    return d.with_name(d.name + TMP_MARKER)


def glob_escape(name: str) -> str:
    """``name`` with glob metacharacters escaped."""
    import glob

    return glob.escape(name)


def _mark(d: Path) -> None:
    import socket

    _marker(d).write_text(f"{os.getpid()} {socket.gethostname()}\n", encoding="utf-8")


@contextlib.contextmanager
def atomic_directory(out: Path, *, force: bool, allow_empty: bool = False) -> Iterator[Path]:
    """Yield a fresh temporary directory that becomes ``out`` only if the block succeeds.

    The temporary directory sits next to ``out`` (same file system, so the final step is a rename) and
    carries a marker (PID, host): leftovers of a killed run are removed by the next run into the same
    parent. ``out`` is checked (:func:`check_out`) and locked against a concurrent run; with ``force``
    an existing bundle is replaced only after the new content is complete, and is re-checked at the
    rename. Modes follow the umask.
    """
    out = Path(out)
    a = _abs(out)
    check_out(out, force=force, allow_empty=allow_empty)
    try:
        parent = a.parent
        tmp = Path(tempfile.mkdtemp(prefix=f".{a.name}.tmp-", dir=parent))
        _mark(tmp)
        try:
            yield tmp
            _chmod_default(tmp, directory=True)
            if os.path.lexists(a):
                empty = a.is_dir() and not a.is_symlink() and not any(a.iterdir())
                if (
                    not (force or (allow_empty and empty))
                    or not a.is_dir()
                    or a.is_symlink()
                    or not replaceable(a)
                ):
                    raise BadInputError(
                        f"--out {out} changed while this run was writing it: nothing replaced, rerun"
                    )
                old = Path(tempfile.mkdtemp(prefix=f".{a.name}.old-", dir=parent))
                _mark(old)
                os.replace(a, old / a.name)
                os.replace(tmp, a)
                _COMMITTED.append(a)
                shutil.rmtree(old, ignore_errors=True)
                _marker(old).unlink(missing_ok=True)
            else:
                try:
                    os.rename(tmp, a)  # replaces at most an empty folder someone made meanwhile
                    _COMMITTED.append(a)
                except OSError as e:
                    raise BadInputError(
                        f"--out {out} appeared while this run was writing it ({_os_reason(e)}): nothing replaced, rerun"
                    ) from None
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
            _marker(tmp).unlink(missing_ok=True)
    finally:
        _unlock(a)
