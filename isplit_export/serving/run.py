"""``isplit-export run BUNDLE --server H:P``: the device side of a split deployment, every request measured.

    isplit-export serve bundle --port 8001 &
    isplit-export run bundle --server 127.0.0.1:8001 --requests 200 --concurrency 4

For each request (one image, batch 1) the head runs here (onnxruntime, or the TensorRT engines with
``--backend tensorrt``), the boundary goes to the server exactly as the bundle encodes it (uint8,
fp16, fp32, or a bottleneck's code) with ``tritonclient`` (gRPC, or JSON over HTTP), and the logits
come back. Recorded per request: head ms, encode ms (building the protocol's tensor), round-trip ms
(network + server, the successful attempt), the server's own compute time where the protocol gives
it (MLServer: our runtime's ``compute_us`` response parameter; Triton: its statistics extension,
averaged over the run), bytes sent. Reported: p50/p95/p99, throughput, top-1 agreement with the full
model (``full.onnx`` run here), accuracy where labels are known, the served logits against the local
pair's (the fp32 gate: same ONNX, other process), and the bundle's goldens sent through the server
(the encoding's gate, as ``verify``).

Faults, all bounded: the server must be ready within ``--wait`` seconds, else one line naming the
address and the fix (:data:`EXIT_UNREACHABLE`). A request that errors, exceeds ``--timeout-ms`` or
comes back with the wrong name, shape or dtype is retried ``--retries`` times with exponential
backoff (``--backoff-ms``, doubling, capped at :data:`~isplit_export.options.MAX_BACKOFF_MS`). Every
request ends as exactly one of ``ok``, ``failed`` (after its retries) or ``skipped`` (never sent: the
run was interrupted, or its image could not be read); ``run.json`` counts each and lists the failed
ones. Exit codes: 0 all ok and every check passed; 1 a check failed (goldens, agreement with the
local pair); :data:`EXIT_UNREACHABLE` (5) no server; :data:`EXIT_REQUESTS_FAILED` (6) some request
failed after its retries or was skipped; 2 bad input; 130 interrupted.

``run.json`` (schema :data:`RUN_SCHEMA`, strict JSON, documented in ``docs/serving.md``) goes into the
bundle by default, keyed by split so that runs of several splits add up; ``isplit-export plan`` then
uses its measured device, link and server times.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import signal
import threading
import time
from array import array
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from isplit_export import contract
from isplit_export.errors import BadInputError, IsplitError, NotRunError
from isplit_export.exporting.encoding import encode_array
from isplit_export.exporting.onnx_utils import make_session
from isplit_export.files import json_dumps, write_text_atomic
from isplit_export.options import MAX_BACKOFF_MS, RunOptions, parse_address
from isplit_export.serving.bundle_access import BundleAccess, SplitAccess, open_bundle
from isplit_export.verification.gates import gate_for
from isplit_export.verification.metrics import compare_logits
from isplit_export.version import __version__

RUN_FILE, RUN_SCHEMA = contract.RUN_FILE, contract.RUN_SCHEMA
EXIT_UNREACHABLE = 5
"""No server answered at ``--server`` within ``--wait`` seconds (or the model is not loaded there)."""
EXIT_REQUESTS_FAILED = 6
"""At least one request failed after its retries, or was skipped."""
MAX_LISTED_FAILURES = 100
"""run.json lists at most this many failed/skipped requests one by one (all are counted)."""
DATATYPES = {"float32": "FP32", "float16": "FP16", "uint8": "UINT8", "int8": "INT8"}
GRPC_PREFIX_BYTES = 5
"""gRPC length-prefixed message: 1 flag byte + 4 length bytes before each protobuf message."""
_MAX_MESSAGE = 2**31 - 1


class ServerUnreachableError(IsplitError):
    """No inference server (or not the model) at the address: exit :data:`EXIT_UNREACHABLE`."""

    exit_code = EXIT_UNREACHABLE


def _first_line(err: BaseException) -> str:
    text = str(err).strip()
    return (text.splitlines()[0] if text else type(err).__name__)[:300]


# --------------------------------------------------------------------------------------------------
# images (torch-free: the device has no PyTorch)

_INTERP = {"nearest": 0, "bilinear": 2, "bicubic": 3, "lanczos": 1, "box": 4, "hamming": 5}


def preprocess_image(path: Path, prep: dict[str, Any]) -> np.ndarray:
    """One image file as the model's (1, C, H, W) float32 input, as :func:`isplit_export.data.preprocess`
    computes it (torchvision on PIL images: short side resized with PIL, center crop, /255, normalize)."""
    from PIL import Image

    with Image.open(path) as im:
        img = im.convert("L" if int(prep["channels"]) == 1 else "RGB")
    size, crop = int(prep["resize"]), int(prep["crop"])
    w, h = img.size
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = size, int(size * long / short)
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    if (new_w, new_h) != (w, h):
        img = img.resize((new_w, new_h), _INTERP[str(prep.get("interpolation", "bilinear"))])
    top, left = round((new_h - crop) / 2.0), round((new_w - crop) / 2.0)
    img = img.crop((left, top, left + crop, top + crop))
    a = np.asarray(img, dtype=np.uint8)
    a = a[None] if a.ndim == 2 else a.transpose(2, 0, 1)
    x = a.astype(np.float32) / np.float32(255.0)
    mean = np.asarray(prep["mean"], dtype=np.float32).reshape(-1, 1, 1)
    std = np.asarray(prep["std"], dtype=np.float32).reshape(-1, 1, 1)
    return np.ascontiguousarray(((x - mean) / std)[None], dtype=np.float32)


_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class Image_:
    """One image to send: its name, its (1, C, H, W) input (None: unreadable) and label (-1 unknown)."""

    name: str
    x: np.ndarray | None
    label: int = -1
    error: str | None = None


def load_images(options: RunOptions, bundle: BundleAccess, split: SplitAccess) -> tuple[list[Image_], str]:
    """The images of the run: ``--data`` (class sub-folders give labels) or the split's golden inputs."""
    if options.data is None:
        g = split.load_golden()
        n = g["input"].shape[0] if options.images is None else min(options.images, g["input"].shape[0])
        images = [Image_(f"golden[{i}]", np.ascontiguousarray(g["input"][i : i + 1]), int(g["labels"][i]))
                  for i in range(n)]  # fmt: skip
        return images, f"{split.dir}/golden.npz"
    root = options.data
    if not root.is_dir():
        raise BadInputError(f"--data {root} is not a directory: pass a folder of images or of class sub-folders")
    classes = int((bundle.manifest.get("model") or {}).get("num_classes") or 0)
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    items: list[tuple[str, Path, int]] = []
    for d in subdirs or [root]:
        label = int(d.name) if d is not root and d.name.isdigit() and int(d.name) < classes else -1
        for f in sorted(p for p in d.iterdir() if p.is_file() and p.suffix.lower() in _SUFFIXES):
            items.append((f.relative_to(root).as_posix(), f, label))
    if options.images is not None:
        items = items[: options.images]
    if not items:
        raise BadInputError(f"no images found in --data {root}: pass a folder of .png/.jpg files or class sub-folders")
    prep = bundle.preprocessing
    images = []
    for name, path, label in items:
        try:
            images.append(Image_(name, preprocess_image(path, prep), label))
        except Exception as e:  # an unreadable file is skipped and counted, never silently dropped
            images.append(Image_(name, None, label, f"unreadable image: {_first_line(e)}"))
    return images, str(root)


