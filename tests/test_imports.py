"""The import graph of amt_core: each module sits on the ones below it (no cycles), read with ``ast`` from
the source, so the test costs milliseconds and imports nothing.

Every ``import`` counts, at module level or inside a function (a lazy import still ties two files
together), except under ``if __name__ == "__main__":`` (a script's entry point, never imported).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "amt_core"

#: cycles that are known and have an owner; the tests fail on any other cycle
KNOWN: set[frozenset[str]] = set()  # cycles tolerated for now (none left)


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def _imports(path: Path, name: str, modules: dict[str, Path]) -> set[str]:
    """The amt_core modules that ``name`` imports (``from pkg import sub`` is an edge to ``pkg.sub`` only)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if (
                isinstance(child, ast.If)
                and isinstance(child.test, ast.Compare)
                and isinstance(child.test.left, ast.Name)
                and child.test.left.id == "__name__"
            ):
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names)
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    up = package.split(".")[: len(package.split(".")) - (child.level - 1)]
                    base = ".".join(up + ([base] if base else []))
                subs = {f"{base}.{a.name}" for a in child.names} & set(modules)
                found.update(subs if subs and len(subs) == len(child.names) else {base} | subs)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    return {m for m in found if m in modules and m != name}


def _cycles(graph: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[frozenset[str]] = []

    def connect(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = set()
            while True:
                w = stack.pop()
                component.add(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(frozenset(component))

    for v in sorted(graph):
        if v not in index:
            connect(v)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(path, name, modules) for name, path in modules.items()}


def test_the_reader_sees_imports_and_cycles():
    graph = _graph()
    assert "amt_core.model.presets" in graph["amt_core.model.inference"]  # module level
    assert "amt_core.model.network" in graph["amt_core.model.inference"]  # inside a function
    assert "amt_core.model.ddp" in graph["amt_core.model.train"]  # from amt_core.model import ddp
    assert "amt_core.model.cli" not in graph["amt_core.model.ddp"]  # only under __name__ == "__main__"
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [frozenset("abc")]


def test_model_modules_import_each_other_in_one_direction():
    cycles = [
        c for c in _cycles(_graph()) if c not in KNOWN and any(m.startswith("amt_core.model") for m in c)
    ]
    assert not cycles, f"import cycles in amt_core.model: {[sorted(c) for c in cycles]}"


def test_no_new_import_cycle_in_the_package():
    new = [sorted(c) for c in _cycles(_graph()) if c not in KNOWN]
    assert not new, f"import cycles: {new} (a module must sit on the ones below it)"


def test_an_area_of_the_cli_that_fails_to_import_is_an_error(monkeypatch):
    """``amt`` never drops a sub-command silently: an area module that cannot be imported raises."""
    from amt_core import cli

    monkeypatch.setattr(cli, "AREAS", (*cli.AREAS, "amt_core.no_such_area.cli"))
    with pytest.raises(ModuleNotFoundError, match="amt_core.no_such_area"):
        cli.build_parser()
    monkeypatch.undo()
    commands = cli.build_parser()._subparsers._group_actions[0].choices
    assert {"cohort", "validate", "import", "evaluate", "train", "predict", "run", "figures"} <= set(commands)
