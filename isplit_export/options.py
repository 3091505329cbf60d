"""The options of the jobs (rank, export, study), as frozen dataclasses: one object travels from the CLI to each stage.

The bottleneck's options are in :mod:`isplit_export.options_bottleneck`, those of ``serve`` and ``run`` in
:mod:`isplit_export.options_serving`.

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
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args

from isplit_export.backend_names import Runtime
from isplit_export.errors import BadInputError, first_line
from isplit_export.files import jsonable
from isplit_export.links import parse_link
from isplit_export.options_bottleneck import BottleneckOptions, Ladder, as_bottleneck, parse_ladder
from isplit_export.target_names import profile_name

DEFAULT_MODEL = "efficientnet_lite0"
DEFAULT_BATCH = 16
DEFAULT_REPLICATES = 200
"""Bootstrap replicates B by default (``--bootstrap``; 0 turns the bootstrap off)."""
MIN_DLA_FRACTION = 0.9
"""Default of ``--min-dla-fraction``: a head stays on the DLA only when this share of its layers runs there."""
DEFAULT_TOP = 3
"""``--top`` of export and rank: the ranked splits exported, or reported."""
# The choice options: each a Literal (typer lists its values in --help and refuses others while parsing,
# before any import of torch) and the tuple of its values, which the validation below reads.
WeightsLayout = Literal["shared", "inline"]
WEIGHT_LAYOUTS: tuple[str, ...] = get_args(WeightsLayout)
"""``ExportOptions.weights_layout``: weights in shared ``weights/`` files (:mod:`isplit_export.bundle.weights`) or inline."""

Objective = Literal["cui", "latency", "balanced", "probe"]
OBJECTIVES: tuple[str, ...] = get_args(Objective)
"""``--objective``: how :mod:`isplit_export.bundle.selection` orders the candidates."""

Encoding = Literal["fp32", "fp16", "int8"]
"""``--boundary`` (the boundary's encoding) and ``--precision`` (a TensorRT engine's)."""
Score = Literal["top", "label"]
"""``--score``: Grad-CAM's target, the top predicted class or the image's label."""
VerifyBackend = Runtime
"""``verify --backend``: the names of :data:`isplit_export.verification.backends.BACKENDS`."""
CutSet = Literal["candidates", "all"]
CUT_SETS: tuple[str, ...] = get_args(CutSet)
"""``--cuts`` (study) and ``probe_cuts`` (ranking): the CUI's local maxima, or every valid cut."""


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


MAX_CLASS_MAP_BYTES = 1 << 20
"""``--class-map FILE``: the largest file read (bytes)."""
MAX_CLASS_MAP_ENTRIES = 10_000
"""``--class-map FILE``: the most folders it may map."""


@dataclass(frozen=True)
class ClassMap:
    """``--class-map FILE``: which model class each class folder of ``--data`` holds.

    The file is a JSON object ``{"folder name": class index}`` (at most :data:`MAX_CLASS_MAP_BYTES`
    bytes, :data:`MAX_CLASS_MAP_ENTRIES` entries, indices non-negative integers). Whether every folder
    is mapped and every index is a class of the model is checked against the data and the model, before
    any model work (:mod:`isplit_export.class_labels`). ``entries`` is sorted, so equal maps compare equal.
    """

    path: Path
    entries: tuple[tuple[str, int], ...]

    @classmethod
    def read(cls, path: Path | str) -> ClassMap:
        """Read and check ``path``; a bad file is one line naming the fix (:class:`BadInputError`)."""
        path = Path(path)
        fix = 'write a JSON object {"folder": class index, ...}'
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_CLASS_MAP_BYTES + 1)
        except OSError as err:
            raise BadInputError(f"--class-map {path}: cannot read it ({err.strerror}): {fix}") from None
        if len(data) > MAX_CLASS_MAP_BYTES:
            raise BadInputError(
                f"--class-map {path} is over {MAX_CLASS_MAP_BYTES} bytes: map only the class folders of --data"
            )
        try:
            obj = json.loads(data.decode("utf-8"), object_pairs_hook=_unique_pairs)
        except (UnicodeDecodeError, ValueError) as err:
            raise BadInputError(f"--class-map {path} is not JSON ({first_line(err, 120)}): {fix}") from None
        if not isinstance(obj, dict) or not obj:
            raise BadInputError(f"--class-map {path} is not a non-empty JSON object: {fix}")
        if len(obj) > MAX_CLASS_MAP_ENTRIES:
            raise BadInputError(
                f"--class-map {path} has {len(obj)} entries, over {MAX_CLASS_MAP_ENTRIES}: map only the folders of --data"
            )
        for folder, index in obj.items():
            if isinstance(index, bool) or not isinstance(index, int) or index < 0:
                raise BadInputError(
                    f"--class-map {path}: folder {folder!r} maps to {index!r}, not a class index: use an integer >= 0"
                )
        return cls(path, tuple(sorted(obj.items())))

    def mapping(self) -> dict[str, int]:
        """Folder name -> model class index."""
        return dict(self.entries)