# --------------------------------------------------------------------------------------------------
# the head here


class Head:
    """The split's head on this machine: onnxruntime, or its TensorRT engine (``--backend tensorrt``)."""

    def __init__(self, bundle: BundleAccess, split: SplitAccess, backend: str, threads: int) -> None:
        self.split = split
        self.backend = backend
        self._input = bundle.input_name
        if backend == "onnxruntime":
            self._session = make_session(split.head, threads=threads)
            self._name = self._session.get_inputs()[0].name
            return
        from isplit_export.targets import trt_backend  # lazy: imports tensorrt

        if not trt_backend.tensorrt_available():
            raise NotRunError(
                "TensorRT is not available on this machine: run with --backend tensorrt on the device, "
                "or use --backend onnxruntime"
            )
        if split.engine_plan is None:
            raise BadInputError(f"split {split.dir} has no engine build plan: export the bundle for a TensorRT target")
        plan = json.loads(split.engine_plan.read_text(encoding="utf-8"))
        head = plan["engines"]["head"]
        self._engine = split.split_dir / str(head["engine"])
        self._dla = head.get("dla_core") if isinstance(head.get("dla_core"), int) else None
        if not self._engine.is_file():
            raise NotRunError(f"no engine {self._engine}: run isplit-export build-engines {bundle.root} first")
        trt_backend.check_engine_record(split.split_dir)
        self._trt = trt_backend

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """The boundary as transmitted (the encoding applied here when the engine emits float)."""
        if self.backend == "onnxruntime":
            return np.asarray(self._session.run(None, {self._name: x})[0])
        outputs = self._trt.run_engine(self._engine, {self._input: x}, dla_core=self._dla)
        b = np.asarray(next(iter(outputs.values())))
        return b if b.dtype == self.split.dtype else encode_array(b, self.split.encoding)


# --------------------------------------------------------------------------------------------------
# the client


