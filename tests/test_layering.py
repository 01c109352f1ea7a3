"""Imports run one way: prompts <- harness_tasks <- trainer, datagen <- cotharness."""

import ast

import pytest

from conftest import REPO

# package -> the project packages it may import
ALLOWED = {
    "prompts": set(),
    "harness_tasks": {"prompts"},
    "trainer": {"prompts", "harness_tasks"},
    "datagen": {"prompts", "harness_tasks"},
    "cotharness": {"prompts", "harness_tasks", "trainer", "datagen"},
}


def _imports(path):
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_imports_run_one_way(package):
    wrong = []
    for path in sorted((REPO / package).rglob("*.py")):
        for name in _imports(path):
            top = name.split(".")[0]
            if top in ALLOWED and top != package and top not in ALLOWED[package]:
                wrong.append(f"{path.relative_to(REPO)} imports {name}")
    assert not wrong, "\n".join(wrong)


def _module_graph() -> dict[str, set[str]]:
    """module -> the project modules it imports (at any depth of the file: a lazy import inside a
    function ties two modules as much as one at the top)."""
    files = {}
    for package in ALLOWED:
        for path in (REPO / package).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph = {}
    for module, path in files.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                # `from pkg import mod` imports the module pkg.mod where there is one
                names = [f"{node.module}.{alias.name}" if f"{node.module}.{alias.name}" in files else node.module
                         for alias in node.names]
            edges |= {name for name in names if name in files and name != module}
        graph[module] = edges
    return graph


def test_no_import_circles():
    """Strongly connected groups of modules (Tarjan): each must be a single module."""
    graph, index, low, stack, on_stack, circles = _module_graph(), {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                circles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert len(graph) > 50  # the walk found the project's modules
    assert not circles, circles
