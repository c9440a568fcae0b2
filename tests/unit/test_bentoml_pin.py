"""The one BentoML internal the service relies on, and the pin that keeps it there; and `python -m bentoml`, which
the harness runs where no `bentoml` script stands beside the interpreter.

service/api_document.py replaces a function of BentoML's private OpenAPI module. So BentoML is pinned to one
version in every install path (pyproject.toml, the Bentos' requirements), and these tests fail, saying what to
revisit, when an upgrade moves or changes what the patch touches."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from importlib.metadata import version

import pytest
from packaging.requirements import Requirement

from tests.conftest import ROOT


def pins() -> dict[str, str]:
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    found = {}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for where, lines in {
        "pyproject.toml": project,
        "requirements/serve.txt": (ROOT / "requirements" / "serve.txt").read_text().splitlines(),
        "requirements/serve-gpu.txt": (ROOT / "requirements" / "serve-gpu.txt").read_text().splitlines(),
    }.items():
        (spec,) = [Requirement(line) for line in lines if line.startswith("bentoml")]
        found[where] = str(spec.specifier)
    return found


def test_bentoml_is_pinned_to_the_installed_version_everywhere():
    installed = version("bentoml")
    assert set(pins().values()) == {f"=={installed}"}, (
        f"BentoML {installed} is installed but the pins say {pins()}: pin one version everywhere, and run these "
        "tests after an upgrade (service/api_document.py patches a private BentoML function)"
    )


def test_the_private_openapi_generator_is_still_there_and_corrected():
    module = importlib.import_module("_bentoml_sdk.service.openapi")
    assert callable(getattr(module, "generate_spec", None)), (
        "BentoML no longer has _bentoml_sdk.service.openapi.generate_spec: revisit service/api_document.py"
    )
    from service.app import DigitService  # applies the correction at import

    spec = DigitService.openapi_spec.asdict()  # a property, generated afresh on each access
    detail = spec["components"]["schemas"]["InvalidArgument"]["properties"]["detail"]
    assert "oneOf" in detail, f"the InvalidArgument correction no longer applies (detail is {detail})"


def test_bentoml_runs_as_a_module_where_no_script_stands_beside_python():
    """harness/server.py runs `python -m bentoml` where an install put no `bentoml` script beside the interpreter
    (pip --target, as on the lent GPU machine)."""
    done = subprocess.run(
        [sys.executable, "-m", "bentoml", "--version"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "BENTOML_DO_NOT_TRACK": "true"},
    )
    assert done.returncode == 0 and version("bentoml") in done.stdout, done.stdout + done.stderr
