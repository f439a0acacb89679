"""The client examples use the server only over the wire.

import-linter (`lint-imports`, contracts in pyproject.toml) checks the layers
of the server's own packages; it cannot read client-examples/, which is no
importable package, so this test parses those files itself.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROJECT = {"server", "transport", "schema", "resolvers", "backends", "core", "tests"}


def imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_client_examples_import_nothing_from_the_project() -> None:
    files = sorted(
        path
        for path in (ROOT / "client-examples").rglob("*.py")
        if "node_modules" not in path.parts
    )
    assert files, "no Python client examples found"
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & PROJECT)
        for path in files
        if imported_roots(path) & PROJECT
    }
    assert offenders == {}
