"""The int8 and fp16 variants: made from the shipped fp32 model for real, checked against the test set, carded,
refused when they fall short; the shipped ones match their cards; the service serves the one it is told to."""

from __future__ import annotations

import hashlib
import json
import shutil

import numpy as np
import onnx
import pytest

from harness.digits import as_png
from harness.in_process import in_process
from service.config import ConfigError, Settings
from service.contract import read_card, read_normalisation, to_model_input
from tests.conftest import MODEL
from training import variants
from training.data import load_split
from training.inference import cpu_session, evaluate, run_logits

pytestmark = pytest.mark.integration


@pytest.fixture
def fp32(tmp_path):
    for suffix in (".onnx", ".json"):
        shutil.copy(MODEL.with_suffix(suffix), tmp_path / f"mnist_cnn{suffix}")
    return tmp_path / "mnist_cnn.onnx"


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["int8", "fp16"])
def test_variant_is_made_checked_and_carded(fp32, mnist_dir, variant):
    card = variants.make_variant(fp32, variant, str(mnist_dir))
    out = fp32.with_name(f"mnist_cnn_{variant}.onnx")
    assert card["variant"] == variant and card["file"] == out.name
    assert card["sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert json.loads(out.with_suffix(".json").read_text()) == card
    assert card["derived_from"]["sha256"] == json.loads(fp32.with_suffix(".json").read_text())["sha256"]
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    assert meta["variant"] == variant and float(meta["normalisation_mean"]) == pytest.approx(0.1307)
    graph_inputs = onnx.load(str(out)).graph.input
    assert graph_inputs[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT  # clients send float32 still
    if variant == "int8":
        # The card's figure is what `python -m training evaluate` gives (one variant suffices: the same code
        # carded both, and fp16's 10,000 images take twice as long on a CPU).
        assert evaluate(out, str(mnist_dir))["accuracy"] == card["test_accuracy"]
        assert card["test_accuracy"] >= card["derived_from"]["test_accuracy"] - variants.MAX_INT8_DROP
        assert out.stat().st_size < 0.3 * fp32.stat().st_size
    else:
        assert card["predictions_changed_vs_fp32"] <= variants.MAX_FP16_CHANGED * 10_000


@pytest.mark.slow
def test_a_variant_that_falls_short_is_refused_and_not_written(fp32, mnist_dir, monkeypatch):
    monkeypatch.setattr(variants, "MAX_INT8_DROP", -0.01)  # demand 1 pp better than fp32: impossible
    monkeypatch.setattr(variants, "predict_test_set", first_thousand)  # the refusal is under test, not a figure
    monkeypatch.setattr(variants, "REFERENCES", {})  # its 1,000 predictions are no one else's
    with pytest.raises(variants.VariantError, match="below fp32"):
        variants.make_variant(fp32, "int8", str(mnist_dir))
    assert not fp32.with_name("mnist_cnn_int8.onnx").exists()


def first_thousand(path, data_dir, scale) -> tuple[np.ndarray, np.ndarray]:
    """`predict_test_set` on the first 1,000 test images."""
    test = load_split("test", data_dir)
    logits = run_logits(cpu_session(path), to_model_input(test.images[:1000], *scale))
    return logits.argmax(1), test.labels[:1000]


@pytest.mark.parametrize("variant", ["int8", "fp16"])
def test_shipped_variants_match_their_cards(variant):
    path = MODEL.with_name(f"mnist_cnn_{variant}.onnx")
    card = json.loads(path.with_suffix(".json").read_text())
    assert card["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert card["derived_from"]["sha256"] == json.loads(MODEL.with_suffix(".json").read_text())["sha256"]
    if variant == "int8":
        assert card["test_accuracy"] >= card["derived_from"]["test_accuracy"] - variants.MAX_INT8_DROP
    else:  # fp16's rule: predictions changed against fp32, not accuracy
        assert card["predictions_changed_vs_fp32"] <= variants.MAX_FP16_CHANGED * card["test_total"]


def test_variant_setting(monkeypatch):
    monkeypatch.setenv("DIGITSERVE_VARIANT", "int8")
    assert Settings.from_env().model_path == MODEL.with_name("mnist_cnn_int8.onnx")
    monkeypatch.setenv("DIGITSERVE_VARIANT", "int4")
    with pytest.raises(ConfigError, match="DIGITSERVE_VARIANT"):
        Settings.from_env()


def test_the_service_serves_the_variant_it_is_told_to(mnist_dir, tmp_path):
    test = load_split("test", mnist_dir)
    with in_process(DIGITSERVE_VARIANT="int8", DIGITSERVE_CACHE_DIR=str(tmp_path)) as client:
        info = client.get("/model").json()
        body = test.images[:200].tobytes()
        results = client.post(
            "/classify_pixels", content=body[: 64 * 784], headers={"Content-Type": "application/octet-stream"}
        ).json()["results"]
        png = client.post("/classify", files={"image": ("d.png", as_png(test.images[0]))}).json()
    assert info["variant"] == "int8" and info["name"] == "mnist_cnn_int8"
    assert np.mean([r["digit"] for r in results] == test.labels[:64]) >= 0.98
    assert png["digit"] == test.labels[0]
    assert list(tmp_path.glob("*.onnx")), "the optimised graph was not saved for the next start"


def test_int8_first_block_rewrite_computes_the_same_function(mnist_dir):
    """Pool-before-ReLU is exact in float32: the rewritten fp32 graph gives bit-identical logits on real digits."""
    import onnxruntime as ort

    model = onnx.load(str(MODEL))
    kept = variants.float_first_block(model)
    assert [n.op_type for n in model.graph.node[:3]] == ["Conv", "MaxPool", "Relu"]
    assert kept == [n.name for n in model.graph.node[:3]]
    images = load_split("test", str(mnist_dir)).images[:256]
    pixels = to_model_input(images, *read_normalisation(read_card(MODEL)))
    original = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    rewritten = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(rewritten.run(None, {"image": pixels})[0], original.run(None, {"image": pixels})[0])


def test_shipped_int8_keeps_the_first_conv_in_float_and_the_rest_int8():
    graph = onnx.load(str(MODEL.with_name("mnist_cnn_int8.onnx"))).graph
    weights = {t.name: t.data_type for t in graph.initializer}
    convs = [n for n in graph.node if n.op_type in ("Conv", "Gemm")]
    first_weight = convs[0].input[1]
    assert weights.get(first_weight) == onnx.TensorProto.FLOAT  # float conv1, fed by the float image
    quantized = {n.input[0] for n in graph.node if n.op_type == "DequantizeLinear"}
    assert sum(weights.get(name) == onnx.TensorProto.INT8 for name in quantized) == 3  # conv2, fc1, fc2