class Client:
    """One tritonclient connection (gRPC or HTTP JSON) to one model; one per worker thread."""

    def __init__(self, options: RunOptions, model: str) -> None:
        self.protocol = options.protocol
        self.model = model
        self.timeout_s = options.timeout_ms / 1000.0
        # control calls (ready, metadata, statistics) are bounded too: a hung server cannot stall the run
        self._ctl: dict[str, float] = {"client_timeout": max(self.timeout_s, 1.0)} if self.protocol == "grpc" else {}
        if self.protocol == "grpc":
            import tritonclient.grpc as grpcclient

            self._mod: Any = grpcclient
            self._client: Any = grpcclient.InferenceServerClient(
                options.server,
                channel_args=[
                    ("grpc.max_send_message_length", _MAX_MESSAGE),
                    ("grpc.max_receive_message_length", _MAX_MESSAGE),
                    # reconnect quickly after a server restart (gRPC's default backoff grows to 120 s)
                    ("grpc.initial_reconnect_backoff_ms", 100),
                    ("grpc.min_reconnect_backoff_ms", 100),
                    ("grpc.max_reconnect_backoff_ms", 1000),
                ],
            )
        else:
            import tritonclient.http as httpclient

            self._mod = httpclient
            self._client = httpclient.InferenceServerClient(
                options.server, connection_timeout=max(self.timeout_s, 1.0), network_timeout=self.timeout_s
            )

    def close(self) -> None:
        with contextlib.suppress(Exception):  # closing a broken connection must not hide the run's result
            self._client.close()

    def ready(self) -> tuple[bool, str]:
        """(server and model ready, why not)."""
        try:
            if not self._client.is_server_ready(**self._ctl):
                return False, "the server is not ready"
            if not self._client.is_model_ready(self.model, **self._ctl):
                return False, f"model {self.model} is not loaded there"
            return True, ""
        except Exception as e:
            return False, _first_line(e)

    def metadata(self) -> tuple[str, list[int]]:
        """(datatype, shape) of the model's first input, as the server declares it."""
        meta = self._client.get_model_metadata(self.model, **self._ctl)
        if self.protocol == "grpc":
            inp = meta.inputs[0]
            return str(inp.datatype), [int(d) for d in inp.shape]
        inp = meta["inputs"][0]
        return str(inp["datatype"]), [int(d) for d in inp["shape"]]

    def encode(self, boundary: np.ndarray) -> Any:
        """The protocol's input tensor holding the boundary's bytes as they are (no conversion)."""
        dtype = DATATYPES[boundary.dtype.name]
        inp = self._mod.InferInput("boundary", list(boundary.shape), dtype)
        if self.protocol == "grpc":
            inp.set_data_from_numpy(boundary)
        else:  # MLServer's REST endpoint takes JSON, not tritonclient's binary-data extension
            inp.set_data_from_numpy(boundary, binary_data=False)
        return inp

    def wire_bytes(self, inp: Any) -> int:
        """Bytes of one request on the wire above TCP: the gRPC message plus its 5-byte prefix
        (HTTP/2 frame and header bytes not included), or the HTTP body (JSON)."""
        if self.protocol == "grpc":
            from tritonclient.grpc._utils import _get_inference_request as grpc_request

            msg = grpc_request(self.model, [inp], "", "", None, 0, False, False, 0, None, None)
            return int(msg.ByteSize()) + GRPC_PREFIX_BYTES
        from tritonclient.http._utils import _get_inference_request as http_request

        body, _ = http_request([inp], "", self._outputs(), 0, False, False, 0, None, None)
        return len(body)

    def _outputs(self) -> Any:
        if self.protocol == "grpc":
            return None
        return [self._mod.InferRequestedOutput("logits", binary_data=False)]

    def infer(self, inp: Any) -> tuple[np.ndarray, float | None]:
        """(logits, server compute ms from the response, if it carries it)."""
        if self.protocol == "grpc":
            result = self._client.infer(self.model, [inp], client_timeout=self.timeout_s)
            params = result.get_response().parameters
            us = params["compute_us"].int64_param if "compute_us" in params else None
        else:
            result = self._client.infer(self.model, [inp], outputs=self._outputs())
            us = (result.get_response().get("parameters") or {}).get("compute_us")
        logits = result.as_numpy("logits")
        if logits is None:
            raise ValueError("the response has no output 'logits'")
        return np.asarray(logits), (float(us) / 1000.0 if us is not None else None)

    def compute_statistics(self) -> tuple[int, int] | None:
        """(count, compute ns) of the model from the statistics extension (Triton), None if unsupported."""
        try:
            stats = self._client.get_inference_statistics(self.model, **self._ctl)
        except Exception:
            return None
        try:
            if self.protocol == "grpc":
                c = stats.model_stats[0].inference_stats.compute_infer
                return int(c.count), int(c.ns)
            c = stats["model_stats"][0]["inference_stats"]["compute_infer"]
            return int(c["count"]), int(c["ns"])
        except (IndexError, KeyError, AttributeError):
            return None


