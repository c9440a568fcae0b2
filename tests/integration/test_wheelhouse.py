"""`make wheelhouse` and `make install WHEELHOUSE=dir`: fetch every serving wheel, then install and serve-import
them in a fresh environment with no package index."""

from __future__ import annotations

import json
import subprocess
import sys
import venv

import pytest

from tests.conftest import ROOT

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_requirements_of_each_flavour():
    from deploy.wheelhouse import requirements

    cpu, gpu, bare = requirements("cpu"), requirements("gpu"), requirements("gpu-no-cuda")
    assert any(r.startswith("onnxruntime==") for r in cpu) and not any("onnxruntime-gpu" in r for r in cpu)
    assert any(r.startswith("onnxruntime-gpu[cuda,cudnn]==") for r in gpu)
    assert any(r.startswith("onnxruntime-gpu==") for r in bare) and not any("[cuda" in r for r in bare)
    for flavour in (cpu, gpu, bare):
        assert any(r.startswith("setuptools") for r in flavour)  # to install the project itself offline


def test_wheelhouse_installs_with_no_index(tmp_path):
    house = tmp_path / "wheelhouse"
    subprocess.run([sys.executable, "deploy/wheelhouse.py", "--out", str(house)], cwd=ROOT, check=True, timeout=900)
    lock = (house / "lock.txt").read_text().splitlines()
    names = {line.split("==")[0] for line in lock if not line.startswith("#")}
    assert {"bentoml", "onnxruntime", "numpy", "pillow", "pillow-heif"} <= names
    assert "torch" not in names and "onnxruntime-gpu" not in names
    assert all("sha256:" in line for line in lock if not line.startswith("#"))

    env_dir = tmp_path / "env"
    venv.create(env_dir)  # without pip of its own: this pip installs into it (--python), as its own would
    python = env_dir / "bin" / "python"
    # --no-compile: no .pyc for the ~80 packages (the import check below compiles what it touches).
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet", "--no-compile", "--no-index"]
    pip += ["--find-links", str(house)]
    # No index, and no other wheel folder (this machine's pip.conf adds one): only the wheelhouse.
    isolated = {"PIP_CONFIG_FILE": "/dev/null", "PATH": "/usr/bin:/bin"}
    subprocess.run([*pip, "-r", str(house / "requirements.txt")], check=True, env=isolated, timeout=900)
    subprocess.run(
        [str(python), "-c", "import bentoml, onnxruntime, pillow_heif, PIL; print(onnxruntime.__version__)"],
        check=True,
        env=isolated,
        timeout=120,
    )
    # And the service's own request path (photos included: no OpenCV), imported from the repo, on what the
    # wheelhouse installed.
    check = "import json, service.preprocess, service.runtime as r; print(json.dumps(r.ort.get_available_providers()))"
    done = subprocess.run(
        [str(python), "-c", check], cwd=ROOT, env=isolated, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "CPUExecutionProvider" in json.loads(done.stdout)
