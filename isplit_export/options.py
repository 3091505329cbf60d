"""The options of every job, as frozen dataclasses: one object travels from the CLI to each stage.

The CLI builds the object from its flags, the Python API takes it (or builds it from keyword
fields), the stages read the fields they need, and the bundle's manifest and report record
:meth:`RankOptions.to_json` so a bundle says how it was made. A new option is a new field here,
never a new keyword argument threaded through the pipeline.

    from isplit_export import ExportOptions, export
    export(ExportOptions(model="resnet50", out="bundle", top=3, target="jetson"))
    export("resnet50", out="bundle", top=3, target="jetson")          # the same
"""

from __future__ import annotations

import dataclasses
import math
import re
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, TypeVar

from isplit_export.errors import BadInputError
from isplit_export.files import jsonable
from isplit_export.ranking.bootstrap import DEFAULT_REPLICATES
from isplit_export.targets import MIN_DLA_FRACTION

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_BATCH = 16
WEIGHT_LAYOUTS = ("shared", "inline")
"""``ExportOptions.weights_layout``: weights in shared ``weights/`` files (:mod:`isplit_export.bundle.weights`) or inline."""

OBJECTIVES = ("cui", "latency", "balanced", "probe")
"""``--objective``: how :mod:`isplit_export.bundle.selection` orders the candidates."""


@dataclass(frozen=True)
class Constraints:
    """Upper bounds a split must meet: head FLOPs share (0-1], boundary KiB, end-to-end ms; None = no bound."""

    max_head_flops: float | None = None
    max_boundary_kib: float | None = None
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        if self.max_head_flops is not None and not 0 < self.max_head_flops <= 1:
            raise BadInputError(
                f"--max-head-flops {self.max_head_flops}: pass the head's share of the FLOPs, in (0, 1] (0.5 = half)"
            )
        for flag, value in (
            ("--max-boundary-kib", self.max_boundary_kib),
            ("--max-latency-ms", self.max_latency_ms),
        ):
            if value is not None and not (math.isfinite(value) and value > 0):
                raise BadInputError(f"{flag} {value}: pass a positive number")

    def active(self) -> list[tuple[str, float]]:
        """The bounds that are set, as (flag, value)."""
        pairs = (
            ("--max-head-flops", self.max_head_flops),
            ("--max-boundary-kib", self.max_boundary_kib),
            ("--max-latency-ms", self.max_latency_ms),
        )
        return [(flag, v) for flag, v in pairs if v is not None]

    def to_json(self) -> dict[str, float | None]:
        return {
            "max_head_flops": self.max_head_flops,
            "max_boundary_kib": self.max_boundary_kib,
            "max_latency_ms": self.max_latency_ms,
        }


_RUN_ONLY = {"manifest": False}
"""Field metadata: where the run happens, not what it computes (kept out of the manifest)."""

T = TypeVar("T", bound="RankOptions")

FINETUNE = ("none", "tail")
"""``--finetune`` values: train only the encoder/decoder, or also the tail's own weights."""

DEFAULT_ENCODING = "int8"
"""Boundary encoding of the code when ``--bottleneck`` is given and ``--boundary`` is not."""

_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 1000**2, "mib": 1024**2}


@dataclass(frozen=True)
class SizeSpec:
    """A parsed ``--bottleneck`` value: ``kind`` ``ratio`` (of the boundary's elements) or ``bytes`` per image."""

    kind: str
    value: float
    text: str

    def elements(self, boundary_elements: int, bytes_per_element: int) -> int:
        """Code elements this spec allows at a boundary of ``boundary_elements`` (may be 0: unreachable)."""
        if self.kind == "ratio":
            return math.floor(self.value * boundary_elements + 1e-9)
        return int(self.value) // bytes_per_element

    def to_json(self) -> dict[str, Any]:
        return {"spec": self.text, "kind": self.kind, "value": self.value}