def wait_ready(options: RunOptions, model: str) -> None:
    """Poll the server until it and the model are ready, at most ``wait_s``; else one line (exit 5)."""
    deadline = time.monotonic() + options.wait_s
    delay = 0.05
    client = Client(options, model)
    try:
        while True:
            ok, why = client.ready()
            if ok:
                return
            if time.monotonic() + delay > deadline:
                break
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
    finally:
        client.close()
    _, port = parse_address(options.server)
    raise ServerUnreachableError(
        f"no inference server ready with model {model} at {options.server} ({options.protocol}) within "
        f"{options.wait_s:g} s ({why}): start one with `isplit-export serve {options.bundle} --port {port}` "
        f"(or tritonserver --model-repository {options.bundle}/triton), or pass the right --server HOST:PORT"
    )


# --------------------------------------------------------------------------------------------------
# the run


@dataclass
class Request:
    """One request: one image through head, wire and tail; ``status`` ok / failed / skipped."""

    n: int
    image: int
    status: str = "skipped"
    attempts: int = 0
    head_ms: float | None = None
    encode_ms: float | None = None
    round_trip_ms: float | None = None
    server_ms: float | None = None
    end_to_end_ms: float | None = None
    bytes_sent: int | None = None
    error: str | None = None


@dataclass
class RunResult:
    """The run's record (``data`` is run.json's entry for the split), its exit code, where it went.

    ``served``: per distinct image (index into the run's images), the served logits that differed most
    from the local pair's (what ``vs_local_pair`` compared).
    """

    data: dict[str, Any]
    exit_code: int
    written: Path | None
    served: dict[int, np.ndarray] = field(default_factory=dict)


class _Recorder:
    """Every finished request, folded in as it ends: compact per-request timings (about 50 bytes a
    request), counts, the first failures, and no logits beyond one row per distinct image, so the
    client's memory stays flat however long it runs. Thread-safe."""

    def __init__(self, images: list[Image_], ref: dict[int, dict[str, np.ndarray]]) -> None:
        self.images, self.ref = images, ref
        self.lock = threading.Lock()
        self.counts = {"ok": 0, "failed": 0, "skipped": 0}
        self.ms: dict[str, array[float]] = {k: array("d") for k in ("head", "encode", "round_trip", "server",
                                                                     "end_to_end", "transport")}  # fmt: skip
        self.payload: set[int] = set()
        self.failures: list[dict[str, Any]] = []
        self.worst: dict[int, tuple[float, np.ndarray]] = {}
        self.full_seen = self.full_agree = self.labelled = self.correct = self.full_correct = 0

    def add(self, req: Request, logits: np.ndarray | None) -> None:
        with self.lock:
            self.counts[req.status] += 1
            if req.bytes_sent is not None:
                self.payload.add(req.bytes_sent)
            if req.status != "ok" or logits is None:
                if len(self.failures) < MAX_LISTED_FAILURES:
                    self.failures.append({"request": req.n, "image": self.images[req.image].name, "status": req.status,
                                          "attempts": req.attempts, "error": req.error})  # fmt: skip
                return
            for key, v in (("head", req.head_ms), ("encode", req.encode_ms), ("round_trip", req.round_trip_ms),
                           ("end_to_end", req.end_to_end_ms), ("server", req.server_ms)):  # fmt: skip
                if v is not None:
                    self.ms[key].append(v)
            if req.server_ms is not None and req.round_trip_ms is not None:
                # what the split adds over computing head + tail in one place: encode, network, protocol
                self.ms["transport"].append((req.encode_ms or 0.0) + req.round_trip_ms - req.server_ms)
            r = self.ref[req.image]
            diff = float(np.max(np.abs(logits.astype(np.float64) - r["pair"])))
            if req.image not in self.worst or diff > self.worst[req.image][0]:
                self.worst[req.image] = (diff, np.array(logits, copy=True))
            top = int(np.argmax(logits))
            full_top = int(np.argmax(r["full"])) if "full" in r else None
            if full_top is not None:
                self.full_seen += 1
                self.full_agree += int(top == full_top)
            label = self.images[req.image].label
            if label >= 0 and full_top is not None:
                self.labelled += 1
                self.correct += int(top == label)
                self.full_correct += int(full_top == label)


def _stats(values: list[float]) -> dict[str, Any] | None:
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"n": len(values), "p50": _r(float(np.percentile(a, 50))), "p95": _r(float(np.percentile(a, 95))),
            "p99": _r(float(np.percentile(a, 99))), "mean": _r(float(a.mean())), "min": _r(float(a.min())),
            "max": _r(float(a.max()))}  # fmt: skip


