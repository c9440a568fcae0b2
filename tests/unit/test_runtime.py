import json
import shutil
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest

from service.activity import Activity
from service.config import ConfigError, Settings, usable_cores
from service.contract import INPUT, ModelLoadError, read_card
from service.pipeline import Pipeline
from service.routes import untraced
from service.runtime import (
    CPU,
    CUDA,
    ModelRuntime,
    cache_key,
    in_fixed_batches,
    optimised_session,
    with_options,
)
from tests.conftest import MODEL, ROOT


def test_shipped_model_loads_on_cpu():
    runtime = ModelRuntime(MODEL, provider="cpu")
    assert runtime.provider == "CPUExecutionProvider"
    probs = runtime.probabilities(np.zeros((3, 28, 28), np.uint8))
    assert probs.shape == (3, 10)
    np.testing.assert_allclose(probs.sum(1), 1, rtol=1e-5)
    assert runtime.describe()["sha256"] == json.loads(MODEL.with_suffix(".json").read_text())["sha256"]


class Recorded:
    """A session that records the batch size of every call."""

    def __init__(self, session: ort.InferenceSession) -> None:
        self.session, self.sizes = session, []

    def run(self, outputs, feeds):
        self.sizes.append(len(feeds[INPUT]))
        return self.session.run(outputs, feeds)


def test_on_cuda_every_call_holds_one_fixed_number_of_images():
    """ONNX Runtime's CUDA convolutions plan again at every new input shape (docs/gpu.md): on CUDA the runtime
    pads each batch, or splits it, to `cuda_batch` images, and answers for the images it was given."""
    runtime = ModelRuntime(MODEL, provider="cpu", cuda_batch=8)
    assert runtime.fixed_batch == 0  # the CPU plans nothing per shape: batches run as they come
    inputs = runtime.model_input(np.random.default_rng(0).integers(0, 256, (21, 28, 28), dtype=np.uint8))
    recorded = Recorded(runtime.session)
    for count in (1, 7, 8, 9, 21):
        expected = runtime.logits(inputs[:count])
        np.testing.assert_allclose(in_fixed_batches(recorded, inputs[:count], 8), expected, atol=1e-5)
    assert set(recorded.sizes) == {8} and len(recorded.sizes) == 1 + 1 + 1 + 2 + 3
    runtime.fixed_batch = 8  # as on CUDA: through logits too
    np.testing.assert_allclose(runtime.logits(inputs[:3]), runtime.alone.run(None, {INPUT: inputs[:3]})[0], atol=1e-5)


def test_a_lone_request_gets_a_session_of_its_own_on_more_threads_that_do_not_spin():
    runtime = ModelRuntime(MODEL, provider="cpu", threads=1, alone_threads=2)
    alone = runtime.alone.get_session_options()
    assert runtime.alone is not runtime.session and alone.intra_op_num_threads == 2
    assert alone.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert alone.get_session_config_entry("session.disable_prepacking") == "1"
    inputs = runtime.model_input(np.random.default_rng(0).integers(0, 256, (3, 28, 28), dtype=np.uint8))
    np.testing.assert_allclose(runtime.logits(inputs, alone=True), runtime.logits(inputs), atol=1e-4)
    # No more threads than the batches get: no second session.
    same = ModelRuntime(MODEL, provider="cpu", threads=2, alone_threads=2)
    assert same.alone is same.session


def test_a_lone_image_takes_the_idle_cores_only_while_the_other_workers_are_idle(tmp_path, monkeypatch):
    settings = Settings.from_env({"DIGITSERVE_PROVIDER": "cpu", "DIGITSERVE_ALONE_THREADS": "2"})
    pipeline, other = Pipeline(settings, activity=Activity(tmp_path, 1)), Activity(tmp_path, 2)
    calls = []
    monkeypatch.setattr(pipeline.runtime, "logits", lambda inputs, alone=False: calls.append(alone))
    inputs = np.zeros((1, 1, 28, 28), np.float32)
    pipeline.infer_alone(inputs)
    pipeline.infer_alone(np.zeros((2, 1, 28, 28), np.float32))  # more than one image: the batch session
    other.set(1)  # the other worker takes a request
    pipeline.infer_alone(inputs)
    assert calls == [True, False, False]


def test_lone_request_threads_default_to_the_usable_cores_up_to_4(monkeypatch):
    monkeypatch.delenv("DIGITSERVE_ALONE_THREADS", raising=False)
    assert Settings.from_env().alone_threads == min(4, usable_cores())
    monkeypatch.setenv("DIGITSERVE_ALONE_THREADS", "0")
    assert Settings.from_env().alone_threads == 0


def test_missing_model_is_a_clear_error(tmp_path):
    with pytest.raises(ModelLoadError, match=r"not found.*DIGITSERVE_MODEL"):
        read_card(tmp_path / "absent.onnx")


def test_a_changed_file_fails_the_sha256_check(tmp_path):
    model = tmp_path / "mnist_cnn.onnx"
    shutil.copy(MODEL, model)
    shutil.copy(MODEL.with_suffix(".json"), model.with_suffix(".json"))
    with model.open("ab") as f:
        f.write(b"\0")
    with pytest.raises(ModelLoadError, match="sha256"):
        read_card(model)


def test_missing_card_is_a_clear_error(tmp_path):
    model = tmp_path / "mnist_cnn.onnx"
    shutil.copy(MODEL, model)
    with pytest.raises(ModelLoadError, match="card"):
        read_card(model)


