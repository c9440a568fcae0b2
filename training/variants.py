"""Faster variants of an exported fp32 model: int8 for CPUs, fp16 for GPUs, each checked and carded.

- int8: ONNX Runtime static quantization in QDQ form, weights int8 per output channel, activations uint8 (the
  u8 x s8 products AVX-512 VNNI runs), calibrated on training images (never the test set). The first conv block
  stays float32 (see `float_first_block`). Refused if its test accuracy is more than MAX_INT8_DROP below fp32's.
- fp16: weights and arithmetic in float16, inputs and outputs kept float32 so that clients do not change. Refused
  if its predictions differ from fp32's on more than MAX_FP16_CHANGED of the test set.

Each variant gets its own card beside it (`<name>_int8.json`, ...) with its own sha256 and test accuracy.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process
from onnxruntime.transformers.float16 import convert_float_to_float16

from service.contract import INPUT, VARIANTS, file_sha256, read_card, read_normalisation, to_model_input, variant_path
from training import data
from training.inference import predict_test_set
from training.metrics import accuracy_report

MAX_INT8_DROP = 0.001  # 0.1 percentage points of test accuracy
MAX_FP16_CHANGED = 0.0005  # 0.05 % of the test set's predictions
CALIBRATION_IMAGES = 1000


class VariantError(RuntimeError):
    """A variant failed its accuracy check; nothing was written."""


class Calibration(CalibrationDataReader):
    """Normalised training images, in batches, for the quantizer to observe activation ranges."""

    def __init__(self, images: np.ndarray, mean: float, std: float, batch: int = 100) -> None:
        self.batches = iter(
            [{INPUT: to_model_input(images[i : i + batch], mean, std)} for i in range(0, len(images), batch)]
        )

    def get_next(self) -> dict | None:
        return next(self.batches, None)


def float_first_block(model: onnx.ModelProto) -> list[str]:
    """Reorder the first Conv -> Relu -> MaxPool to Conv -> MaxPool -> Relu and return those nodes' names.

    A 1-channel int8 conv is ONNX Runtime's slowest int8 kernel here (37 us of a 150 us batch-1 call, twice the
    float conv), so the first block stays float32 and quantization starts at its output. With ReLU last, the
    quantizer's input to conv2 lands after the pool and ONNX Runtime keeps conv and pool in its fast float layout
    (with ReLU first, it moves that quantize above the pool and runs a slow uint8 pool). Same function:
    max(relu(x)) == relu(max(x)), since ReLU never reorders values.
    """
    nodes = list(model.graph.node)
    consumers = {name: [n for n in nodes if name in n.input] for n in nodes for name in n.output}
    conv = next(n for n in nodes if n.op_type == "Conv")
    (relu,) = consumers[conv.output[0]]
    (pool,) = consumers[relu.output[0]]
    if (relu.op_type, pool.op_type) != ("Relu", "MaxPool"):
        raise ValueError(f"first block is Conv -> {relu.op_type} -> {pool.op_type}, not Conv -> Relu -> MaxPool")
    block_out, pooled = pool.output[0], f"{pool.output[0]}_before_relu"
    pool.input[0], pool.output[0] = conv.output[0], pooled
    relu.input[0], relu.output[0] = pooled, block_out
    order = [n for n in nodes if n is not relu]
    order.insert(order.index(pool) + 1, relu)
    model.graph.ClearField("node")
    model.graph.node.extend(order)
    produced = {name for n in order for name in n.output}  # the old ReLU output's shape entry goes
    shapes = [v for v in model.graph.value_info if v.name in produced]
    model.graph.ClearField("value_info")
    model.graph.value_info.extend(shapes)
    onnx.checker.check_model(model)
    return [conv.name, pool.name, relu.name]


def quantize_int8(fp32: Path, out: Path, scale: tuple[float, float], data_dir: str | None = None) -> None:
    """`scale`: the fp32 card's (mean, std), to normalise the calibration images as the model expects."""
    mean, std = scale
    train = data.load_split("train", data_dir)
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(fp32), str(prepared), skip_symbolic_shape=True)  # shapes and folding first
        model = onnx.load(str(prepared))
        keep_float = float_first_block(model)
        onnx.save(model, str(prepared))
        quantize_static(
            str(prepared),
            str(out),
            Calibration(train.images[:CALIBRATION_IMAGES], mean, std),
            quant_format=QuantFormat.QDQ,
            per_channel=True,
            activation_type=QuantType.QUInt8,
            weight_type=QuantType.QInt8,
            nodes_to_exclude=keep_float,
        )