def _r(v: float | None, digits: int = 6) -> float | None:
    return None if v is None or not math.isfinite(v) else float(f"{v:.{digits}g}")


def _rss_mib() -> float | None:
    """This process's resident memory (Linux /proc), None elsewhere."""
    try:
        with open("/proc/self/statm", encoding="ascii") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return None


class _Schedule:
    """Hands out request numbers to the workers: ``total`` of them, or until ``deadline``; thread-safe."""

    def __init__(self, total: int | None, deadline: float | None) -> None:
        self.total, self.deadline = total, deadline
        self.issued = 0
        self.stop = threading.Event()
        self._lock = threading.Lock()

    def next(self) -> int | None:
        with self._lock:
            if self.stop.is_set():
                return None
            if self.total is not None and self.issued >= self.total:
                return None
            if self.deadline is not None and time.monotonic() >= self.deadline:
                return None
            n = self.issued
            self.issued += 1
            return n


def _valid_logits(logits: np.ndarray, classes: int) -> str | None:
    """Why the response's logits are not what the tail returns (name checked by the client), or None."""
    if logits.dtype != np.float32:
        return f"the server answered logits of dtype {logits.dtype}, expected float32"
    if logits.shape != (1, classes):
        return f"the server answered logits of shape {list(logits.shape)}, expected [1, {classes}]"
    if not np.all(np.isfinite(logits)):
        return "the server answered non-finite logits"
    return None


def _send(
    client: Client, options: RunOptions, boundary: np.ndarray, classes: int, req: Request, stop: threading.Event
) -> tuple[Any, np.ndarray | None]:
    """Encode and send one boundary with retries; fills ``req``; returns (the encoded input, logits or None)."""
    t = time.perf_counter()
    inp = client.encode(boundary)
    req.encode_ms = (time.perf_counter() - t) * 1e3
    for attempt in range(options.retries + 1):
        req.attempts = attempt + 1
        t = time.perf_counter()
        try:
            logits, server_ms = client.infer(inp)
            rtt = (time.perf_counter() - t) * 1e3
            problem = _valid_logits(logits, classes)
            if problem is None:
                req.round_trip_ms, req.server_ms, req.status, req.error = rtt, server_ms, "ok", None
                return inp, logits
            req.error = problem
        except Exception as e:  # timeouts, refused connections, server errors: all retried, all bounded
            req.error = _first_line(e)
        if attempt < options.retries and not stop.is_set():
            stop.wait(min(options.backoff_ms * 2**attempt, MAX_BACKOFF_MS) / 1e3)
        if stop.is_set():
            break
    req.status = "failed"
    return inp, None


def _local_reference(
    bundle: BundleAccess, split: SplitAccess, images: list[Image_], head: Head, threads: int
) -> dict[int, dict[str, np.ndarray]]:
    """Per readable image: the boundary (head here), the local tail's logits and the full model's."""
    tail = make_session(split.tail, threads=threads)
    full = make_session(bundle.full, threads=threads) if bundle.full is not None else None
    t_in = tail.get_inputs()[0].name
    ref: dict[int, dict[str, np.ndarray]] = {}
    for i, im in enumerate(images):
        if im.x is None:
            continue
        b = head(im.x)
        r = {"boundary": b, "pair": np.asarray(tail.run(None, {t_in: b})[0])}
        if full is not None:
            r["full"] = np.asarray(full.run(None, {full.get_inputs()[0].name: im.x})[0])
        ref[i] = r
    return ref


def _local_latency(split: SplitAccess, images: list[Image_], threads: int) -> dict[str, float] | None:
    """Median local head and tail ms (onnxruntime, interleaved) on the first readable image."""
    from isplit_export.verification.runtime import measure_latency

    x = next((im.x for im in images if im.x is not None), None)
    if x is None:
        return None
    lat = measure_latency({"head": split.head, "tail": split.tail}, x, runs=30, threads=max(threads, 1))
    return {k: round(v, 4) for k, v in lat.items()}


def _goldens(client: Client, options: RunOptions, split: SplitAccess, classes: int) -> dict[str, Any]:
    """The bundle's golden boundaries through the server, against the golden logits (verify's gate)."""
    g = split.load_golden()
    gate = gate_for(split.encoding.name)
    got: list[np.ndarray] = []
    stop = threading.Event()
    for i in range(g["boundary"].shape[0]):
        req = Request(n=-1, image=i)
        _, logits = _send(client, options, np.ascontiguousarray(g["boundary"][i : i + 1]), classes, req, stop)
        if logits is None:
            return {"images": int(g["boundary"].shape[0]), "passed": False, "gate": gate.name,
                    "failures": [f"golden {i}: {req.error}"]}  # fmt: skip
        got.append(logits)
    metrics = compare_logits(g["logits"], np.concatenate(got))
    ok, reasons = gate.check(metrics)
    return {"images": len(got), "gate": gate.name, "metrics": {k: _r(v) for k, v in metrics.items()},
            "passed": ok, "failures": reasons}  # fmt: skip


