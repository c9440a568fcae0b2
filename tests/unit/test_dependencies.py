"""Every third-party import is declared in pyproject.toml: the serving code's among the base dependencies (what
`make serve` and the Bentos install), everything else's in some extra, or (the MLServer peer of `make bench-v2`,
which cannot share an environment with the rest) in requirements/bench-v2.txt."""

from __future__ import annotations

import ast
import sys
from importlib.metadata import packages_distributions

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT, requirement_lines

tomllib = pytest.importorskip("tomllib")  # Python 3.11+
FIRST_PARTY = {"service", "training", "harness", "benchmarks", "accuracy", "gpu", "loadtests", "deploy", "tests"}
# Imported only where they exist: onnxruntime-gpu's CUDA wheels (gpu extra) and locust's own sibling module.
CONDITIONAL = {"locustfile"}


def top_level_imports(folder: str) -> set[str]:
    found = set()
    for path in (ROOT / folder).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                found.add(node.module.split(".")[0])
    return found - FIRST_PARTY - CONDITIONAL - set(sys.stdlib_module_names)


def distributions(imports: set[str]) -> set[str]:
    """The distributions that provide these import names (pillow for PIL, ...): the installed ones' own say, else
    the import name itself (an extra that `make test` does not install, such as bench's litserve)."""
    providers = packages_distributions()
    return {dist.lower().replace("_", "-") for name in imports for dist in providers.get(name, [name])}


def declared(requirements: list[str]) -> set[str]:
    return {Requirement(r).name.lower().replace("_", "-") for r in requirements}


def project() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]


def test_serving_imports_are_base_dependencies():
    needed = distributions(top_level_imports("service"))
    assert needed - declared(project()["dependencies"]) == set()


def test_every_import_is_declared_somewhere():
    spec = project()
    everything = declared(spec["dependencies"]).union(*(declared(r) for r in spec["optional-dependencies"].values()))
    everything |= declared(requirement_lines(ROOT / "requirements" / "bench-v2.txt"))
    needed = set()
    for folder in ("training", "harness", "benchmarks", "accuracy", "gpu", "loadtests", "deploy", "tests"):
        needed |= distributions(top_level_imports(folder))
    assert needed - everything == set()
