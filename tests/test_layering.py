"""The package's import structure: the contracts of `.importlinter` hold (`lint-imports`), no module imports an
underscore name of another, and no import cycle joins any of its modules."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "trl_grpo_ext"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _imported_from(module: str, path: Path, node: ast.ImportFrom) -> str:
    """The absolute name of the module `node` imports from."""
    if not node.level:
        return node.module or ""
    base = module.split(".")
    if path.name != "__init__.py":
        base = base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def private_imports(module: str, path: Path) -> list[str]:
    """`file:line: what` for every underscore name `module` takes from another module of the package: `from X import
    _name`, `import X._private`, or `mod._name` where `mod` is a module of the package bound by an import."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    where = path.relative_to(ROOT).as_posix()
    found, module_aliases = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _imported_from(module, path, node)
            if not source.startswith("trl_grpo_ext"):
                continue
            for alias in node.names:
                if _private(alias.name) or any(_private(part) for part in source.split(".")):
                    found.append(f"{where}:{node.lineno}: from {source} import {alias.name}")
                elif f"{source}.{alias.name}" in MODULES:
                    module_aliases.add(alias.asname or alias.name)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("trl_grpo_ext"):
                    if any(_private(part) for part in alias.name.split(".")):
                        found.append(f"{where}:{node.lineno}: import {alias.name}")
                    if alias.asname:
                        module_aliases.add(alias.asname)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in module_aliases
            and _private(node.attr)
        ):
            found.append(f"{where}:{node.lineno}: {node.value.id}.{node.attr}")
    return found


def test_no_module_imports_an_underscore_name_of_another():
    found = [line for module, path in MODULES.items() for line in private_imports(module, path)]
    assert not found, (
        "underscore names used across modules (make the helper public, with a docstring, or move it where both "
        "modules can import it):\n" + "\n".join(found)
    )


def test_the_scan_finds_underscore_imports(tmp_path, monkeypatch):
    """The scan above sees each form it refuses (and lets dunder names and public names through)."""
    text = (
        "from .common import _hidden, greedy_accuracy\n"
        "from .. import __version__, kit\n"
        "from ..experiment.runner import write_json\n"
        "import trl_grpo_ext.demos.tiny as tiny\n"
        "kit._cache_root()\n"
        "tiny._internal\n"
        "tiny.DemoSettings\n"
    )
    path = tmp_path / "trl_grpo_ext" / "demos" / "sample.py"
    path.parent.mkdir(parents=True)
    path.write_text(text)
    monkeypatch.setitem(globals(), "ROOT", tmp_path)
    found = private_imports("trl_grpo_ext.demos.sample", path)
    assert sorted(line.split(": ", 1)[1] for line in found) == [
        "from trl_grpo_ext.demos.common import _hidden",
        "kit._cache_root",
        "tiny._internal",
    ]


def _cycles(graph) -> list[list[str]]:
    """The strongly connected components of more than one module of an import graph (Tarjan, iterative)."""
    index, low, on_stack, stack, cycles = {}, {}, set(), [], []
    counter = 0
    for root in sorted(graph.modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
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
                    cycles.append(sorted(component))
    return cycles


def test_no_import_cycle_joins_modules_of_the_package():
    """Stricter than the `acyclic_siblings` contract, which compares siblings: a package's `__init__` and one of its
    own modules importing each other is a cycle too."""
    grimp = pytest.importorskip("grimp")
    sys.path.insert(0, str(ROOT))
    try:
        graph = grimp.build_graph("trl_grpo_ext", cache_dir=None)
    finally:
        sys.path.remove(str(ROOT))
    cycles = _cycles(graph)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)


def test_the_cycle_search_finds_a_cycle():
    class Graph:
        edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
        modules = set(edges)

        def find_modules_directly_imported_by(self, module):
            return self.edges[module]

    assert _cycles(Graph()) == [["a", "b", "c"]]


def _lint_imports() -> str | None:
    beside = Path(sys.executable).with_name("lint-imports")
    return str(beside) if beside.exists() else shutil.which("lint-imports")


@pytest.mark.skipif(_lint_imports() is None, reason="import-linter is not installed (pip install -e '.[dev]')")
def test_the_import_contracts_hold():
    result = subprocess.run(
        [_lint_imports(), "--no-cache", "--no-logo"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
