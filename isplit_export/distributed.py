"""Several processes, one result: the ranking (and the study) under ``torchrun`` / torch.distributed.

A job is distributed when it is launched by ``torchrun`` with more than one process (``WORLD_SIZE``
> 1) or when ``--distributed`` is given (outside torchrun that is a world of one process). Then:

* the process group uses gloo on CPUs and nccl on GPUs (process ``LOCAL_RANK`` takes GPU
  ``LOCAL_RANK``), with a timeout on every collective (``ISPLIT_DIST_TIMEOUT_S``, default 1800 s:
  it bounds how long a process waits for the slowest one);
* the ranking's images are sharded by blocks of one batch (:class:`isplit_export.data.Shard`):
  batch ``b`` of the single-process run is read by process ``b % world_size``, so every batch holds
  the same images as in one process and every image keeps its global index;
* the per-class counts and exact score sums (:mod:`isplit_export.ranking.exactsum`) are gathered and
  added up on every process (class keys differ between processes), so the CUI is bit-identical to
  the single-process one whatever the world size; the bootstrap
  replicate sums (double-double, :mod:`isplit_export.ranking.bootstrap`) are gathered and merged, which
  costs ``keys x B x cuts x 16`` bytes per process in every process;
* before anything is written, and after, every process reports ``ok`` or its error through an
  all-gather (:meth:`Job.checkpoint`), so a failure on one process is known to all: they all exit
  non-zero, process 0 prints one line naming the failed process and its cause, and nothing is
  written. A failed process also raises a flag in the job's key-value store, which the others check
  before every batch, so they stop early instead of finishing their shard;
* process 0 alone writes the outputs, which record ``{"world_size", "backend"}`` as ``distributed``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from isplit_export.errors import EXIT_TECHNICAL, BadInputError, IsplitError

if TYPE_CHECKING:
    import torch

    from isplit_export.data import ImageSet, Shard
    from isplit_export.ranking.importance import Importance

log = logging.getLogger(__name__)

T = TypeVar("T")

TIMEOUT_ENV = "ISPLIT_DIST_TIMEOUT_S"
DEFAULT_TIMEOUT_S = 1800.0
_ABORT_KEY = "isplit/abort"
_REPORTED_KEY = "isplit/reported"
_CURRENT: Job | None = None
_CHECK_EVERY_S = 0.5


class DistributedError(IsplitError):
    """A process of a distributed job failed; the message names it and its cause.

    ``reported`` is True when process 0 has already printed the line (the CLI does not repeat it).
    """

    def __init__(self, message: str, exit_code: int = EXIT_TECHNICAL, *, reported: bool = False) -> None:
        super().__init__(message)
        self.exit_code = exit_code
        self.reported = reported


class _PeerFailed(Exception):
    """Raised in a healthy process when another one has raised the abort flag."""


def requested(distributed: bool = False) -> bool:
    """True under torchrun with more than one process, or when ``--distributed`` is asked for."""
    return distributed or _env_int("WORLD_SIZE", 1) > 1


def is_primary() -> bool:
    """True in process 0 (and in a plain single-process run): the one that prints and writes."""
    return _env_int("RANK", 0) == 0


def timeout_s() -> float:
    """The collective timeout in seconds (``ISPLIT_DIST_TIMEOUT_S``)."""
    raw = os.environ.get(TIMEOUT_ENV)
    try:
        value = float(raw) if raw else DEFAULT_TIMEOUT_S
    except ValueError as err:
        raise BadInputError(f"{TIMEOUT_ENV}={raw!r}: set it to a number of seconds") from err
    if value <= 0:
        raise BadInputError(f"{TIMEOUT_ENV}={raw!r}: set it to a positive number of seconds")
    return value


@dataclass
class Job:
    """This process's part in a job: its rank, the world size, the backend and the device it computes on.

    A single-process job (``world_size`` 1, ``backend`` None) has the same methods, which then do
    nothing but call through, so the pipeline is written once.
    """

    rank: int = 0
    world_size: int = 1
    backend: str | None = None
    device: str = "cpu"
    control: Any = None  # the process group for status and object collectives (gloo)
    store: Any = None
    broken: bool = False
    _stopped: bool = field(default=False, repr=False)
    _last_check: float = field(default=0.0, repr=False)

    @property
    def active(self) -> bool:
        """True in a distributed job (even of one process)."""
        return self.backend is not None

    @property
    def primary(self) -> bool:
        return self.rank == 0

    def describe(self) -> dict[str, Any] | None:
        """The ``distributed`` block of the outputs; None in a single-process run."""
        return {"world_size": self.world_size, "backend": self.backend} if self.active else None

    def shard(self, block: int) -> Shard | None:
        """This process's shard of an image set read in batches of ``block`` (None: all of it)."""
        if not self.active:
            return None
        from isplit_export.data import Shard

        return Shard(self.rank, self.world_size, block, self.check_peers)

    def share(self, count: int) -> list[int]:
        """The task indices ``0..count-1`` this process takes (strided: ``i % world_size == rank``)."""
        return [i for i in range(count) if i % self.world_size == self.rank]

    # -- failure handling -------------------------------------------------------------------

    def check_peers(self) -> None:
        """Raise if another process has failed (one key lookup in the store, at most every 0.5 s)."""
        if self.store is None:
            return
        now = time.monotonic()
        if now - self._last_check < _CHECK_EVERY_S:
            return
        self._last_check = now
        try:
            failed = bool(self.store.check([_ABORT_KEY]))
        except Exception:  # the store is gone: the checkpoint will say why
            return
        if failed:
            raise _PeerFailed("stopped because another process failed")

    def checkpoint(self, error: BaseException | None = None) -> None:
        """All processes report ok or their error; raise :class:`DistributedError` if any failed.

        Every process must call this the same number of times, in the same order, which the
        pipeline ensures: the reductions and the write each start with one, and a process that
        raised calls it once (from :func:`job`) instead of the collectives it skipped.
        """
        if not self.active:
            if error is not None:
                raise error
            return
        mine = _status(error)
        statuses = self._all_gather(mine)
        failed = [(r, s) for r, s in enumerate(statuses) if not s["ok"]]
        if not failed:
            return
        origins = [f for f in failed if s_origin(f[1])] or failed
        r, status = origins[0]
        message = (
            f"process {r} of {self.world_size} (rank {r}) failed: {status['cause']}; nothing was written"
        )
        self._report(message)
        raise DistributedError(message, int(status["exit_code"]), reported=True)

    def _report(self, message: str) -> None:
        """Process 0 prints the one line; the others wait (briefly) until it has, then exit too."""
        if self.primary:
            print(f"error: {message}", file=sys.stderr, flush=True)
            with contextlib.suppress(Exception):
                self.store.set(_REPORTED_KEY, "1")
        else:
            with contextlib.suppress(Exception):
                self.store.wait([_REPORTED_KEY], dt.timedelta(seconds=10))

    def _raise_flag(self, error: BaseException) -> None:
        with contextlib.suppress(Exception):
            self.store.set(_ABORT_KEY, f"rank {self.rank}: {error}")

    # -- collectives --------------------------------------------------------------------------

    def _all_gather(self, obj: T) -> list[T]:
        import torch.distributed as dist

        out: list[Any] = [None] * self.world_size
        try:
            dist.all_gather_object(out, obj, group=self.control)
        except Exception as err:  # a peer died, or the timeout passed
            self.broken = True
            cause = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
            raise DistributedError(
                f"process {self.rank} of {self.world_size} lost the other processes ({cause}); nothing was written"
            ) from err
        return out

    def gather(self, obj: T) -> list[T]:
        """Every process's ``obj``, in rank order, on every process (after a checkpoint)."""
        self.checkpoint()
        return self._all_gather(obj) if self.active else [obj]

    def reduce_importance(self, imp: Importance, images: ImageSet) -> Importance:
        """The sum of every process's :class:`Importance` (and the union of the unreadable files)."""
        if not self.active:
            return imp
        from isplit_export.ranking.bootstrap import BootstrapSums
        from isplit_export.ranking.importance import Importance

        mine = (
            Importance(imp.num_cuts, counts=imp.counts, exact=imp.exact),
            sorted(images.unreadable),
            imp.boot,
        )
        parts = self.gather(mine)
        out = Importance(imp.num_cuts)
        for part, unreadable, _ in parts:  # exact sums: the order of the parts does not matter
            out.merge(part)
            images.unreadable.update(unreadable)
        if imp.boot is not None:  # double-double sums: merged, in rank order
            out.boot = BootstrapSums(imp.boot.replicates, imp.num_cuts, seed=imp.boot.seed)
            for _, _, boot in parts:
                if boot is not None:
                    out.boot.merge(boot)
        if out.images == 0:
            raise BadInputError(f"no readable images in {images.source}: pass --data with image files")
        return out

    def write(self, fn: Callable[[], T]) -> T | None:
        """Run ``fn`` (which writes the outputs) on process 0 only, once every process is known ok;
        the processes check again afterwards, so a failed write fails the whole job."""
        self.checkpoint()
        result = fn() if self.primary else None
        self.checkpoint()
        return result

    def close(self) -> None:
        if not self.active or self._stopped:
            return
        import torch.distributed as dist

        self._stopped = True
        if not self.broken and self.store is not None:
            # leave together: no process tears its connections down while another still reads the
            # last collective's data from them (a store round, outside the process group)
            with contextlib.suppress(Exception):
                self.store.set(f"isplit/done/{self.rank}", "1")
                self.store.wait(
                    [f"isplit/done/{r}" for r in range(self.world_size)], dt.timedelta(seconds=60)
                )
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


