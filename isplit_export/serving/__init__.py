"""Deployment: the bundle's tails served over the Open Inference Protocol, the head run against them.

The jobs are :mod:`isplit_export.jobs.serve` (``isplit-export serve``: MLServer, gRPC + HTTP) and
:mod:`isplit_export.jobs.run` (``isplit-export run``: head locally, boundary over ``tritonclient``,
``run.json``); this package is their library:

- :mod:`.tail_runtime`: the MLServer runtime (onnxruntime) that serves a tail here and in tests;
- :mod:`.server`, :mod:`.settings`, :mod:`.model_store`: the bounded MLServer, its settings for a bundle
  (request bounds, one model per tail, free ports) and serve's private copies of the tails;
- :mod:`.local` (images, the head, the local reference), :mod:`.client` (``tritonclient``: readiness,
  metadata, requests with retries) and :mod:`.records` (per-request records, ``run.json``, the summary);
- :mod:`.bundle_access`: the one place this package reads a bundle (manifest, files, hashes).

MLServer and tritonclient are the ``serve`` extra (``pip install .[serve]``), tritonclient's gRPC client and
pillow alone the ``device`` extra (what ``run`` needs on the device); only :mod:`.tail_runtime`,
:mod:`.server`, :mod:`.settings`, ``jobs.serve`` and :mod:`.client` import them, lazily; MLServer and ``tritonclient.grpc``
are never imported in one process (the same protobuf symbols), so nothing ``jobs.serve`` imports
imports :mod:`.client`.
"""