def _unique_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise ValueError(f"folder {key!r} is mapped twice")
        out[key] = value
    return out


_RUN_ONLY = {"manifest": False}
"""Field metadata: where the run happens, not what it computes (kept out of the manifest)."""

T = TypeVar("T", bound="RankOptions")


@dataclass(frozen=True)
class RankOptions:
    """What to rank and how: the model, the images, the Grad-CAM target and the passes.

    ``classes`` restricts the CUI to a class subset (ImageFolder folder names/indices, or model
    class names/indices matched against the predictions for unlabelled data); ``class_map`` says which
    model class each class folder holds, where the folder names are not the model's class names
    (:mod:`isplit_export.class_labels`). ``top`` is how many
    ranked candidates to report. ``out`` (for :func:`isplit_export.rank`) receives
    ``ranking.json``, ``cui.png`` and ``cde.png``.
    """

    model: str = DEFAULT_MODEL
    data: Path | None = None
    classes: tuple[str, ...] | None = None
    class_map: ClassMap | None = None
    weights: str = "default"
    images: int | None = None
    score: Score = "top"
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
    probe_cuts: CutSet = "candidates"
    """Where the probe runs: ``candidates`` (the CUI's local maxima) or ``all`` cuts."""
    budgets: str | None = None
    """A ladder of budgets (``--budgets 16B..1KiB``, :func:`~isplit_export.options_bottleneck.parse_ladder`): the
    ranking adds the probe's rate-accuracy grid (:mod:`isplit_export.bottleneck.rate_accuracy`) at ``probe_cuts``."""

    def __post_init__(self) -> None:
        # Normalise the types the CLI and callers hand in, so equal options compare (and hash) equal.
        if self.data is not None and not isinstance(self.data, Path):
            object.__setattr__(self, "data", Path(self.data))
        if self.out is not None and not isinstance(self.out, Path):
            object.__setattr__(self, "out", Path(self.out))
        if self.classes is not None:
            object.__setattr__(self, "classes", tuple(self.classes) or None)
        if isinstance(self.class_map, dict):  # from a manifest's options block
            entries = tuple((str(k), int(v)) for k, v in self.class_map["entries"])
            object.__setattr__(self, "class_map", ClassMap(Path(self.class_map["path"]), entries))
        elif self.class_map is not None and not isinstance(self.class_map, ClassMap):
            object.__setattr__(self, "class_map", ClassMap.read(self.class_map))
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
        if self.budgets is not None:
            parse_ladder(self.budgets)

    @property
    def ladder(self) -> Ladder | None:
        """The parsed ``budgets`` (None without)."""
        return None if self.budgets is None else parse_ladder(self.budgets)

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

    top: int | None = DEFAULT_TOP
    target: str = "onnx"
    boundary: str | None = None
    precision: str | None = None
    golden_images: int = 4
    verify_images: int = 256
    link: str | None = None
    min_accuracy: str | None = None
    """With ``budgets`` and ``link``: export the fastest (cut, budget) of the grid reaching this score (``0.9``) or
    share of the full model's (``99%``); ``constraints.max_latency_ms`` instead exports the most accurate pair
    within it (checked by :func:`~isplit_export.options_grid.export_pair` when the export starts)."""
    objective: Objective = "cui"
    constraints: Constraints = field(default_factory=Constraints)
    server: str = "x86-tensorrt"
    weights_layout: WeightsLayout = "shared"
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
        # --target / --server nosuch: refused before any work, by name (the job loads the profiles)
        profile_name(self.target)
        profile_name(self.server)