def run(options: RunOptions, on_result: Callable[[Request], None] | None = None) -> RunResult:
    """Run the split against the server; see the module docstring. ``on_result`` sees each finished request."""
    bundle = open_bundle(options.bundle, options.split, verify=True)
    split = bundle.splits[0]
    classes = int((bundle.manifest.get("model") or {}).get("num_classes") or 0)
    if classes < 1:
        raise BadInputError("manifest.json model block has no num_classes: rebuild the bundle")
    images, source = load_images(options, bundle, split)
    head = Head(bundle, split, options.backend, options.threads)
    wait_ready(options, split.model)
    probe = Client(options, split.model)
    try:
        dtype, shape = probe.metadata()
        want = DATATYPES[split.encoding.dtype]
        if dtype != want or [d for d in shape[1:]] != list(split.shape):
            raise BadInputError(
                f"model {split.model} at {options.server} takes {dtype} {shape}, but split {split.dir} sends "
                f"{want} [-1, {', '.join(map(str, split.shape))}]: serve this bundle's tails (isplit-export serve)"
            )
        goldens = _goldens(probe, options, split, classes)
        stats_before = probe.compute_statistics()
    finally:
        probe.close()
    ref = _local_reference(bundle, split, images, head, options.threads)
    local = _local_latency(split, images, options.threads) if options.backend == "onnxruntime" else None

    total = options.requests if options.requests is not None else (None if options.duration_s else len(images))
    deadline = time.monotonic() + options.duration_s if options.duration_s is not None else None
    sched = _Schedule(total, deadline)
    rec = _Recorder(images, ref)
    lock = threading.Lock()
    wire: list[int] = []
    flight = [0, 0]  # requests in flight now, most at once

    def worker() -> None:
        client = Client(options, split.model)
        try:
            while (n := sched.next()) is not None:
                i = n % len(images)
                req = Request(n=n, image=i)
                im = images[i]
                logits = None
                if im.x is None:
                    req.error = im.error
                else:
                    t = time.perf_counter()
                    boundary = head(im.x)
                    req.head_ms = (time.perf_counter() - t) * 1e3
                    req.bytes_sent = int(boundary.nbytes)
                    with lock:
                        flight[0] += 1
                        flight[1] = max(flight[1], flight[0])
                    try:
                        inp, logits = _send(client, options, boundary, classes, req, sched.stop)
                    finally:
                        with lock:
                            flight[0] -= 1
                    if not wire:
                        wire.append(client.wire_bytes(inp))
                    if req.status == "ok":
                        req.end_to_end_ms = (req.head_ms or 0.0) + (req.encode_ms or 0.0) + (req.round_trip_ms or 0.0)
                rec.add(req, logits)
                if on_result is not None:
                    on_result(req)
        finally:
            client.close()

    rss: list[float] = []
    interrupted = False
    previous = _install_sigterm()
    t0 = time.perf_counter()
    try:
        with ThreadPoolExecutor(max_workers=options.concurrency, thread_name_prefix="isplit-run") as pool:
            futures = [pool.submit(worker) for _ in range(options.concurrency)]
            try:
                while not all(f.done() for f in futures):
                    m = _rss_mib()
                    if m is not None:
                        rss.append(m)
                    time.sleep(0.25)
            except KeyboardInterrupt:
                interrupted = True
                sched.stop.set()
            for f in futures:
                f.result()
    finally:
        _restore_sigterm(previous)
    wall = time.perf_counter() - t0
    stats_after = None
    if not rec.ms["server"]:
        probe = Client(options, split.model)
        stats_after = probe.compute_statistics()
        probe.close()
    if total is not None and sched.issued < total:  # never sent: interrupted
        for n in range(sched.issued, total):
            rec.add(Request(n=n, image=n % len(images), error="not sent: the run was interrupted"), None)
    data = _record(options, split, source, images, ref, rec, goldens, local, wire, wall, rss,
                   stats_before, stats_after, interrupted)  # fmt: skip
    data["in_flight_max"] = flight[1]
    written = _write(options, bundle, split, data)
    code = 130 if interrupted else _exit_code(data)
    return RunResult(data=data, exit_code=code, written=written, served={i: w[1] for i, w in rec.worst.items()})