def parse_size(text: str) -> SizeSpec:
    """Parse ``1/16``, ``0.0625`` (ratios in (0, 1]) or ``64B``, ``2KiB``, ``1MB`` (bytes per image)."""
    t = str(text).strip()
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([KkMm]i?[Bb]|[Bb])", t)
    if m:
        n = float(m.group(1)) * _UNITS[m.group(2).lower()]
        if n < 1 or n != int(n):
            raise BadInputError(
                f"--bottleneck {t}: a size must be a whole number of bytes >= 1 (e.g. 64B, 2KiB)"
            )
        return SizeSpec("bytes", float(int(n)), t)
    try:
        ratio = float(Fraction(t)) if "/" in t else float(t)
    except (ValueError, ZeroDivisionError) as err:
        raise BadInputError(
            f"--bottleneck {t!r} is neither a ratio (1/16, 0.0625) nor a size (64B, 2KiB): pass one of those"
        ) from err
    if not 0.0 < ratio <= 1.0 or not math.isfinite(ratio):
        raise BadInputError(
            f"--bottleneck {t}: a ratio must be in (0, 1] (e.g. 1/16); for a fixed size add a unit (e.g. {t}B)"
        )
    return SizeSpec("ratio", ratio, t)


@dataclass(frozen=True)
class BottleneckOptions:
    """How the bottleneck is sized and trained (``ExportOptions.bottleneck``, ``StudyOptions.bottleneck``).

    ``size``: ratio or bytes per image (:func:`parse_size`); ``finetune``: ``none`` or ``tail``;
    ``train_steps`` / ``train_batch``: the budget (0 steps keeps the probe's linear code,
    :mod:`isplit_export.bottleneck.pca`); ``holdout``: the fraction of images held out from
    training (measured on, never trained on). Training runs all ``train_steps`` under a cosine learning-rate
    decay (no early stopping) and keeps the checkpoint best on the validation slice (``validation``).
    """

    size: str = "1/16"
    finetune: str = "none"
    train_steps: int = 256
    train_batch: int = 8
    temperature: float = 4.0
    mse_weight: float = 1.0
    lr: float = 2e-3
    holdout: float = 0.25
    validation: float = 0.2
    """Fraction of the *train* images kept out of the gradient steps to choose the checkpoint on."""

    def __post_init__(self) -> None:
        parse_size(self.size)
        if self.finetune not in FINETUNE:
            raise BadInputError(f"--finetune {self.finetune!r}: choose {' or '.join(FINETUNE)}")
        if self.train_steps < 0 or self.train_batch < 1:
            raise BadInputError(
                f"--train-steps {self.train_steps} / --train-batch {self.train_batch}: pass 0 or more steps "
                "(0: the probe's untrained code) and a positive batch"
            )
        if not 0.0 < self.validation < 1.0:
            raise BadInputError(
                f"validation fraction {self.validation}: pass a fraction strictly between 0 and 1"
            )
        if not 0.0 < self.holdout < 1.0:
            raise BadInputError(f"held-out fraction {self.holdout}: pass a fraction strictly between 0 and 1")
        if self.temperature <= 0 or self.lr <= 0 or self.mse_weight < 0:
            raise BadInputError("bottleneck temperature and lr must be positive, mse_weight >= 0")

    @property
    def spec(self) -> SizeSpec:
        return parse_size(self.size)


def as_bottleneck(value: BottleneckOptions | str | None) -> BottleneckOptions | None:
    """Accept a :class:`BottleneckOptions`, a size spec string (``"1/16"``) or None."""
    if value is None or isinstance(value, BottleneckOptions):
        return value
    if isinstance(value, str):
        return BottleneckOptions(size=value)
    raise BadInputError(
        f"bottleneck must be a size spec like '1/16' or BottleneckOptions, got {type(value).__name__}"
    )