def convert_fp16(fp32: Path, out: Path) -> None:
    onnx.save(convert_float_to_float16(onnx.load(str(fp32)), keep_io_types=True), str(out))


REFERENCES: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}  # by (fp32's sha256, data_dir, normalisation)


def reference(fp32: Path, sha256: str, data_dir: str | None, scale: tuple[float, float]) -> tuple[np.ndarray, ...]:
    """fp32's predictions on the test set, and the labels: once per model content (`sha256`, wherever the file
    lies), since `make variants` judges int8 and fp16 against the same ones."""
    key = (sha256, data_dir, scale)
    if key not in REFERENCES:
        REFERENCES[key] = predict_test_set(fp32, data_dir, scale)
    return REFERENCES[key]


def make_variant(fp32: Path, variant: str, data_dir: str | None = None) -> dict:
    """Write `<fp32>_<variant>.onnx` and its card once its check passes; return the card."""
    card = read_card(fp32)  # checked against the file once; its normalisation serves every step below
    scale = read_normalisation(card)
    out = variant_path(fp32, variant)
    expected, labels = reference(fp32, card["sha256"], data_dir, scale)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / out.name
        if variant == "int8":
            quantize_int8(fp32, path, scale, data_dir)
        elif variant == "fp16":
            convert_fp16(fp32, path)
        else:
            raise ValueError(f"unknown variant {variant!r}: {VARIANTS[1:]}")
        # The serving contract travels with the file: normalisation, labels, version, provenance.
        proto = onnx.load(str(path))
        source = {p.key: p.value for p in onnx.load(str(fp32), load_external_data=False).metadata_props}
        onnx.helper.set_model_props(proto, {**source, "name": out.stem, "variant": variant})
        onnx.save(proto, str(path))

        predictions, _ = predict_test_set(path, data_dir, scale)
        report = accuracy_report(labels, predictions)
        changed = int((predictions != expected).sum())
        drop = card["test_accuracy"] - report["accuracy"]
        if variant == "int8" and drop > MAX_INT8_DROP:
            raise VariantError(f"int8 test accuracy {report['accuracy']:.4f} is {100 * drop:.2f} pp below fp32")
        if variant == "fp16" and changed > MAX_FP16_CHANGED * len(labels):
            raise VariantError(f"fp16 changes {changed} of {len(labels)} test predictions against fp32")
        path.replace(out)

    card.update(
        name=out.stem,
        variant=variant,
        file=out.name,
        sha256=file_sha256(out),
        size_bytes=out.stat().st_size,
        test_accuracy=report["accuracy"],
        test_correct=report["correct"],
        per_class_accuracy=report["per_class_accuracy"],
        derived_from={"file": fp32.name, "sha256": card["sha256"], "test_accuracy": card["test_accuracy"]},
        predictions_changed_vs_fp32=changed,
        method=(
            f"ONNX Runtime {ort.__version__} static quantization, QDQ, per-channel int8 weights, uint8 "
            f"activations, calibrated on {CALIBRATION_IMAGES} training images; first conv block float32 (pool "
            "before ReLU)"
            if variant == "int8"
            else "float16 weights and arithmetic, float32 inputs and outputs (onnxruntime.transformers.float16)"
        ),
    )
    card.pop("parity", None)  # the fp32 file's PyTorch parity; this file is checked against fp32 above
    card["reproduce"] = [*card.get("reproduce", [])[:2], f"python -m training export --from-onnx {fp32} --{variant}"]
    out.with_suffix(".json").write_text(json.dumps(card, indent=2) + "\n")
    return card
