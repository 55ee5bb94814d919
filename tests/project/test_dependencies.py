"""pyproject.toml tells the truth: every third-party module the project imports is declared,
and every declared distribution is imported (or named at run time, with the reason written
beside it in pyproject.toml)."""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNTIME_PACKAGES = ["actors", "coordinator", "models", "serve_app.py"]
TEST_PACKAGES = ["tests", "bench"]
# Declared but never imported by name: each is reached through another library at run time.
NAMED_AT_RUN_TIME = {
    "aiosqlite": "SQLAlchemy loads it for sqlite+aiosqlite:// URLs",
    "python-multipart": "FastAPI parses forms and uploads with it",
    "accelerate": "diffusers uses it to load weights with little memory",
    "pytest-timeout": "a pytest plugin (the timeout setting in pyproject.toml)",
    "moto": "tests start `python -m moto.server`",
}
OWN = {"actors", "coordinator", "models", "serve_app", "tests", "bench"}


def _imports(paths: list[str]) -> set[str]:
    found: set[str] = set()
    for entry in paths:
        root = REPO / entry
        for path in [root] if root.is_file() else root.rglob("*.py"):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if isinstance(node, ast.Import):
                    found.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                    found.add(node.module.split(".")[0])
    local = {path.stem for entry in paths if (REPO / entry).is_dir()
             for path in (REPO / entry).rglob("*.py")}  # scripts importing their siblings
    return {name for name in found
            if name not in OWN and name not in local and name not in sys.stdlib_module_names and name != "__future__"}


def _declared(group: str | None) -> set[str]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    entries = project["dependencies"] if group is None else project["optional-dependencies"][group]
    return {_normalise(re.match(r"[A-Za-z0-9_.\-]+", entry).group(0)) for entry in entries}


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _distributions(module: str) -> set[str]:
    """The distributions that install ``module``; for one not installed here (an extra that
    test runs leave out, like ``bench``'s locust), the distribution of the module's name."""
    installed = importlib.metadata.packages_distributions().get(module)
    return {_normalise(name) for name in installed} if installed else {_normalise(module)}


def test_every_imported_module_is_declared():
    runtime, test = _declared(None), _declared("test") | _declared("bench")
    undeclared = {module for module in _imports(RUNTIME_PACKAGES)
                  if not _distributions(module) & runtime}
    assert not undeclared, f"imported by the service but not in dependencies: {undeclared}"
    undeclared_in_tests = {module for module in _imports(TEST_PACKAGES)
                           if not _distributions(module) & (runtime | test)}
    assert not undeclared_in_tests, f"imported by tests/bench but not declared: {undeclared_in_tests}"


def test_every_declared_distribution_is_used():
    imported = {dist for module in _imports(RUNTIME_PACKAGES + TEST_PACKAGES)
                for dist in _distributions(module)}
    unused = (_declared(None) | _declared("test") | _declared("bench")) - imported - set(NAMED_AT_RUN_TIME)
    assert not unused, f"declared but never imported: {unused}"
