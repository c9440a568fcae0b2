"""The model in models/ is the one its card describes, and it meets the accuracy bar."""

import json
import os
import subprocess
import sys

import numpy as np
import onnx
import pytest

from service.contract import file_sha256

from ..conftest import MODEL, ROOT

CARD = json.loads(MODEL.with_suffix(".json").read_text())


def test_card_matches_the_file():
    assert CARD["sha256"] == file_sha256(MODEL)
    assert CARD["size_bytes"] == MODEL.stat().st_size
    assert CARD["parameters"] == 3_274_634
    assert CARD["test_accuracy"] >= 0.993


def test_graph_metadata_agrees_with_the_card():
    proto = onnx.load(str(MODEL))
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["version"] == CARD["version"]
    assert float(meta["test_accuracy"]) == CARD["test_accuracy"]
    weights = [t for t in proto.graph.initializer if t.data_type == onnx.TensorProto.FLOAT]
    assert sum(int(np.prod(t.dims)) for t in weights) == CARD["parameters"]


@pytest.mark.slow
@pytest.mark.integration
def test_evaluate_cli_reproduces_the_card_on_all_10000_test_images(mnist_dir):
    result = subprocess.run(
        [sys.executable, "-m", "training", "evaluate", str(MODEL), "--json", "--data-dir", str(mnist_dir)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ},
    )
    report = json.loads(result.stdout)
    assert report["total"] == 10_000
    assert report["correct"] == CARD["test_correct"]
    assert report["accuracy"] == CARD["test_accuracy"]
    assert report["per_class_accuracy"] == CARD["per_class_accuracy"]


@pytest.mark.integration
def test_the_cards_temperature_is_the_one_the_validation_split_gives(mnist_dir):
    from training.calibration import calibrate

    found, card = calibrate(MODEL, str(mnist_dir)), CARD["calibration"]
    # To the fit's precision: the loss is flat to 1e-8 within 5e-4 of its minimum (training/calibration.py), and the
    # logits differ in their last bits from CPU to CPU.
    assert found["temperature"] == pytest.approx(card["temperature"], abs=1e-3)
    assert found["test_ece_after"] == pytest.approx(card["test_ece_after"], abs=1e-4)
    assert found | {"temperature": card["temperature"], "test_ece_after": card["test_ece_after"]} == card
    assert CARD["calibration"]["test_ece_after"] <= 0.005


def test_the_card_has_the_corruption_benchmark_and_the_readme_its_table():
    from training.corruptions import CORRUPTIONS

    found = CARD["corruptions"]
    assert list(found["accuracy"]) == list(CORRUPTIONS) and found["images"] == 10_000
    readme = (ROOT / "README.md").read_text()
    table = readme.split("<!-- corruptions:start -->")[1].split("<!-- corruptions:end -->")[0]
    for name, accuracy in found["accuracy"].items():
        assert f"| {name} | {100 * accuracy:.2f}% |" in table, name
    assert f"| **mean** | {100 * found['mean_accuracy']:.2f}% |" in table
