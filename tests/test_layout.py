"""The code's layout holds: no import circles, no import against the layer order, a lazy public API."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "ser_batch"

#: Layers in order: a module may import its own layer and the ones before it, never a later one.
LAYERS = ("contracts", "audio", "features", "data", "models", "inference", "reports", "cluster", "pipeline", "demo",
          "cli")
CONTRACTS = {"ser_batch", "ser_batch.errors", "ser_batch.config", "ser_batch.config_rules", "ser_batch.schema",
             "ser_batch.augmentations"}


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """Every ser_batch module ``name`` imports, at module level or inside functions."""
    found = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if candidate in known else base)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known and m != name}


def layer(name: str) -> int:
    if name in CONTRACTS:
        return 0
    return LAYERS.index(name.split(".")[1])


def graph() -> dict[str, set[str]]:
    found = modules()
    return {name: imports_of(name, path, set(found)) for name, path in found.items()}


def test_every_module_sits_in_a_layer_folder() -> None:
    loose = sorted(n for n in modules() if n.count(".") == 1 and n not in CONTRACTS
                   and n.split(".")[1] not in LAYERS)
    assert loose == []


def test_no_import_goes_against_the_layers() -> None:
    edges = graph()
    against = sorted(f"{a} -> {b}" for a, deps in edges.items() if a != "ser_batch"
                     for b in deps if layer(b) > layer(a))
    assert against == []


def test_no_import_circles() -> None:
    edges = graph()
    # Tarjan's strongly connected components: a circle is a component of two or more modules.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    circles: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                circles.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    assert circles == []


def test_the_library_never_imports_click_outside_the_cli() -> None:
    offenders = sorted(n for n, p in modules().items() if not n.startswith("ser_batch.cli")
                       and any(isinstance(node, (ast.Import, ast.ImportFrom)) and "click" in
                               [getattr(node, "module", None), *[a.name for a in node.names]]
                               for node in ast.walk(ast.parse(p.read_text(encoding="utf-8")))))
    assert offenders == []


def test_the_public_api_is_lazy_and_complete() -> None:
    import ser_batch

    for name in ser_batch.__all__:
        assert getattr(ser_batch, name) is not None, name
    with pytest.raises(AttributeError):
        ser_batch.no_such_thing  # noqa: B018
    # Importing the package imports none of the heavy layers.
    code = ("import sys, ser_batch; heavy = [m for m in ('ray', 'librosa', 'tensorflow', 'ser_batch.pipeline.score') "
            "if m in sys.modules]; print(heavy)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "[]"
