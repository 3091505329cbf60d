"""Hostile requests against a served tail: raw HTTP bodies and raw gRPC messages, as an attacker would send them.

The serving trust tests (``tests/e2e/test_serving_trust.py``) send these to a real ``isplit-export serve``
process; nothing here is a mock: ``http.client`` speaks HTTP/1.1 to uvicorn, the gRPC stub is
tritonclient's generated one.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"


def http_post(port: int, path: str, body: bytes, *, timeout: float = 30.0) -> tuple[int, str]:
    """POST ``body`` (JSON) to ``path``; the status and the first 300 characters of the answer."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, resp.read(300).decode("utf-8", "replace")
    finally:
        conn.close()


def http_post_stream(
    port: int, path: str, chunks: Iterator[bytes], length: int, *, timeout: float = 60.0
) -> int:
    """POST ``length`` bytes produced by ``chunks`` (never all in memory); the status, or 0 when the
    server closed the connection before answering (a refusal of the body)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.putrequest("POST", path)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(length))
        conn.endheaders()
        try:
            for chunk in chunks:
                conn.send(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused the body and closed: its answer may still be readable
        try:
            return conn.getresponse().status
        except (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError):
            return 0
    finally:
        conn.close()


def big_json_body(
    model_input: str, dims: list[int], datatype: str, batch: int, chunk_elements: int = 1 << 16
) -> tuple[Iterator[bytes], int]:
    """A well-formed JSON infer request of ``batch`` images of zeros, streamed; (chunks, total length)."""
    n = batch
    for d in dims:
        n *= d
    head = json.dumps(
        {"inputs": [{"name": model_input, "datatype": datatype, "shape": [batch, *dims], "data": []}]}
    )
    prefix, suffix = head.split("[]", 1)
    prefix += "["
    suffix = "]" + suffix
    full_chunks, rest = divmod(n, chunk_elements)
    chunk = ("0," * chunk_elements).encode()
    tail = ("0," * rest).encode()
    length = len(prefix) + full_chunks * len(chunk) + len(tail) - 1 + len(suffix)  # no comma after the last

    def gen() -> Iterator[bytes]:
        yield prefix.encode()
        for i in range(full_chunks):
            yield chunk[:-1] if (i == full_chunks - 1 and not rest) else chunk
        if rest:
            yield tail[:-1]
        yield suffix.encode()

    return gen(), length


def rss_mib(pid: int) -> float:
    """The resident set size of process ``pid`` (``VmRSS`` of ``/proc/PID/status``), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise RuntimeError(f"no VmRSS for process {pid}")


@dataclass(frozen=True)
class Malformed:
    """One malformed infer request: a name, its JSON body (HTTP) and its gRPC message fields."""

    name: str
    json: dict[str, Any]
    grpc: dict[str, Any]
    """``datatype``, ``shape``, and ``raw`` (bytes) or ``contents`` (a ``uint_contents``/``fp32_contents`` dict) or neither."""


