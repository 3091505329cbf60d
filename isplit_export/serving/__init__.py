"""Deployment: the bundle's tails served over the Open Inference Protocol, the head run against them.

- :mod:`.triton`: the Triton model repository written into every bundle with a server-side tail;
- :mod:`.runtime`: the MLServer runtime (onnxruntime) that serves a tail here and in tests;
- :mod:`.serve`: ``isplit-export serve`` (MLServer, gRPC + HTTP);
- :mod:`.run`: ``isplit-export run`` (head locally, boundary over ``tritonclient``, ``run.json``), made of
  :mod:`.local` (images, the head, the local reference), :mod:`.client` (``tritonclient``: readiness,
  metadata, requests with retries) and :mod:`.records` (per-request records, ``run.json``, the summary);
- :mod:`.bundle_access`: the one place this package reads a bundle (manifest, files, hashes).

MLServer and tritonclient are the ``serve`` extra (``pip install .[serve]``), tritonclient's gRPC client and
pillow alone the ``device`` extra (what ``run`` needs on the device); only :mod:`.runtime`,
:mod:`.serve` and :mod:`.client` import them, lazily; MLServer and ``tritonclient.grpc`` are never
imported in one process (the same protobuf symbols), so nothing :mod:`.serve` imports imports :mod:`.client`.
"""