@dataclass(frozen=True)
class RankOptions:
    """What to rank and how: the model, the images, the Grad-CAM target and the passes.

    ``classes`` restricts the CUI to a class subset (ImageFolder folder names/indices, or model
    class names/indices matched against the predictions for unlabelled data). ``top`` is how many
    ranked candidates to report. ``out`` (for :func:`isplit_export.rank`) receives
    ``ranking.json``, ``cui.png`` and ``cde.png``.
    """

    model: str = DEFAULT_MODEL
    data: Path | None = None
    classes: tuple[str, ...] | None = None
    weights: str = "default"
    images: int | None = None
    score: str = "top"
    top: int | None = None
    input_size: int | None = None
    seed: int = 0
    bootstrap: int = DEFAULT_REPLICATES
    """Poisson-bootstrap replicates for the CUI's CIs and rank stability (0: off); weights seeded by ``seed``."""
    batch_size: int = field(default=DEFAULT_BATCH, metadata=_RUN_ONLY)
    device: str = field(default="cpu", metadata=_RUN_ONLY)
    progress: bool = field(default=False, metadata=_RUN_ONLY)
    out: Path | None = field(default=None, metadata=_RUN_ONLY)
    workers: int | None = field(default=None, metadata=_RUN_ONLY)
    """DataLoader decoding processes (None: :func:`isplit_export.data.default_workers`; 0: decode inline)."""
    distributed: bool = field(default=False, metadata=_RUN_ONLY)
    """Run as a torch.distributed job (implied under torchrun with WORLD_SIZE > 1)."""
    force: bool = field(default=False, metadata=_RUN_ONLY)
    """Replace an existing ``out`` (only an empty folder, or an output of this tool: outdir.check_out)."""
    bottleneck: BottleneckOptions | None = None
    """A link budget (``--bottleneck 64B`` or ``1/16``): the ranking adds the probe
    (:mod:`isplit_export.bottleneck.probe`) at that budget; the export and the study train a bottleneck at it."""
    probe_cuts: str = "candidates"
    """Where the probe runs: ``candidates`` (the CUI's local maxima) or ``all`` cuts."""

    def __post_init__(self) -> None:
        # Normalise the types the CLI and callers hand in, so equal options compare (and hash) equal.
        if self.data is not None and not isinstance(self.data, Path):
            object.__setattr__(self, "data", Path(self.data))
        if self.out is not None and not isinstance(self.out, Path):
            object.__setattr__(self, "out", Path(self.out))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes) or None)
        self.validate()

    def validate(self) -> None:
        """Refuse values no stage can use, with one line naming the flag (:class:`BadInputError`)."""
        if self.top is not None and self.top < 1:
            raise BadInputError(f"--top {self.top}: pass a positive number of splits")
        if self.batch_size < 1:
            raise BadInputError(f"--batch-size {self.batch_size}: pass a positive batch size")
        if self.images is not None and self.images < 1:
            raise BadInputError(f"--images {self.images}: pass a positive number of images")
        if self.input_size is not None and self.input_size < 1:
            raise BadInputError(f"--input-size {self.input_size}: pass a positive size in pixels")
        if self.workers is not None and self.workers < 0:
            raise BadInputError(f"--workers {self.workers}: pass 0 (decode in the main process) or more")
        if self.bootstrap < 0:
            raise BadInputError(
                f"--bootstrap {self.bootstrap}: pass 0 (off) or a number of replicates, e.g. 200"
            )
        if self.bottleneck is not None:
            object.__setattr__(self, "bottleneck", as_bottleneck(self.bottleneck))
        if self.probe_cuts not in CUT_SETS:
            raise BadInputError(f"--probe-cuts {self.probe_cuts!r}: choose {' or '.join(CUT_SETS)}")

    def to_json(self) -> dict[str, Any]:
        """The fields that decide what is computed (not where or how fast), JSON-ready."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.metadata.get("manifest", True):
                out[f.name] = jsonable(getattr(self, f.name))
        return out

    def replace(self: T, **changes: Any) -> T:
        """A copy with ``changes`` applied (validated again)."""
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ExportOptions(RankOptions):
    """What the main job exports: the ranked splits for a target, verified, into the bundle ``out``.

    ``boundary`` is the boundary encoding (``fp32``, ``fp16``, ``int8``; default: the target's),
    ``precision`` the TensorRT engine precision of the build plan (default: the target's). The first
    ``verify_images`` images (held in memory) calibrate the encodings and INT8 models and are the
    verification set; ``golden_images`` of them are stored per split for ``isplit-export verify``.
    ``weights_layout`` is ``shared`` (every weight stored once per precision in ``weights/``, see
    :mod:`isplit_export.bundle.weights`) or ``inline`` (self-contained ONNX files in the split folders).
    ``summary_json`` receives the CI summary (``isplit.summary/1``, see ``docs/ci.md``).
    """

    top: int | None = 3
    target: str = "onnx"
    boundary: str | None = None
    precision: str | None = None
    golden_images: int = 4
    verify_images: int = 256
    link: str | None = None
    objective: str = "cui"
    constraints: Constraints = field(default_factory=Constraints)
    server: str = "x86-tensorrt"
    weights_layout: str = "shared"
    min_dla_fraction: float = MIN_DLA_FRACTION
    """Plan a head on the DLA only when at least this share of its layers runs there (:mod:`isplit_export.targets.dla`)."""
    latency_runs: int = field(default=30, metadata=_RUN_ONLY)
    force: bool = field(default=False, metadata=_RUN_ONLY)
    summary_json: Path | None = field(default=None, metadata=_RUN_ONLY)
    bottleneck: BottleneckOptions | None = None
    """A learned bottleneck at each split (``--bottleneck 1/16``): a :class:`BottleneckOptions` or a size spec."""
    triton: bool | None = None
    """Write ``OUT/triton/`` (a Triton model repository of the tails): None = when the tail runs on a server."""

    def validate(self) -> None:
        super().validate()
        if isinstance(self.constraints, dict):  # from the API or a manifest's options block
            object.__setattr__(self, "constraints", Constraints(**self.constraints))
        if self.golden_images < 1 or self.verify_images < 1:
            raise BadInputError(
                f"--golden {self.golden_images} / --verify-images {self.verify_images}: pass positive numbers of images"
            )
        if self.latency_runs < 1:
            raise BadInputError(f"--latency-runs {self.latency_runs}: pass a positive number of runs")
        if self.objective not in OBJECTIVES:
            raise BadInputError(f"unknown --objective {self.objective!r}: choose {', '.join(OBJECTIVES)}")
        if self.objective == "probe" and self.bottleneck is None:
            raise BadInputError(
                "--objective probe scores the splits at a link budget: add --bottleneck SIZE (e.g. 64B)"
            )
        if self.link is not None:
            from isplit_export.targets.cost import parse_link  # lazy: keeps `import options` free of onnx

            parse_link(self.link)
        if self.link is None and (
            self.objective not in ("cui", "probe") or self.constraints.max_latency_ms is not None
        ):
            what = (
                f"--objective {self.objective}"
                if self.objective not in ("cui", "probe")
                else "--max-latency-ms"
            )
            raise BadInputError(f"{what} needs a link: pass --link wifi|lte|5g|ethernet|<Mbit/s>[,<RTT ms>]")
        if not 0.0 <= self.min_dla_fraction <= 1.0:
            raise BadInputError(f"--min-dla-fraction {self.min_dla_fraction}: pass a share between 0 and 1")
        if self.weights_layout not in WEIGHT_LAYOUTS:
            raise BadInputError(
                f"--weights-layout {self.weights_layout!r}: choose {' or '.join(WEIGHT_LAYOUTS)}"
            )
        if self.summary_json is not None and not isinstance(self.summary_json, Path):
            object.__setattr__(self, "summary_json", Path(self.summary_json))
        from isplit_export.targets.profiles import load_target

        load_target(self.server)  # --server nosuch: refused before any work, not after the ranking


DEFAULT_WRITE_RESULT = True
"""``verify`` / ``plan`` write verify.json / plan.json (into the bundle, or ``--report PATH``) unless ``--no-write``."""


PROTOCOLS = ("grpc", "http")
"""``RunOptions.protocol``: the Open Inference Protocol over gRPC, or JSON over HTTP/REST."""
RUN_BACKENDS = ("auto", "onnxruntime", "tensorrt")
"""``RunOptions.backend`` (the head's runtime); ``auto``: TensorRT when its head engine was built here, else onnxruntime."""
LOOPBACK = "127.0.0.1"


def parse_address(text: str, flag: str = "--server") -> tuple[str, int]:
    """``HOST:PORT`` -> (host, port); one :class:`BadInputError` line naming the flag otherwise."""
    host, sep, port = str(text).strip().rpartition(":")
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise BadInputError(f"{flag} {text!r}: pass HOST:PORT, e.g. {LOOPBACK}:8001")
    return host.strip("[]"), int(port)


def _check_port(port: int, flag: str) -> None:
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise BadInputError(f"{flag} {port}: pass a TCP port in 1..65535")


@dataclass(frozen=True)
class ServeOptions:
    """``isplit-export serve``: the bundle's tails over gRPC (``port``) and HTTP (``http_port``) with MLServer.

    ``split`` None serves every split; ``threads`` are the onnxruntime intra-op threads of each tail
    (0: onnxruntime's default, all cores); ``expect_sha256`` pins the manifest (checked by the contract).
    """

    bundle: Path = Path("bundle")
    split: int | None = None
    host: str = LOOPBACK
    port: int = 8001
    http_port: int | None = None
    """HTTP/REST port (None: ``port + 1``)."""
    threads: int = 0
    expect_sha256: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "bundle", Path(self.bundle))
        if self.http_port is None:
            object.__setattr__(self, "http_port", self.port + 1)
        _check_port(self.port, "--port")
        _check_port(int(self.http_port or 0), "--http-port")
        if self.http_port == self.port:
            raise BadInputError(f"--http-port {self.http_port} equals --port: pass two different ports")
        if self.split is not None and self.split < 1:
            raise BadInputError(f"--split {self.split}: pass a split number 1..N (as in splits/NN-*)")
        if self.threads < 0:
            raise BadInputError(f"--threads {self.threads}: pass 0 (onnxruntime's default) or more")
        if not self.host:
            raise BadInputError(f"--host {self.host!r}: pass an address to listen on, e.g. {LOOPBACK}")


@dataclass(frozen=True)
class RunOptions:
    """``isplit-export run``: the head here, the boundary to a server at ``server``, every request measured.

    Without ``data`` the split's golden inputs are sent. ``requests`` sends that many (cycling over the
    images), ``duration_s`` sends for that long; neither: each image once. ``concurrency`` requests are
    kept in flight. A failed request (error, ``timeout_ms``, wrong answer) is retried ``retries`` times
    after ``backoff_ms``, doubling, at most :data:`MAX_BACKOFF_MS`. The server must be ready within
    ``wait_s``. ``out``: ``run.json`` (None: ``BUNDLE/run.json``); ``fail_after``: the circuit breaker (docs/serving.md).
    ``expect_sha256`` pins the manifest.
    """

    bundle: Path = Path("bundle")
    server: str = f"{LOOPBACK}:8001"
    split: int = 1
    data: Path | None = None
    images: int | None = None
    requests: int | None = None
    duration_s: float | None = None
    concurrency: int = 1
    protocol: str = "grpc"
    timeout_ms: float = 1000.0
    retries: int = 6
    backoff_ms: float = 100.0
    wait_s: float = 10.0
    backend: str = "auto"
    threads: int = 1
    """onnxruntime intra-op threads of the local head (and of the local reference runs)."""
    out: Path | None = None
    expect_sha256: str | None = None
    no_write: bool = False
    fail_after: int = 5
    trust_engines: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "bundle", Path(self.bundle))
        for name in ("data", "out"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, Path):
                object.__setattr__(self, name, Path(value))
        parse_address(self.server)
        checks = (
            (self.split >= 1, f"--split {self.split}: pass a split number 1..N (as in splits/NN-*)"),
            (self.images is None or self.images >= 1, f"--images {self.images}: pass a positive number"),
            (
                self.requests is None or self.requests >= 1,
                f"--requests {self.requests}: pass a positive number",
            ),
            (
                self.duration_s is None or 0 < self.duration_s <= 86400.0,
                f"--duration {self.duration_s}: pass seconds in (0, 86400]",
            ),
            (
                self.requests is None or self.duration_s is None,
                "--requests and --duration exclude each other: pass one",
            ),
            (
                1 <= self.concurrency <= 256,
                f"--concurrency {self.concurrency}: pass 1..256 requests in flight",
            ),
            (self.protocol in PROTOCOLS, f"--protocol {self.protocol!r}: choose {' or '.join(PROTOCOLS)}"),
            (
                0 < self.timeout_ms <= 600_000,
                f"--timeout-ms {self.timeout_ms}: pass milliseconds in (0, 600000]",
            ),
            (0 <= self.retries <= 20, f"--retries {self.retries}: pass 0..20"),
            (
                0 <= self.backoff_ms <= MAX_BACKOFF_MS,
                f"--backoff-ms {self.backoff_ms}: pass 0..{MAX_BACKOFF_MS:g}",
            ),
            (0 <= self.wait_s <= 600, f"--wait {self.wait_s}: pass 0..600 seconds"),
            (self.backend in RUN_BACKENDS, f"--backend {self.backend!r}: choose {' or '.join(RUN_BACKENDS)}"),
            (self.threads >= 0, f"--threads {self.threads}: pass 0 (onnxruntime's default) or more"),
            (0 <= self.fail_after <= 1_000_000, f"--fail-after {self.fail_after}: pass 0 (never) or a count"),
            (
                self.out is None or not self.no_write,
                "--out and --no-write contradict each other: pass one of them",
            ),
        )
        for ok, message in checks:
            if not ok:
                raise BadInputError(message)


MAX_BACKOFF_MS = 5000.0
"""Cap of one retry's wait: a retry budget stays bounded in time whatever ``retries`` is."""

CUT_SETS = ("candidates", "all")
"""``--cuts`` (study) and ``probe_cuts`` (ranking): the CUI's local maxima, or every valid cut."""


@dataclass(frozen=True)
class StudyOptions(RankOptions):
    """What the study measures: ``cuts`` (``candidates`` or ``all``), the ``bottleneck`` at each, trained
    ``repeats`` times with different seeds, the code's ``boundary`` encoding, at most ``max_images`` images
    in memory, ``ci_reps`` bootstrap replicates for the correlations' CIs (``bootstrap``, inherited, is the
    ranking's Poisson bootstrap of the CUI)."""

    cuts: str = "candidates"
    boundary: str = "int8"
    max_images: int = 2000
    ci_reps: int = 1000
    repeats: int = 3
    """Bottlenecks trained per cut with different seeds: the spread between them is the training noise."""

    def validate(self) -> None:
        object.__setattr__(self, "bottleneck", as_bottleneck(self.bottleneck) or BottleneckOptions())
        super().validate()
        if self.cuts not in CUT_SETS:
            raise BadInputError(f"--cuts {self.cuts!r}: choose {' or '.join(CUT_SETS)}")
        if self.boundary not in ("fp32", "fp16", "int8"):
            raise BadInputError(f"--boundary {self.boundary!r}: choose fp32, fp16 or int8")
        if self.max_images < 1 or self.ci_reps < 1:
            raise BadInputError("max_images and ci_reps must be positive")
        if self.repeats < 1:
            raise BadInputError(
                f"--repeats {self.repeats}: pass at least 1 training seed per cut (3 or more to see the noise)"
            )

    @property
    def bn(self) -> BottleneckOptions:
        assert self.bottleneck is not None  # set by validate()
        return self.bottleneck


def make_options(cls: type[T], options: T | str | None, fields: dict[str, Any]) -> T:
    """``options`` (an options object, a model name or None) with keyword ``fields`` applied.

    Lets the API be called as ``export(opts)``, ``export("resnet50", out=...)`` or
    ``export(opts, top=5)``; an unknown field is a :class:`BadInputError` naming it.
    """
    if isinstance(options, str):
        fields = {"model": options, **fields}
        options = None
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
        raise BadInputError(
            f"unknown option(s) {', '.join(unknown)} for {cls.__name__}: valid are {', '.join(sorted(known))}"
        )
    if options is None:
        return cls(**fields)
    if not isinstance(options, cls):
        raise BadInputError(f"expected {cls.__name__}, got {type(options).__name__}")
    return dataclasses.replace(options, **fields) if fields else options