def images_tensor(images: ImageSet, limit: int | None = None) -> tuple[torch.Tensor, torch.Tensor, list[str]]:
    """:meth:`ImageSet.tensor`, decoded in parts by the processes of the current job and gathered
    (in one process: just that). Same images, same order, same values; unreadable files are merged."""
    current = _CURRENT
    if current is None or current.world_size == 1:
        return images.tensor(limit=limit)
    import torch

    from isplit_export.data import ImageSet, Shard

    sub = ImageSet(images.items[:limit] if limit else images.items, images.preprocessing, images.source)
    parts = list(
        sub.indexed_batches(64, shard=Shard(current.rank, current.world_size, 64, current.check_peers))
    )
    mine = (
        torch.cat([b.x for b in parts]) if parts else None,
        torch.cat([b.labels for b in parts]) if parts else None,
        [n for b in parts for n in b.names],
        torch.cat([b.indices for b in parts]) if parts else None,
        sorted(sub.unreadable),
    )
    gathered = current.gather(mine)
    for *_, unreadable in gathered:
        images.unreadable.update(unreadable)
    full = [g for g in gathered if g[0] is not None]
    if not full:
        raise BadInputError(f"no readable images in {images.source}: pass --data with image files")
    indices = torch.cat([g[3] for g in full if g[3] is not None])
    order = torch.argsort(indices)
    x = torch.cat([g[0] for g in full if g[0] is not None])[order]
    labels = torch.cat([g[1] for g in full if g[1] is not None])[order]
    names = [n for g in full for n in g[2]]
    return x, labels, [names[i] for i in order.tolist()]