@pytest.mark.skipif("CUDAExecutionProvider" in ort.get_available_providers(), reason="a CUDA build is installed")
def test_cuda_without_a_gpu_build_refuses_to_start():
    with pytest.raises(ModelLoadError, match="DIGITSERVE_PROVIDER=cuda"):
        ModelRuntime(MODEL, provider="cuda")


def test_tf32_off_is_asked_of_the_cuda_provider_alone():
    assert with_options([CUDA, CPU], tf32=True) == [CUDA, CPU]  # ONNX Runtime's default: TF32 on
    assert with_options([CUDA, CPU], tf32=False) == [(CUDA, {"use_tf32": "0"}), CPU]
    assert with_options([CPU], tf32=False) == [CPU]
    assert with_options([CUDA, CPU], tf32=True, enable_cuda_graph="1") == [(CUDA, {"enable_cuda_graph": "1"}), CPU]
    card = {"sha256": "0" * 64}
    assert cache_key(card, with_options([CUDA, CPU], tf32=False)) == cache_key(card, [CUDA, CPU])


def test_settings_from_environment(monkeypatch):
    monkeypatch.setenv("DIGITSERVE_PROVIDER", "CPU")
    monkeypatch.setenv("DIGITSERVE_MAX_BATCH", "8")
    settings = Settings.from_env()
    assert (settings.provider, settings.max_batch, settings.max_bytes) == ("cpu", 8, 12_000_000)
    assert settings.cuda_batch == 64  # on CUDA every call holds the largest batch: the batcher's 64 here
    assert Settings.from_env({"DIGITSERVE_MAX_BATCH": "256"}).cuda_batch == 256  # or one request's
    monkeypatch.setenv("DIGITSERVE_PROVIDER", "tpu")
    with pytest.raises(ConfigError, match="auto, cuda or cpu"):
        Settings.from_env()
    monkeypatch.setenv("DIGITSERVE_PROVIDER", "auto")
    monkeypatch.setenv("DIGITSERVE_WORKERS", "zero")
    with pytest.raises(ConfigError, match="not an integer"):
        Settings.from_env()


def test_min_confidence_is_off_by_default_and_a_fraction(monkeypatch):
    assert Settings.from_env().min_confidence == 0
    monkeypatch.setenv("DIGITSERVE_MIN_CONFIDENCE", "0.9")
    assert Settings.from_env().min_confidence == 0.9
    for wrong, message in (("1.5", "between 0 and 1"), ("-0.1", "at least 0"), ("high", "not a number")):
        monkeypatch.setenv("DIGITSERVE_MIN_CONFIDENCE", wrong)
        with pytest.raises(ConfigError, match=message):
            Settings.from_env()


def test_switches_are_true_or_false(monkeypatch):
    settings = Settings.from_env()
    assert (settings.tracing, settings.access_log, settings.cuda_tf32) == (False, True, True)
    monkeypatch.setenv("DIGITSERVE_TRACING", "TRUE")
    monkeypatch.setenv("DIGITSERVE_ACCESS_LOG", "0")
    monkeypatch.setenv("DIGITSERVE_CUDA_TF32", "false")
    settings = Settings.from_env()
    assert (settings.tracing, settings.access_log, settings.cuda_tf32) == (True, False, False)
    monkeypatch.setenv("DIGITSERVE_TRACING", "maybe")
    with pytest.raises(ConfigError, match="DIGITSERVE_TRACING='maybe': use true or false"):
        Settings.from_env()


@pytest.mark.parametrize("tracing", ["false", "true"])
def test_prediction_routes_are_traced_only_when_asked_and_bentoml_request_metrics_are_off(tracing):
    code = "import json, service.app as s; print(json.dumps(s.DigitService.config))"
    env = {"BENTOML_DO_NOT_TRACK": "true", "PATH": "/usr/bin:/bin", "DIGITSERVE_TRACING": tracing}
    config = json.loads(subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True).stdout)
    excluded = config["tracing"]["excluded_urls"]
    assert excluded == [] if tracing == "true" else excluded == untraced()
    assert config["metrics"] == {"enabled": False}


def test_the_service_never_imports_torch_or_opencv():
    code = "import sys, service.app; sys.exit(bool({'torch', 'training', 'cv2'} & set(sys.modules)))"
    env = {"BENTOML_DO_NOT_TRACK": "true", "PATH": "/usr/bin:/bin"}
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env).returncode == 0


def test_optimised_graph_is_saved_once_and_reused(tmp_path):
    first = ModelRuntime(MODEL, provider="cpu", cache_dir=tmp_path)
    (saved,) = tmp_path.glob("*.onnx")
    stamp = saved.stat().st_mtime_ns
    second = ModelRuntime(MODEL, provider="cpu", cache_dir=tmp_path)
    assert saved.stat().st_mtime_ns == stamp, "the second start optimised again instead of reusing the graph"
    inputs = np.random.default_rng(0).normal(size=(8, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(first.logits(inputs), second.logits(inputs), atol=1e-6)
    uncached = ModelRuntime(MODEL, provider="cpu").logits(inputs)
    np.testing.assert_allclose(uncached, first.logits(inputs), atol=1e-6)


def test_a_graph_optimised_after_a_cuda_fallback_is_saved_as_cpu(tmp_path):
    """Asked for CUDA where it cannot start, ONNX Runtime runs on CPU: the saved graph must not claim CUDA."""
    card = read_card(MODEL)
    session, _ = optimised_session(MODEL, card, ort.SessionOptions(), [CUDA, CPU], tmp_path)
    if session.get_providers()[0] == CUDA:
        pytest.skip("CUDA started here: no fallback to observe")
    (saved,) = tmp_path.glob("*.onnx")
    assert saved.name.endswith("-CPU.onnx"), saved.name
