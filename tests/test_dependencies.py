"""Every third-party module the project imports is declared in pyproject.toml:
the server's code by the project's dependencies (or the extra of its backend),
the tests by the `dev` extra, the benchmarks by the `bench` extra."""

from __future__ import annotations

import ast
import re
import sys
import tomllib
from collections.abc import Iterable, Iterator
from importlib.metadata import packages_distributions
from pathlib import Path

from tests.live import ROOT

PROJECT = {"backends", "core", "resolvers", "schema", "transport", "server", "tests", "bench"}
SERVER_CODE = ("server.py", "backends", "core", "resolvers", "schema", "transport")


def _normal(distribution: str) -> str:
    return re.sub(r"[-_.]+", "-", distribution).lower()


def _requirement_name(requirement: str) -> str:
    found = re.match(r"[A-Za-z0-9][A-Za-z0-9._-]*", requirement)
    if found is None:
        raise ValueError(f"not a requirement: {requirement!r}")
    return _normal(found.group())


def declared(*extras: str) -> set[str]:
    """The distributions the project's dependencies and `extras` name,
    with the project's own extras they include followed."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    own, optional = _normal(project["name"]), project.get("optional-dependencies", {})
    names: set[str] = set()
    todo, seen = [project["dependencies"], *(optional[e] for e in extras)], set(extras)
    while todo:
        for requirement in todo.pop():
            name = _requirement_name(requirement)
            if name != own:
                names.add(name)
                continue
            for extra in re.findall(r"[\w-]+", requirement.partition("[")[2]):
                if extra not in seen:
                    seen.add(extra)
                    todo.append(optional[extra])
    return names


def imported(paths: Iterable[Path]) -> Iterator[tuple[str, Path]]:
    """The top-level name of every absolute import in these files."""
    for path in paths:
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield alias.name.partition(".")[0], path
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                yield node.module.partition(".")[0], path


def python_files(*roots: str) -> list[Path]:
    files: list[Path] = []
    for root in roots:
        path = ROOT / root
        files.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return files


def undeclared(files: list[Path], distributions: set[str]) -> list[str]:
    """Modules imported by `files` that no declared distribution provides."""
    providers = packages_distributions()
    problems = []
    for module, path in imported(files):
        if module in PROJECT or module in sys.stdlib_module_names or module == "__future__":
            continue
        if (path.parent / f"{module}.py").exists():  # a script's sibling (bench/)
            continue
        provided_by = {_normal(d) for d in providers.get(module, ())}
        if not provided_by & distributions:
            where = path.relative_to(ROOT)
            problems.append(f"{module} ({where}; installed from {sorted(provided_by)})")
    return sorted(set(problems))


def test_the_server_imports_only_what_it_declares() -> None:
    # A backend's extra is needed only when that backend is used.
    assert undeclared(python_files(*SERVER_CODE), declared("redis", "nats", "postgres")) == []


def test_the_tests_and_benchmarks_import_only_what_they_declare() -> None:
    assert undeclared(python_files("tests"), declared("dev")) == []
    bench = [p for p in python_files("bench") if "node" not in p.parts]
    assert undeclared(bench, declared("bench")) == []


def test_an_undeclared_import_is_found() -> None:
    # graphql-core left out of the declared dependencies: its module shows up.
    without = declared("redis", "nats", "postgres") - {"graphql-core"}
    found = undeclared(python_files(*SERVER_CODE), without)
    assert any(problem.startswith("graphql (") for problem in found), found