def malformed_requests(input_name: str, dims: list[int], datatype: str) -> list[Malformed]:
    """The malformed requests every served tail must answer 400 / INVALID_ARGUMENT (``dims``: one image's)."""
    n = 1
    for d in dims:
        n *= d
    shape = [1, *dims]
    ok_raw = bytes(n * (1 if datatype in ("UINT8", "INT8") else 2 if datatype == "FP16" else 4))

    def body(datatype: str = datatype, shape: list[int] = shape, data: Any = None) -> dict[str, Any]:
        return {
            "inputs": [
                {
                    "name": input_name,
                    "datatype": datatype,
                    "shape": shape,
                    "data": data if data is not None else [0] * n,
                }
            ]
        }

    wrap = [1 << 54 | 1, *dims]  # np.prod of this wraps int64 to a small number: the old byte check passed
    nan = float("nan")
    return [
        Malformed(
            "data shorter than the shape",
            body(data=[0] * (n - 1)),
            {"datatype": datatype, "shape": shape, "raw": ok_raw[:-1]},
        ),
        Malformed(
            "data longer than the shape",
            body(data=[0] * (n + 1)),
            {"datatype": datatype, "shape": shape, "raw": ok_raw + b"\0"},
        ),
        Malformed(
            "strings as data",
            body(data=["x"] * n),
            {"datatype": "BYTES", "shape": shape, "raw": b"\1\0\0\0x" * n},
        ),
        Malformed(
            "shape whose product wraps int64",
            body(shape=wrap, data=[0] * n),
            {"datatype": datatype, "shape": wrap, "raw": ok_raw},
        ),
        Malformed("no raw and no contents", body(data=[]), {"datatype": datatype, "shape": shape}),
        Malformed("datatype XYZ", body(datatype="XYZ"), {"datatype": "XYZ", "shape": shape, "raw": ok_raw}),
        Malformed(
            "NaN payload",
            body(datatype="FP32", data=[nan] * n),
            {"datatype": "FP32", "shape": shape, "contents": {"fp32_contents": [nan] * n}},
        ),
        Malformed(
            "negative dims",
            body(shape=[-1, *dims]),
            {"datatype": datatype, "shape": [-1, *dims], "raw": ok_raw},
        ),
        Malformed(
            "wrong rank", body(shape=[n], data=[0] * n), {"datatype": datatype, "shape": [n], "raw": ok_raw}
        ),
        Malformed(
            "batch over the limit",
            body(shape=[9, *dims], data=[0] * (9 * n)),
            {"datatype": datatype, "shape": [9, *dims], "raw": ok_raw * 9},
        ),
    ]


def json_bytes(doc: dict[str, Any]) -> bytes:
    """JSON as a hostile client writes it: NaN as the bare token ``NaN`` (not strict JSON)."""
    return json.dumps(doc, allow_nan=True).encode()


def grpc_infer(
    address: str, model: str, input_name: str, spec: dict[str, Any], timeout: float = 30.0
) -> tuple[str, str]:
    """Send one raw ``ModelInferRequest``; (status code name, details) (``OK`` on success)."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    req = service_pb2.ModelInferRequest(model_name=model)
    tensor = req.inputs.add(name=input_name, datatype=spec["datatype"], shape=spec["shape"])
    for key, values in (spec.get("contents") or {}).items():
        getattr(tensor.contents, key).extend(values)
    if "raw" in spec:
        req.raw_input_contents.append(spec["raw"])
    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            stub.ModelInfer(req, timeout=timeout)
        except grpc.RpcError as e:
            return e.code().name, str(e.details())
    return "OK", ""


def grpc_repository(address: str, verb: str, model: str, timeout: float = 30.0) -> tuple[str, str]:
    """``RepositoryModelLoad`` / ``RepositoryModelUnload`` (``verb`` load/unload) over gRPC; (code name, details)."""
    import grpc
    from tritonclient.grpc import service_pb2, service_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            if verb == "load":
                stub.RepositoryModelLoad(
                    service_pb2.RepositoryModelLoadRequest(model_name=model), timeout=timeout
                )
            else:
                stub.RepositoryModelUnload(
                    service_pb2.RepositoryModelUnloadRequest(model_name=model), timeout=timeout
                )
        except grpc.RpcError as e:
            return e.code().name, str(e.details())
    return "OK", ""


EVIL_MODULE = "isplit_evil_models"


def plant_evil_model(bundle: Path, marker: Path) -> Path:
    """Put an unlisted MLServer model into ``bundle``: ``evil/model-settings.json`` naming an implementation in
    ``evil/isplit_evil_models.py``, whose import writes ``marker``. Returns the folder."""
    evil = bundle / "evil"
    evil.mkdir()
    (evil / "model-settings.json").write_text(
        json.dumps({"name": "evil", "implementation": f"{EVIL_MODULE}.Evil"}), encoding="utf-8"
    )
    (evil / f"{EVIL_MODULE}.py").write_text(
        "from pathlib import Path\n"
        "from mlserver import MLModel\n"
        f"Path({str(marker)!r}).write_text('ran')\n"
        "class Evil(MLModel):\n"
        "    async def load(self):\n"
        "        return True\n",
        encoding="utf-8",
    )
    return evil
