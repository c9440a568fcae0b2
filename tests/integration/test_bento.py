"""The Bento and its container recipe, proven without a Docker engine: build it into a temporary BentoML home,
serve it from the store (from a folder that is not the repo), classify real digits; read the generated Dockerfile.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest
import yaml

from deploy.container.check import infer_over_grpc
from harness.digits import as_png
from harness.server import BENTOML, log_with, serving
from tests.conftest import ROOT
from training.data import load_split

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def build(bentofile: str, home: Path) -> Path:
    """`bentoml build -f BENTOFILE` into `home`; the path of the built Bento."""
    env = {**os.environ, "BENTOML_HOME": str(home), "BENTOML_DO_NOT_TRACK": "true"}
    done = subprocess.run(
        [*BENTOML, "build", "-f", bentofile, "--output", "tag"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    name, version = re.search(r"__tag__:(\S+):(\S+)", done.stdout).groups()
    return home / "bentos" / name / version


def requirement_names(bento: Path) -> dict[str, str]:
    lines = (bento / "env" / "python" / "requirements.txt").read_text().splitlines()
    pins = [line.split(";")[0].strip() for line in lines if "==" in line and not line.startswith(("#", "-"))]
    return {re.split(r"[\[=]", pin)[0].lower(): pin for pin in pins}


@pytest.fixture(scope="module")
def home(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("bentoml_home")


@pytest.fixture(scope="module")
def cpu_bento(home) -> Path:
    return build("bentofile.yaml", home)


def test_the_bento_packs_the_service_and_the_model_and_nothing_else(cpu_bento):
    files = {p.relative_to(cpu_bento / "src").as_posix() for p in (cpu_bento / "src").rglob("*") if p.is_file()}
    code = {f for f in files if f.startswith("service/")}
    assert "service/app.py" in code and "service/api.py" in code and "service/static/index.html" in code
    assert "service/read_weights.json" in code  # /read's learned weights: the service does not start without them
    assert all(f.endswith(".py") or f.startswith("service/static/") or f == "service/read_weights.json" for f in code)
    assert not {f for f in files if f.split("/")[0] in ("tests", "training", "data", "runs", ".venv", "docs")}
    models = {
        f"models/{m}.{ext}"
        for m in ("mnist_cnn", "mnist_cnn_int8", "mnist_cnn_fp16", "line_reader")
        for ext in ("onnx", "json")
    }
    assert {
        f for f in files if f.startswith("models/")
    } == models  # the three variants and the line reader, nothing else


def test_cpu_image_recipe(cpu_bento):
    dockerfile = (cpu_bento / "env" / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert "uv venv --python 3.11" in dockerfile
    assert "USER bentoml" in dockerfile and "EXPOSE 3000" in dockerfile
    assert "ENV DIGITSERVE_PROVIDER=$DIGITSERVE_PROVIDER" in dockerfile
    entrypoint = (cpu_bento / "env" / "docker" / "entrypoint.sh").read_text()
    assert 'set -- bentoml serve "$@" "$BENTO_PATH"' in entrypoint  # `docker run IMAGE` serves the Bento

    packages = requirement_names(cpu_bento)
    assert packages["onnxruntime"].startswith("onnxruntime==")
    assert packages["bentoml"].startswith("bentoml==")
    assert "onnxruntime-gpu" not in packages and "torch" not in packages and "onnx" not in packages
    assert all("==" in pin for pin in packages.values()), "every package is locked to a version"

    bento = yaml.safe_load((cpu_bento / "bento.yaml").read_text())
    assert bento["services"][0]["config"]["workers"] == "cpu_count"  # resolved where it runs, not here
    assert {"name": "DIGITSERVE_PROVIDER", "value": "cpu", "stage": "all"} in bento["envs"]
    assert {"name": "DIGITSERVE_DRAIN_SECONDS", "value": "5", "stage": "all"} in bento["envs"]  # drains on SIGTERM


def test_served_from_the_store_it_classifies_real_digits(cpu_bento, home, tmp_path, mnist_dir):
    test = load_split("test", mnist_dir)
    env = {"BENTOML_HOME": str(home), "DIGITSERVE_WORKERS": "1"}
    with (
        (tmp_path / "serve.log").open("w+") as log,
        serving(env, target=f"digitserve:{cpu_bento.name}", cwd=tmp_path, log=log) as server,
    ):
        url = server.url
        grpc_digits = infer_over_grpc(server.grpc)  # the gRPC server comes with the Bento, no extra step
        with httpx.Client(base_url=url, timeout=30) as client:
            digits = [
                client.post("/classify", files={"image": ("d.png", as_png(image))}).json()["digit"]
                for image in test.images[:50]
            ]
            info = client.get("/model").json()
            page = client.get("/ui/")
        model = cpu_bento / "src" / "models" / "mnist_cnn.onnx"
        text = log_with(log, f"from {model} on CPUExecutionProvider")
    assert sum(d == label for d, label in zip(digits, test.labels[:50], strict=True)) >= 49
    assert grpc_digits >= 62  # of 64
    assert info["provider"] == "CPUExecutionProvider"
    assert page.status_code == 200 and "<canvas" in page.text  # the draw-a-digit page travels too
    # The model came out of the Bento, not the repo.
    assert f"from {model} on CPUExecutionProvider" in text, text[-3000:]


def test_gpu_image_recipe(home):
    gpu_bento = build("bentofile.gpu.yaml", home)
    packages = requirement_names(gpu_bento)
    assert packages["onnxruntime-gpu"].startswith("onnxruntime-gpu==")
    assert "onnxruntime-gpu[cuda,cudnn]" in (gpu_bento / "env" / "python" / "requirements.in").read_text()
    assert "onnxruntime" not in packages, "onnxruntime and onnxruntime-gpu must never be installed together"
    assert any(name.startswith("nvidia-cudnn") for name in packages), "cuDNN comes as a pip wheel"
    assert any(name.startswith("nvidia-cuda-runtime") for name in packages), "CUDA comes as pip wheels"
    assert "torch" not in packages

    dockerfile = (gpu_bento / "env" / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)  # the CUDA libraries come from pip
    assert "ARG DIGITSERVE_PROVIDER=auto" in dockerfile  # CUDA with a GPU, CPU (and a warning) without
    bento = yaml.safe_load((gpu_bento / "bento.yaml").read_text())
    assert bento["name"] == "digitserve-gpu" and bento["labels"]["accelerator"] == "gpu"
