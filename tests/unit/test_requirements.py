"""The Bentos' pinned packages stay the serving dependencies of pyproject.toml, for CPU and GPU alike."""

from __future__ import annotations

import re

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT


def names(lines: list[str]) -> set[str]:
    return {Requirement(line).name.lower() for line in lines if line.strip() and not line.startswith("#")}


def test_bento_requirements_pin_exactly_the_serving_dependencies():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    serving = names(project["dependencies"])
    cpu = (ROOT / "requirements" / "serve.txt").read_text().splitlines()
    gpu = (ROOT / "requirements" / "serve-gpu.txt").read_text().splitlines()
    assert names(cpu) == serving
    assert names(gpu) == serving - {"onnxruntime"} | {"onnxruntime-gpu"}
    for line in cpu + gpu:
        if line.strip() and not line.startswith("#"):
            assert re.search(r"==\d", line), f"not pinned: {line}"
    assert "torch" not in serving