def s_origin(status: dict[str, Any]) -> bool:
    """True for a process that failed by itself (not one that stopped because another failed)."""
    return bool(status.get("origin"))


def _status(error: BaseException | None) -> dict[str, Any]:
    if error is None:
        return {"ok": True}
    if isinstance(error, _PeerFailed):
        return {"ok": False, "origin": False, "cause": str(error), "exit_code": EXIT_TECHNICAL}
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    if isinstance(error, IsplitError):
        cause, code = text or type(error).__name__, error.exit_code
    elif isinstance(error, KeyboardInterrupt):
        cause, code = "interrupted", 130
    else:
        cause, code = f"{type(error).__name__}: {text}" if text else type(error).__name__, EXIT_TECHNICAL
    return {"ok": False, "origin": True, "cause": cause, "exit_code": code}


@contextlib.contextmanager
def job(distributed: bool = False, device: str = "cpu") -> Iterator[Job]:
    """This process's :class:`Job`: a process group when distributed, else a single-process stand-in.

    An exception inside the block is reported to the other processes (checkpoint) and comes out as
    :class:`DistributedError` naming the process that failed first and its cause. Nested calls (the
    study ranks inside its own job) share the outer job, which alone handles failures.
    """
    global _CURRENT
    if _CURRENT is not None:
        yield _CURRENT
        return
    if not requested(distributed):
        yield Job(device=device)
        return
    current = _CURRENT = _init(device)
    try:
        yield current
    except DistributedError:
        raise
    except BaseException as err:
        if current.broken:
            raise
        current._raise_flag(err)
        try:
            current.checkpoint(err)  # raises DistributedError for everyone
        except DistributedError as lost:
            if lost.reported:
                raise
            cause = _status(err)["cause"]  # the others are gone: still name this process's own cause
            raise DistributedError(
                f"process {current.rank} of {current.world_size} (rank {current.rank}) failed: {cause}; "
                f"then it {str(lost).split(' ', 4)[-1]}",
                int(_status(err)["exit_code"]),
            ) from err
        raise  # not reached
    finally:
        _CURRENT = None
        current.close()


