"""The deployment target names, known from the package data folder ``isplit_export/profiles/`` alone.

A target is one ``<name>.json`` file there (read and validated by :mod:`isplit_export.targets.profiles`);
its name is the file name, so the options can refuse an unknown ``--target`` / ``--server`` before any
work without parsing a profile. ``ALIASES`` maps short names to profiles: ``jetson`` is the default
Jetson profile, the Orin NX, because it is the mid-range Orin module and its plan (DLA core 0, TensorRT
10.3) also runs on an AGX Orin.
"""

from __future__ import annotations

import importlib.resources
from typing import TYPE_CHECKING

from isplit_export.errors import BadInputError

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

ALIASES: dict[str, str] = {"jetson": "jetson-orin-nx"}
"""Short target names: ``jetson`` is the default Jetson profile (Orin NX, JetPack 6, one DLA core)."""


def profiles_folder() -> Traversable:
    """The folder holding the profile files: the package data folder ``isplit_export/profiles/``."""
    return importlib.resources.files("isplit_export").joinpath("profiles")


def profile_files() -> dict[str, Traversable]:
    """Each profile's file by target name (the file name without ``.json``), sorted by name."""
    folder = profiles_folder()
    files = {e.name[: -len(".json")]: e for e in folder.iterdir() if e.name.endswith(".json") and e.is_file()}
    if not files:
        raise BadInputError(f"no target profiles found in {folder} (reinstall isplit-export)")
    return dict(sorted(files.items()))


def target_names() -> list[str]:
    """Every target name accepted: profile names and aliases, sorted."""
    return sorted([*profile_files(), *ALIASES])


def profile_name(name: str) -> str:
    """The profile file name of target ``name`` (an alias resolved); an unknown name lists the valid ones."""
    key = ALIASES.get(name, name)
    if key not in profile_files():
        raise BadInputError(
            f"unknown target {name!r}: choose one of {', '.join(target_names())} (isplit-export targets lists them)"
        )
    return key
