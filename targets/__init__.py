"""Deployment target profiles (one JSON file per target), installed as ``isplit_export._targets``.

This file makes the folder a regular package so ``importlib.resources`` finds it in editable installs too.
"""