DEFAULT_WRITE_RESULT = True
"""``verify`` / ``plan`` write verify.json / plan.json (into the bundle, or ``--out PATH``) unless ``--no-write``."""


@dataclass(frozen=True)
class StudyOptions(RankOptions):
    """What the study measures: ``cuts`` (``candidates`` or ``all``), the ``bottleneck`` at each, trained
    ``repeats`` times with different seeds, the code's ``boundary`` encoding, at most ``max_images`` images
    in memory, ``ci_reps`` bootstrap replicates for the correlations' CIs (``bootstrap``, inherited, is the
    ranking's Poisson bootstrap of the CUI)."""

    cuts: CutSet = "candidates"
    boundary: Encoding = "int8"
    max_images: int = 2000
    ci_reps: int = 1000
    repeats: int = 3
    """Bottlenecks trained per cut with different seeds: the spread between them is the training noise."""
    link: str | None = None
    """With ``budgets`` (the grid study): price every (cut, budget) on this link (:mod:`isplit_export.links`)."""
    target: str | None = None
    """With ``budgets`` and ``link``: the profile of the device running the head (None: the export's default)."""
    server: str | None = None
    """With ``budgets`` and ``link``: the profile of the server running the tail (None: the export's default)."""
    max_latency_ms: float | None = None
    """With ``budgets`` and ``link``: the probe chooses the most accurate point within this latency."""
    grid_sample: int | None = None
    """With ``budgets`` and ``link``: train the Pareto front, the chosen point and this many other points drawn
    at random (seeded); None trains every point of the grid."""

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
        self._validate_grid()

    def _validate_grid(self) -> None:
        """The grid study's flags: each needs ``--budgets``; a target and a sample need ``--link``."""
        grid = {
            "--link": self.link,
            "--target": self.target,
            "--server": self.server,
            "--max-latency-ms": self.max_latency_ms,
            "--sample": self.grid_sample,
        }
        given = [k for k, v in grid.items() if v is not None]
        if self.budgets is None and given:
            raise BadInputError(
                f"{', '.join(given)} {'needs' if len(given) == 1 else 'need'} the grid study: "
                "add --budgets (e.g. 16B..1KiB)"
            )
        if self.link is not None:
            parse_link(self.link)
            for name in (self.target, self.server):
                if name is not None:
                    profile_name(name)
        elif given:
            raise BadInputError(
                f"{', '.join(given)} {'prices' if len(given) == 1 else 'price'} the grid: "
                "add --link wifi|lte|5g|ethernet|<Mbit/s>[,<RTT ms>]"
            )
        if self.max_latency_ms is not None and not (
            math.isfinite(self.max_latency_ms) and self.max_latency_ms > 0
        ):
            raise BadInputError(f"--max-latency-ms {self.max_latency_ms}: pass a positive number")
        if self.grid_sample is not None and self.grid_sample < 0:
            raise BadInputError(
                f"--sample {self.grid_sample}: pass 0 or more points to draw besides the front"
            )
        if self.budgets is not None and self.classes:
            raise BadInputError("--classes is not measured by the grid study: drop --classes or --budgets")

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
