"""The shape of the code: dependencies point one way, the library stays free of the app, modules stay small.

Every module of ``sfrs_core`` and ``viz_app`` is parsed (not imported) and all its imports are
collected, those inside functions too: a function-level import is a dependency all the same.
"""
from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("sfrs_core", "viz_app")
MAX_LINES = 400
# Generated or vendored modules, exempt from MAX_LINES (relative paths, e.g. "viz_app/vendored.py")
LONG_MODULES_ALLOWED: frozenset[str] = frozenset()


@cache
def modules() -> dict[str, Path]:
    """Dotted module name -> file, for every module of PACKAGES (a package under its own name)."""
    found = {}
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            parts = list(path.relative_to(ROOT).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            found[".".join(parts)] = path
    return found


def imported_names(name: str, path: Path) -> set[str]:
    """Every absolute module name that ``name`` imports, anywhere in its file."""
    is_package = path.name == "__init__.py"
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against the importing module's package
                package = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join(package + ([base] if base else []))
            # `from pkg import sub` imports the module pkg.sub when there is one, else a name of pkg
            names.update(f"{base}.{a.name}" if f"{base}.{a.name}" in modules() else base for a in node.names)
    return names


def owner(imported: str) -> str | None:
    """The module of ours that an import lands on: the longest known prefix of its name, if any."""
    parts = imported.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in modules():
            return ".".join(parts[:end])
    return None


@cache
def graph() -> dict[str, list[str]]:
    """Module -> the modules of ours it imports (only the named module, not its packages' __init__)."""
    edges = {}
    for name, path in modules().items():
        targets = {owner(imported) for imported in imported_names(name, path)}
        edges[name] = sorted(target for target in targets if target and target != name)
    return edges


def find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """One import circle as a path (first module repeated at the end), or None: a depth-first search."""
    done: set[str] = set()
    path: list[str] = []  # the modules being visited, in order: a neighbour on it closes a circle

    def visit(node: str) -> list[str] | None:
        path.append(node)
        for neighbour in edges.get(node, ()):
            if neighbour in path:
                return path[path.index(neighbour):] + [neighbour]
            if neighbour not in done and (cycle := visit(neighbour)):
                return cycle
        path.pop()
        done.add(node)
        return None

    for start in sorted(edges):
        if start not in done and (cycle := visit(start)):
            return cycle
    return None


def test_the_graph_sees_function_level_and_relative_imports(tmp_path):
    source = tmp_path / "generate.py"
    source.write_text("def f():\n    from .config import X\n    from .. import dataset\n    import viz_app.state\n"
                      "    from ..dataset import PlaceSplit\n    from .. import DatasetError\n")
    assert imported_names("sfrs_core.data.synthcity.generate", source) == {
        "sfrs_core.data.synthcity.config", "sfrs_core.data.dataset", "viz_app.state", "sfrs_core.data"}
    assert "sfrs_core.data.synthcity.config" in graph()["sfrs_core.data.synthcity"]  # an __init__'s own edges
    assert find_cycle({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": ["b"], "b": [], "c": ["a", "b"]}) is None


def test_no_import_cycle():
    cycle = find_cycle(graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_library_does_not_import_the_app():
    offenders = [f"{name} imports {imported}" for name, path in modules().items() if name.startswith("sfrs_core")
                 for imported in sorted(imported_names(name, path))
                 if imported.split(".")[0] in {"viz_app", "streamlit"}]
    assert not offenders, "sfrs_core must not depend on the app:\n" + "\n".join(offenders)


def test_no_module_over_line_limit():
    too_long = {str(path.relative_to(ROOT)): n for path in modules().values()
                if (n := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
                and str(path.relative_to(ROOT)) not in LONG_MODULES_ALLOWED}
    assert not too_long, f"modules over {MAX_LINES} lines (split them): {too_long}"