def _init(device: str) -> Job:
    import torch
    import torch.distributed as dist

    if not dist.is_available():
        raise BadInputError("this PyTorch has no torch.distributed: run without torchrun / --distributed")
    timeout = dt.timedelta(seconds=timeout_s())
    dev = torch.device(device)
    backend = "nccl" if dev.type == "cuda" else "gloo"
    local_rank = _env_int("LOCAL_RANK", 0)
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise BadInputError(f"--device {device}: no CUDA GPU is usable here: use --device cpu")
        dev = torch.device("cuda", local_rank % torch.cuda.device_count())
        torch.cuda.set_device(dev)
    if "WORLD_SIZE" in os.environ and "MASTER_ADDR" in os.environ:
        dist.init_process_group(backend, timeout=timeout, device_id=dev if dev.type == "cuda" else None)
    else:  # --distributed outside torchrun: a world of one process
        dist.init_process_group(
            backend, init_method=f"tcp://127.0.0.1:{_free_port()}", rank=0, world_size=1, timeout=timeout
        )
    control = dist.new_group(backend="gloo", timeout=timeout) if backend == "nccl" else None
    store = dist.distributed_c10d._get_default_store()
    rank, world = dist.get_rank(), dist.get_world_size()
    log.info("distributed: process %d of %d, backend %s, device %s", rank, world, backend, dev)
    return Job(rank, world, backend, str(dev), control, store)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    try:
        return int(raw) if raw else default
    except ValueError as err:
        raise BadInputError(f"{name}={raw!r} is not an integer: launch with torchrun") from err


def merge_order(results: Sequence[Sequence[T]], count: int, world_size: int) -> list[T]:
    """Undo :meth:`Job.share`: per-process result lists (in rank order) -> results by task index."""
    out: dict[int, T] = {}
    for rank, part in enumerate(results):
        for j, value in enumerate(part):
            out[rank + j * world_size] = value
    if sorted(out) != list(range(count)):
        raise DistributedError(f"gathered {len(out)} results for {count} tasks: a process lost some")
    return [out[i] for i in range(count)]
