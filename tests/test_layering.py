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
