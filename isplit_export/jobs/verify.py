"""The verify job (``isplit-export verify``): re-check a bundle anywhere: re-hash its files, re-run its
goldens, apply the gates.

Torch-free on purpose (numpy, onnx, onnxruntime): ``isplit-export verify`` runs in the Jetson
container from ``Dockerfile.jetson``, which has no PyTorch. The backend is looked up in the one
registry (:mod:`isplit_export.verification.backends`), which says which pairs it runs, opens them as
runners (:mod:`isplit_export.verification.runners`) and names their gates; one split's pairs are
:func:`isplit_export.verification.verify.verify_split`; TensorRT is imported only
when a ``TrtRunner`` activates (``--backend tensorrt``).

What is checked, in order:

1. ``manifest.json`` is readable and has schema ``isplit.bundle/1`` (else :class:`BadInputError`);
2. every file listed in the manifest's ``files`` and ``report.md`` (against ``run.report_sha256``)
   hashes as recorded (else :class:`GateFailedError` naming the file). Files *not* listed are
   ignored: ``verify.json``, which verify itself writes, is an output, not part of the bundle;
3. for each split, the golden ``input`` goes through head then tail; the transmitted boundary is
   compared with the golden ``boundary`` and the logits with the golden ``logits`` (from the full
   PyTorch model) under the backend's gate (:meth:`isplit_export.verification.backends.Backend.gate`).
   A failed gate does not raise: it gives ``outcome="gate-failed"`` (the CLI maps it to exit 1);
4. the export's own gates (``splits[i].verification``, measured on the machine in ``manifest.machine``)
   are reported next to the replay: when they failed, a replay that passes gives
   ``outcome="export-failed"`` (exit 1), never a bare ``passed``.
"""

from __future__ import annotations

from pathlib import Path

from isplit_export import contract, progress
from isplit_export.backend_names import ONNXRUNTIME
from isplit_export.errors import BadInputError, first_line
from isplit_export.exporting.onnx_utils import this_machine
from isplit_export.files import json_dumps, write_text_atomic
from isplit_export.verification.backends import backend_named
from isplit_export.verification.outcome import BundleVerification
from isplit_export.verification.verify import VERIFY_FILE, verify_split

__all__ = ["VERIFY_FILE", "verify_bundle", "write_verification"]


def verify_bundle(
    bundle: Path | str,
    *,
    backend: str = ONNXRUNTIME,
    split: int | None = None,
    write: bool = True,
    expect_sha256: str | None = None,
    report: Path | None = None,
    trust_engines: bool = False,
) -> BundleVerification:
    """Re-hash ``bundle`` and re-run its goldens on ``backend``; see the module docstring.

    ``split`` restricts the golden runs to split N (1-based, the ``NN`` of ``splits/NN-*``); the
    hashes are always checked for the whole bundle. ``expect_sha256`` pins the manifest to the value CI
    published (:func:`isplit_export.contract.check_expected_sha256`). With ``write`` the result goes to
    ``report`` or else ``bundle/verify.json`` (an output of verify, not part of the hashed bundle).
    ``trust_engines`` deserialises engines that ``build-engines`` did not build on this machine
    (:mod:`isplit_export.targets.engine_trust`); without it they are refused (exit 2).

    Raises:
        BadInputError: unknown backend, unreadable/invalid manifest, split out of range.
        GateFailedError: a bundle file is missing or modified, or the manifest is not the expected one.
        NotRunError: ``tensorrt`` without TensorRT here, or engines not built yet.
        TechnicalError: onnxruntime / TensorRT failed to load or run a model.
    """
    bundle = Path(bundle)
    runtime = backend_named(backend)
    if expect_sha256 is not None:
        expect_sha256 = contract.check_sha256_text(expect_sha256, "--expect-sha256")
    m = contract.read_manifest(bundle)
    contract.check_expected_sha256(m, expect_sha256)
    manifest = m
    selected = contract.select_splits(manifest, split)
    progress.expect(2 + len(selected))
    progress.stage("hash the bundle's files")
    contract.check_files(bundle, manifest)
    progress.stage(f"load the {backend} models")
    pairs = runtime.verify_pairs(manifest, bundle, [entry for _, entry in selected], trust=trust_engines)
    rows = [
        row
        for (pos, entry), p in zip(selected, pairs, strict=True)
        for row in verify_split(runtime, bundle, manifest, pos, entry, p, trust_engines)
    ]
    progress.done()
    positions = {pos for pos, _ in selected}
    export = [v for v in m.export_verdicts if v.split in positions]
    replayed = bool(rows) and all(r.passed for r in rows)
    result = BundleVerification(
        bundle=bundle,
        backend=backend,
        outcome=_outcome(replayed, all(v.passed for v in export)),
        rows=rows,
        manifest_sha256=m.sha256,
        pinned=expect_sha256 is not None,
        export=export,
        export_machine=m.machine,
        machine=this_machine(),
    )
    if write:
        write_verification(result, report)
    return result


def _outcome(replayed: bool, exported: bool) -> str:
    """``gate-failed`` when the replay here failed, else ``export-failed`` when the export's gates had, else ``passed``."""
    if not replayed:
        return "gate-failed"
    return "passed" if exported else "export-failed"


def write_verification(result: BundleVerification, report: Path | None = None) -> Path:
    """Write ``verify.json`` to ``report`` (default: into the bundle); one line when it cannot."""
    path = Path(report) if report is not None else result.bundle / VERIFY_FILE
    try:
        write_text_atomic(path, json_dumps(result.to_json()))
    except OSError as e:
        raise BadInputError(
            f"cannot write {path} ({first_line(e)}): the results are above; pass --out PATH or --no-write "
            "(e.g. for a read-only bundle)"
        ) from e
    return path
