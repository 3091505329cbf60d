"""Deployment: the bundle's tails served over the Open Inference Protocol, the head run against them.

- :mod:`.triton`: the Triton model repository written into every bundle with a server-side tail;
- :mod:`.runtime`: the MLServer runtime (onnxruntime) that serves a tail here and in tests;
- :mod:`.serve`: ``isplit-export serve`` (MLServer, gRPC + HTTP);
- :mod:`.run`: ``isplit-export run`` (head locally, boundary over ``tritonclient``, ``run.json``);
- :mod:`.bundle_access`: the one place this package reads a bundle (manifest, files, hashes).

MLServer and tritonclient are the ``serve`` extra (``pip install .[serve]``); only :mod:`.runtime`,
:mod:`.serve` and :mod:`.run` import them, lazily.
"""
