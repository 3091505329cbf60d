"""The import rule is the stage map: docs/architecture.md's layer list is pyproject's import-linter
contract, every module of the package is in a layer, and the import graph has no cycle."""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from typing import Any

import grimp

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "isplit_export"
NO_LAYER = {PACKAGE, f"{PACKAGE}.jobs", f"{PACKAGE}.bottleneck"}
"""Package ``__init__`` modules that are no layer: the root (lazy public names), ``jobs`` and ``bottleneck``
(docstrings: their modules are layers of their own)."""


def _toml() -> dict[str, Any]:
    try:
        tomllib = importlib.import_module("tomllib")
    except ModuleNotFoundError:  # Python 3.10: import-linter depends on tomli there
        tomllib = importlib.import_module("tomli")
    data: dict[str, Any] = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return data


def doc_layers() -> list[list[str]]:
    """The layer list of docs/architecture.md's import rule: its first indented block, top to bottom."""
    text = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    lines = text.split("## The import rule", 1)[1].splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("    "))
    layers = []
    for line in lines[first:]:
        if not line.startswith("    "):
            break
        names = re.split(r"\s{2,}", line.strip(), maxsplit=1)[0]
        layers.append([f"{PACKAGE}.{name.strip()}" for name in names.split("|")])
    return layers


def pyproject_layers() -> list[list[str]]:
    """pyproject's layers, one list of modules each; an optional layer's parentheses dropped."""
    (contract,) = _toml()["tool"]["importlinter"]["contracts"]
    assert contract["type"] == "layers"
    return [[name.strip().strip("()") for name in layer.split("|")] for layer in contract["layers"]]


def _graph(exclude_type_checking_imports: bool) -> grimp.ImportGraph:
    return grimp.build_graph(
        PACKAGE, exclude_type_checking_imports=exclude_type_checking_imports, cache_dir=None
    )


def test_pyproject_layers_are_the_documented_stage_map() -> None:
    doc, toml = doc_layers(), pyproject_layers()
    assert len(doc) > 20, "the layer list of docs/architecture.md was not found"
    departures = [
        f"layer {i + 1}: doc {' | '.join(d)!r} != pyproject {' | '.join(t)!r}"
        for i, (d, t) in enumerate(zip(doc, toml, strict=False))
        if d != t
    ]
    assert not departures and len(doc) == len(toml), (
        "\n".join(departures) or f"{len(doc)} != {len(toml)} layers"
    )


def test_every_module_is_in_a_layer() -> None:
    layers = [name for layer in pyproject_layers() for name in layer]
    modules = set(_graph(True).modules)
    unplaced = sorted(
        m
        for m in modules
        if m not in NO_LAYER and not any(m == name or m.startswith(name + ".") for name in layers)
    )
    assert not unplaced, f"modules in no layer of the import rule (docs/architecture.md): {unplaced}"
    assert modules >= NO_LAYER


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph.modules):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.find_modules_directly_imported_by(start))))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child)))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == node:
                        break
                if len(component) > 1:
                    found.append(sorted(component))
    return found


def test_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for module in ("p", "p.a", "p.b", "p.c"):
        graph.add_module(module)
    graph.add_import(importer="p.a", imported="p.b")
    graph.add_import(importer="p.b", imported="p.a")
    graph.add_import(importer="p.c", imported="p.a")
    assert _cycles(graph) == [["p.a", "p.b"]]


def test_no_import_cycle_type_checking_imports_included() -> None:
    cycles = _cycles(_graph(exclude_type_checking_imports=False))
    assert not cycles, "import cycles (TYPE_CHECKING imports included): " + "; ".join(
        " <-> ".join(c) for c in cycles
    )
