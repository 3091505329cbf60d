"""The CLI's shared options and helpers: the typer option types its commands reuse, and the helpers that turn
flags into option dataclasses (the command modules ``cli_*`` import them). Torch-free."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import typer

from isplit_export.cli_names import check_model
from isplit_export.options import Constraints, ExportOptions, Objective, RankOptions, Score
from isplit_export.options_bottleneck import BottleneckOptions, Finetune
from isplit_export.target_names import target_names

if TYPE_CHECKING:
    TargetName = str
else:  # the profile names of isplit_export/profiles/*.json and their aliases: --help lists them
    TargetName = Literal[tuple(target_names())]

FLAG = ""
"""The metavar of an on/off flag: none (typer would print ``<bool>``)."""


RANK, EXPORT, BOTTLENECK = RankOptions(), ExportOptions(), BottleneckOptions()
"""The options' defaults, written once, in their dataclasses: a flag's default is the field's
(``weights: WeightsOpt = RANK.weights``), so ``--help`` shows each as ``[default: ...]``."""


def given(**flags: Any) -> dict[str, Any]:
    """The flags that were given: None means "the option's default", written once, in its dataclass."""
    return {k: v for k, v in flags.items() if v is not None}


ExpectShaOpt = Annotated[
    str | None,
    typer.Option(
        "--expect-sha256",
        help="the manifest's sha256 CI published (summary manifest_sha256): proves provenance",
    ),
]
"""``--expect-sha256``, on every command that reads a bundle (verify, plan, build-engines, serve, run); the
pin itself is one check of the contract (:func:`isplit_export.contract.check_expected_sha256`)."""
SplitOpt = Annotated[
    int | None,
    typer.Option("--split", help="only split N (1-based, as in splits/NN-*)", show_default="every split"),
]
"""``--split N`` of verify, build-engines and serve: a split number; left out, every split."""
ModelArg = Annotated[
    str,
    typer.Argument(
        help="efficientnet_lite0 (offline default), a torchvision model name, or package.module:factory",
        callback=check_model,
    ),
]
DataOpt = Annotated[
    Path | None,
    typer.Option("--data", help="folder of images or of class sub-folders", show_default="skimage photos"),
]
ClassesOpt = Annotated[
    str | None, typer.Option("--classes", help="comma-separated class names or indices: class-specific CUI")
]
ClassMapOpt = Annotated[
    Path | None,
    typer.Option(
        "--class-map",
        help="JSON {folder: class index}: the model class of each class folder of --data (folders not named after its classes)",
    ),
]
WeightsOpt = Annotated[
    str | None,
    typer.Option(
        "--weights",
        help="'default' (pretrained), 'none' (random, seeded) or a state-dict path",
    ),
]
ImagesOpt = Annotated[int | None, typer.Option("--images", help="use at most N images")]
ScoreOpt = Annotated[
    Score | None,
    typer.Option(
        "--score",
        help="Grad-CAM target: 'top' predicted class or 'label'",
    ),
]
TopOpt = Annotated[int, typer.Option("--top", help="number of ranked splits to export (rank: to report)")]
SizeOpt = Annotated[int | None, typer.Option("--input-size", help="override the model's input crop size")]
BatchOpt = Annotated[
    int | None,
    typer.Option(
        "--batch-size",
        help="images per batch; the ranking's backward pass takes at most 1 GiB of them at a time",
    ),
]
DeviceOpt = Annotated[
    str | None,
    typer.Option(
        "--device",
        help="torch device for the ranking passes (cpu, cuda)",
    ),
]
BootstrapOpt = Annotated[
    int | None,
    typer.Option(
        "--bootstrap",
        help="Poisson-bootstrap replicates for CUI CIs and rank stability (0: off)",
    ),
]
VerboseOpt = Annotated[bool, typer.Option("--verbose", "-v", help="log progress details", metavar=FLAG)]
QuietOpt = Annotated[
    bool,
    typer.Option(
        "--quiet",
        "-q",
        help="no progress on stderr (a bar on a terminal, else one line per stage)",
        metavar=FLAG,
    ),
]
TrustEnginesOpt = Annotated[
    bool,
    typer.Option(
        "--trust-engines",
        help="deserialise TensorRT engines that build-engines did not build on this "
        "machine (engines shipped on purpose; an engine is code)",
        metavar=FLAG,
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", help="image decoding processes (0: inline)", show_default="min(4, CPUs - 1)"),
]
DistributedOpt = Annotated[
    bool,
    typer.Option(
        "--distributed",
        help="torch.distributed job (implied under torchrun with several processes)",
        metavar=FLAG,
    ),
]
BottleneckOpt = Annotated[
    str | None,
    typer.Option(
        "--bottleneck", help="learned bottleneck at each cut: ratio of the boundary (1/16) or bytes (2KiB)"
    ),
]
# Left out, the bottleneck flags take BottleneckOptions' defaults.
FinetuneOpt = Annotated[
    Finetune | None,
    typer.Option(
        "--finetune",
        help="bottleneck training: 'none' (frozen model) or 'tail' (the tail trained too)",
    ),
]
TrainStepsOpt = Annotated[
    int | None,
    typer.Option(
        "--train-steps",
        help="bottleneck training steps (cosine learning-rate decay over them; 0: the probe's code)",
    ),
]
TrainBatchOpt = Annotated[
    int | None,
    typer.Option(
        "--train-batch",
        help="images per bottleneck training step",
    ),
]


def bottleneck_from_flags(
    size: str | None, finetune: str | None, steps: int | None, batch: int | None
) -> BottleneckOptions | None:
    """The BottleneckOptions of the flags (None without --bottleneck; --finetune etc. need it)."""
    from isplit_export.errors import BadInputError

    training = given(finetune=finetune, train_steps=steps, train_batch=batch)
    if size is None:
        if BottleneckOptions(**training) != BottleneckOptions():  # bad values first, then the missing flag
            raise BadInputError(
                "--finetune/--train-steps/--train-batch configure a bottleneck: add --bottleneck 1/16"
            )
        return None
    return BottleneckOptions(size=size, **training)


ObjectiveOpt = Annotated[
    Objective | None,
    typer.Option(
        "--objective",
        help="cui (I-Split's ranking), latency, balanced (Pareto front of CUI vs latency), "
        "or probe (the probe's score at --bottleneck)",
    ),
]
HeadFlopsOpt = Annotated[
    float | None,
    typer.Option("--max-head-flops", help="constraint: the head's share of the FLOPs, in (0, 1]"),
]
BoundaryKibOpt = Annotated[
    float | None, typer.Option("--max-boundary-kib", help="constraint: boundary KiB per image")
]
LatencyOpt = Annotated[
    float | None, typer.Option("--max-latency-ms", help="constraint: end-to-end ms per image")
]

GridTargetOpt = Annotated[
    TargetName | None,
    typer.Option("--target", help="with --link: the device running the head", show_default="the export's"),
]
GridServerOpt = Annotated[
    TargetName | None,
    typer.Option(
        "--server",
        help="with --link: target profile of the server running the tail",
        show_default="the export's",
    ),
]


def constraints_from_flags(head: float | None, kib: float | None, ms: float | None) -> Constraints:
    return Constraints(max_head_flops=head, max_boundary_kib=kib, max_latency_ms=ms)


def split_classes(classes: str | None) -> tuple[str, ...] | None:
    return tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None


def renamed(value: Any, old_value: Any, old: str, new: str) -> Any:
    """The value of flag ``new``, or of its deprecated spelling ``old`` (hidden in --help) with one warning
    line; both given is bad input."""
    from isplit_export.errors import BadInputError

    if old_value is None:
        return value
    if value is not None:
        raise BadInputError(f"{old} is the old spelling of {new}: pass {new} only")
    typer.echo(f"warning: {old} is deprecated: use {new}", err=True)
    return old_value


def setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s: %(message)s", force=True
    )