def _install_sigterm() -> Any:
    """SIGTERM stops the run like Ctrl-C (the main thread only; elsewhere nothing is installed)."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, handler)


def _restore_sigterm(previous: Any) -> None:
    if previous is not None:
        signal.signal(signal.SIGTERM, previous)


def _exit_code(data: dict[str, Any]) -> int:
    counts = data["images"]
    if counts["failed"] or counts["skipped"]:
        return EXIT_REQUESTS_FAILED
    return 0 if data["passed"] else 1


def _record(
    options: RunOptions, split: SplitAccess, source: str, images: list[Image_],
    ref: dict[int, dict[str, np.ndarray]], rec: _Recorder, goldens: dict[str, Any],
    local: dict[str, float] | None, wire: list[int], wall: float, rss: list[float],
    stats_before: tuple[int, int] | None, stats_after: tuple[int, int] | None, interrupted: bool,
) -> dict[str, Any]:  # fmt: skip
    """The run.json entry of the split (see docs/serving.md for every field)."""
    counts = dict(rec.counts)
    pair_gate = gate_for("fp32")
    vs_pair: dict[str, Any] = {"gate": pair_gate.name, "images": counts["ok"], "distinct_compared": len(rec.worst)}
    if rec.worst:
        keys = sorted(rec.worst)
        pair = np.concatenate([ref[i]["pair"] for i in keys])
        served = np.concatenate([rec.worst[i][1] for i in keys])
        metrics = compare_logits(pair, served)
        passed, reasons = pair_gate.check(metrics)
        vs_pair.update(metrics={k: _r(v) for k, v in metrics.items()}, passed=passed, failures=reasons)
    else:
        vs_pair.update(passed=False, failures=["no request succeeded"])
    task: dict[str, Any] = {}
    if rec.full_seen:
        task["agreement_with_full_model"] = _r(rec.full_agree / rec.full_seen)
    if rec.labelled:
        task.update(accuracy=_r(rec.correct / rec.labelled), full_model_accuracy=_r(rec.full_correct / rec.labelled),
                    labelled=rec.labelled)  # fmt: skip
    server_ms = list(rec.ms["server"])
    server: dict[str, Any] = {"source": None, "ms": None}
    if server_ms:
        server = {"source": "response parameter compute_us (per request)", "ms": _stats(server_ms)}
    elif stats_before is not None and stats_after is not None and stats_after[0] > stats_before[0]:
        mean = (stats_after[1] - stats_before[1]) / (stats_after[0] - stats_before[0]) / 1e6
        server = {"source": "statistics extension compute_infer (mean over the run)", "ms": {"mean": _r(mean)}}
    latency = {k: _stats(list(rec.ms[k])) for k in ("head", "encode", "round_trip", "end_to_end", "transport")}
    overhead = None
    if local is not None and latency["end_to_end"] is not None and latency["head"] is not None:
        overhead = _r(latency["end_to_end"]["p50"] - latency["head"]["p50"] - local["tail_ms"])
    link = None
    if latency["round_trip"] is not None:
        srv = (server["ms"] or {}).get("p50", (server["ms"] or {}).get("mean"))
        link = _r(latency["round_trip"]["p50"] - (srv or 0.0))
    payload = sorted(rec.payload)
    listed = sorted(rec.failures, key=lambda f: int(f["request"]))
    host, port = parse_address(options.server)
    passed = bool(goldens.get("passed")) and bool(vs_pair.get("passed")) and not counts["failed"] and not counts["skipped"]
    return {
        "split": split.dir,
        "index": split.index,
        "model": split.model,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "host": platform.platform(),
        "server": {"address": f"{host}:{port}", "protocol": options.protocol},
        "backend": options.backend,
        "options": {"requests": options.requests, "duration_s": options.duration_s, "concurrency": options.concurrency,
                    "timeout_ms": options.timeout_ms, "retries": options.retries, "backoff_ms": options.backoff_ms,
                    "threads": options.threads, "data": source},
        "images": {"distinct": len(images), "requests": sum(counts.values()), **counts},
        "interrupted": interrupted,
        "wall_s": _r(wall),
        "throughput_rps": _r(counts["ok"] / wall) if wall > 0 else None,
        "latency_ms": latency,
        "server_compute": server,
        "link_ms_p50": link,
        "local_ms": local,
        "transport_overhead_ms_p50": overhead,
        "bytes": {"bundle_bytes_per_image": split.bytes_per_image, "payload_per_image": payload[0] if len(payload) == 1 else payload,
                  "request_on_wire": wire[0] if wire else None,
                  "framing": (wire[0] - split.bytes_per_image) if wire else None,
                  "framing_note": ("gRPC: protobuf ModelInferRequest + 5-byte message prefix; HTTP/2 frame and "
                                   "header bytes not included" if options.protocol == "grpc" else
                                   "HTTP: the JSON request body (numbers as text); HTTP headers not included")},
        "client_rss_mib": {"start": _r(rss[0]), "quarter": _r(rss[len(rss) // 4]), "end": _r(rss[-1]), "max": _r(max(rss)),
                           "samples": len(rss)} if rss else None,
        "goldens": goldens,
        "vs_local_pair": vs_pair,
        "task": task,
        "failures": listed,
        "passed": passed,
    }


def _write(options: RunOptions, bundle: BundleAccess, split: SplitAccess, data: dict[str, Any]) -> Path:
    """Merge the split's entry into run.json (other splits' entries of the same manifest are kept)."""
    path = options.out if options.out is not None else bundle.root / RUN_FILE
    runs: dict[str, Any] = {}
    if path.is_file():
        try:
            old = contract.read_json(path, str(path))  # bounded, strict; a broken old file is replaced
            if old.get("schema") == RUN_SCHEMA and old.get("manifest_sha256") == bundle.manifest_sha256:
                runs = dict(old.get("runs") or {})
        except IsplitError:
            runs = {}
    runs[split.dir] = data
    doc = {"schema": RUN_SCHEMA, "tool": {"name": "isplit-export", "version": __version__},
           "manifest_sha256": bundle.manifest_sha256, "runs": runs}  # fmt: skip
    try:
        write_text_atomic(path, json_dumps(doc))
    except OSError as e:
        raise BadInputError(f"cannot write {path} ({_first_line(e)}): make the bundle writable or pass --out FILE") from e
    return path


# --------------------------------------------------------------------------------------------------
# the terminal summary


def _fmt(v: Any) -> str:
    return "-" if v is None else f"{float(v):.3f}"


def format_run(data: dict[str, Any], written: Path | None = None) -> str:
    """The latency table, agreement, bytes and the accounting of every image."""
    lines = [
        f"split {data['split']} -> model {data['model']} at {data['server']['address']} ({data['server']['protocol']}), "
        f"{data['images']['requests']} requests, concurrency {data['options']['concurrency']}, backend {data['backend']}",
        f"{'ms':16} {'p50':>8} {'p95':>8} {'p99':>8} {'mean':>8} {'n':>6}",
    ]
    rows: list[tuple[str, Any]] = [(k.replace("_", " "), v) for k, v in data["latency_ms"].items()]
    srv = data["server_compute"]["ms"]
    rows.insert(3, ("server compute", srv))
    for name, s in rows:
        s = s or {}
        lines.append(f"{name:16} {_fmt(s.get('p50')):>8} {_fmt(s.get('p95')):>8} {_fmt(s.get('p99')):>8} "
                     f"{_fmt(s.get('mean')):>8} {s.get('n', '-'):>6}")  # fmt: skip
    local = data.get("local_ms")
    if local:
        lines.append(f"local head + tail (onnxruntime here): {local['head_ms']:.3f} + {local['tail_ms']:.3f} ms; "
                     f"transport overhead p50: {_fmt(data['transport_overhead_ms_p50'])} ms")  # fmt: skip
    lines.append(f"throughput: {_fmt(data['throughput_rps'])} requests/s over {_fmt(data['wall_s'])} s")
    b = data["bytes"]
    lines.append(f"bytes per image: payload {b['payload_per_image']} B (bundle bytes_per_image {b['bundle_bytes_per_image']} B), "
                 f"on the wire {b['request_on_wire']} B (framing {b['framing']} B)")  # fmt: skip
    t = data["task"]
    if "agreement_with_full_model" in t:
        acc = (f"; accuracy {t['accuracy']:.1%} (full model {t['full_model_accuracy']:.1%}, {t['labelled']} labelled)"
               if "accuracy" in t else "")  # fmt: skip
        lines.append(f"agreement with the full model: {t['agreement_with_full_model']:.1%}{acc}")
    vp, g = data["vs_local_pair"], data["goldens"]
    mar = (vp.get("metrics") or {}).get("max_abs_rel")
    lines.append(f"served vs local pair: max_abs_rel {_fmt(mar)}, gate {vp['gate']} {'pass' if vp['passed'] else 'FAIL'}; "
                 f"goldens: {g['images']} through the server, gate {g['gate']} {'pass' if g['passed'] else 'FAIL'}")  # fmt: skip
    for reason in [*vp.get("failures", []), *g.get("failures", [])]:
        lines.append(f"check failed: {reason}")
    c = data["images"]
    lines.append(f"requests: {c['ok']} ok, {c['failed']} failed after retries, {c['skipped']} skipped")
    for f in data["failures"][:10]:
        lines.append(f"  request {f['request']} ({f['image']}): {f['status']} after {f['attempts']} attempt(s): {f['error']}")
    if written is not None:
        lines.append(f"wrote {written}")
    return "\n".join(lines)


__all__ = ["EXIT_REQUESTS_FAILED", "EXIT_UNREACHABLE", "RUN_FILE", "RUN_SCHEMA", "RunResult", "ServerUnreachableError",
           "format_run", "preprocess_image", "run"]
