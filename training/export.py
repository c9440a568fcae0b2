"""Export a checkpoint to a verified ONNX model with embedded metadata and a model card beside it; optionally
its faster int8 and fp16 variants (training/variants.py), each checked and carded."""

from __future__ import annotations

import argparse
import datetime
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnx
import torch

from service.contract import INPUT, OUTPUT, VARIANTS, card_path, file_sha256, to_model_input
from training import data, soup
from training.augment import SHAPE_ONLY
from training.calibration import calibrate
from training.inference import cpu_session, run_logits, split_logits
from training.metrics import accuracy_report
from training.network import load_checkpoint
from training.train import config_from_command
from training.variants import VariantError, make_variant

OPSET = 18
PARITY_IMAGES = 1000
LABELS = [str(d) for d in range(10)]
TRAIN = "python -m training train"  # how a card's `reproduce` lines that train begin


class ExportError(RuntimeError):
    """The exported graph failed a check; nothing was written."""


def source_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "training"], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


def to_onnx(model: torch.nn.Module, path: Path) -> None:
    example = torch.zeros(2, 1, 28, 28)
    torch.onnx.export(
        model,
        (example,),
        path,
        input_names=[INPUT],
        output_names=[OUTPUT],
        opset_version=OPSET,
        dynamo=True,
        external_data=False,
        dynamic_shapes={INPUT: {0: torch.export.Dim("batch")}},
    )


def check_parity(torch_logits: np.ndarray, ort_logits: np.ndarray, atol: float) -> float:
    """Max absolute difference; raises ExportError beyond atol or on any changed prediction."""
    diff = float(np.abs(torch_logits - ort_logits).max())
    changed = int((torch_logits.argmax(1) != ort_logits.argmax(1)).sum())
    if diff > atol or changed:
        raise ExportError(
            f"ONNX Runtime disagrees with PyTorch: max |diff| {diff:.3g} (limit {atol:g}), "
            f"{changed} predictions changed"
        )
    return diff


def train_command(config: dict, out_dir: Path) -> str:
    """The `python -m training train` line that repeats a run of this config into out_dir."""
    return (
        f"{TRAIN} --steps {config['steps']} --batch-size {config['batch_size']} "
        f"--lr {config['lr']:g} --schedule {config['schedule']} --dropout {config['dropout']:g} "
        f"--seed {config['seed']}"
        + (f" --augment {config['augment']}" if config["augment"] != "none" else "")
        + (f" --shape-only {config['shape_only']:g}" if config.get("shape_only", SHAPE_ONLY) != SHAPE_ONLY else "")
        + (f" --ema {config['ema']:g}" if config.get("ema") else "")
        + (f" --printed {config['printed']:g}" if config.get("printed") else "")
        + (f" --outliers {config['outliers']:g}" if config.get("outliers") else "")
        + (f" --init {config['init']}" if config.get("init") else "")
        # Which weights are kept depends on where the run looked (the best validation accuracy at each look).
        + f" --eval-every {config['eval_every']}"
        + (f" --train-subset {config['train_subset']}" if config["train_subset"] else "")
        + (f" --eval-subset {config['eval_subset']}" if config.get("eval_subset") else "")
        + f" --out {out_dir}"
    )


def run_command(config: dict, out_dir: Path) -> str:
    """The line that repeats a run: a training run, or a soup of runs (training/soup.py)."""
    return soup.soup_command(config, out_dir) if soup.is_soup(config) else train_command(config, out_dir)


def run_from_command(line: str) -> tuple[dict, Path]:
    """A card's train or soup line -> the run's config and its --out."""
    return soup.config_from_command(line) if line.startswith(f"{soup.SOUP} ") else config_from_command(line)


def train_lines(card: dict) -> list[str]:
    """The card's `python -m training train` (and `soup`) lines, first to last: one per run (a model trained in
    cycles has several)."""
    return [line for line in card.get("reproduce", []) if line.startswith((f"{TRAIN} ", f"{soup.SOUP} "))]


def runs_from_card(card: dict, stem: str) -> list[tuple[dict, Path]]:
    """An exported model's training runs, first to last: its card's train lines, else its one config, run into
    runs/<stem>."""
    lines = train_lines(card)
    if lines:
        return [run_from_command(line) for line in lines]
    config = card.get("training", {}).get("config")
    return [(config, Path("runs") / stem)] if config else []


def earlier_runs(init: str, limit: int) -> list[tuple[dict, Path]]:
    """The runs, first to last, that made the weights a run started from (`--init`: a checkpoint, or an exported
    model with its card), each with where a reproduction writes it; as far back as checkpoints and cards tell."""
    path = Path(init)
    if path.suffix == ".pt" and path.is_file() and limit > 0:
        return training_runs(load_checkpoint(path)[1]["config"], path.parent, limit - 1)
    if path.suffix == ".onnx" and card_path(path).is_file():
        return runs_from_card(json.loads(card_path(path).read_text()), path.stem)
    return []


def training_runs(config: dict, out_dir: Path, limit: int = 10) -> list[tuple[dict, Path]]:
    """The runs that made a checkpoint, first to last: a run started from other weights (`--init`) comes after the
    runs that made those, its `--init` pointing at the last one's checkpoint (a model trained in cycles, each from
    the last one's weights). A soup comes after the runs of all its ingredients, each run once. `limit`: how many
    checkpoints back to follow."""
    if soup.is_soup(config):
        before, ingredients = [], []
        for path in config["ingredients"]:
            runs = earlier_runs(path, limit)  # none when its checkpoint is gone: named as the soup named it
            before += [run for run in runs if run not in before]
            ingredients.append(str(runs[-1][1] / "checkpoint.pt") if runs else path)
        return [*before, ({**config, "ingredients": ingredients}, out_dir)]
    before = earlier_runs(config["init"], limit) if config.get("init") else []
    if before:
        config = {**config, "init": str(before[-1][1] / "checkpoint.pt")}
    return [*before, (config, out_dir)]


def reproduce_commands(config: dict, checkpoint: Path, out: Path, version: str) -> list[str]:
    """Every training run behind the checkpoint, in order, then the export."""
    return commands(training_runs(config, checkpoint.parent), checkpoint, out, version)


def commands(runs: list[tuple[dict, Path]], checkpoint: Path, out: Path, version: str) -> list[str]:
    return [
        *(run_command(run, out_dir) for run, out_dir in runs),
        f"python -m training export --checkpoint {checkpoint} --out {out} --model-version {version}",
    ]


def export(
    checkpoint: Path, out: Path, version: str = "1.0.0", data_dir: str | None = None, atol: float = 1e-4
) -> dict:
    """Write out (.onnx) and its card (.json) once every check passes; return the card."""
    model, ckpt = load_checkpoint(checkpoint)
    runs = training_runs(ckpt["config"], checkpoint.parent)
    # Where the run started (`--init`) as a reproduction names it, not a path of the machine it ran on.
    ckpt["config"] = runs[-1][0]
    scale = (data.MEAN, data.STD)  # what training used; the card records it for every reader
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / out.name
        to_onnx(model, path)
        max_diff = verify_graph(model, path, data_dir, atol)
        test = split_logits(path, "test", data_dir, scale)  # once, for the accuracy and the calibration
        report = accuracy_report(test[1], test[0].argmax(1))
        print(
            f"parity on {PARITY_IMAGES} test images: max |diff| {max_diff:.2e}; "
            f"test accuracy {100 * report['accuracy']:.2f}%"
        )
        commit = source_commit()  # the file's metadata and its card name the same commit
        embed_metadata(path, out.stem, version, report, ckpt["config"], commit)
        out.parent.mkdir(parents=True, exist_ok=True)
        path.replace(out)
    parity = {"images": PARITY_IMAGES, "max_abs_diff": max_diff, "atol": atol}
    card = model_card(out, version, report, ckpt, parity, commit)
    card["calibration"] = calibrate(out, data_dir, scale, test)
    print(
        f"temperature {card['calibration']['temperature']} (validation split): test ECE "
        f"{100 * card['calibration']['test_ece_before']:.2f}% -> {100 * card['calibration']['test_ece_after']:.2f}%"
    )
    card["reproduce"] = commands(runs, checkpoint, out, version)
    card_path(out).write_text(json.dumps(card, indent=2) + "\n")
    return card


def verify_graph(model: torch.nn.Module, path: Path, data_dir: str | None, atol: float) -> float:
    """ONNX's full check, then PyTorch and ONNX Runtime on the same test images: their max |logit difference|."""
    onnx.checker.check_model(str(path), full_check=True)
    inputs = to_model_input(data.load_split("test", data_dir).images[:PARITY_IMAGES], data.MEAN, data.STD)
    with torch.inference_mode():
        expected = model(torch.from_numpy(inputs)).numpy()
    return check_parity(expected, run_logits(cpu_session(path), inputs), atol)


def embed_metadata(path: Path, name: str, version: str, report: dict, config: dict, commit: str) -> None:
    """The contract inside the file too, for tools that see only the .onnx (Netron, other servers); digitserve
    itself reads the card."""
    metadata = {
        "name": name,
        "version": version,
        "normalisation_mean": str(data.MEAN),
        "normalisation_std": str(data.STD),
        "labels": json.dumps(LABELS),
        "test_accuracy": str(report["accuracy"]),
        "training_config": json.dumps(config),
        "source_commit": commit,
    }
    proto = onnx.load(str(path))
    onnx.helper.set_model_props(proto, metadata)
    proto.doc_string = "MNIST CNN: normalised 28x28 white-on-black digits -> logits of 0-9"
    onnx.save(proto, str(path))


def model_card(out: Path, version: str, report: dict, ckpt: dict, parity: dict, commit: str) -> dict:
    train_metrics = ckpt["metrics"]
    return {
        "name": out.stem,
        "version": version,
        "file": out.name,
        "sha256": file_sha256(out),
        "size_bytes": out.stat().st_size,
        "format": f"ONNX, opset {OPSET}",
        "parameters": train_metrics["parameters"],
        "test_accuracy": report["accuracy"],
        "test_correct": report["correct"],
        "test_total": report["total"],
        "per_class_accuracy": report["per_class_accuracy"],
        "validation_accuracy": train_metrics["validation_accuracy"],
        "input": {"name": INPUT, "dtype": "float32", "shape": ["N", 1, 28, 28]},
        "output": {"name": OUTPUT, "dtype": "float32", "shape": ["N", 10], "labels": LABELS},
        "preprocessing": {
            "image": "28x28 grayscale, white ink on black, digit fitted in 20x20 and centred by centre of mass",
            "scale": "pixel / 255",
            "mean": data.MEAN,
            "std": data.STD,
            "formula": "(pixel / 255 - mean) / std",
        },
        "parity": parity,
        "training": training_summary(ckpt["config"], train_metrics),
        "source_commit": commit,
        "created": datetime.date.today().isoformat(),
    }


def training_summary(config: dict, metrics: dict) -> dict:
    """The card's "training": the run's config and cost; for a soup, which runs it averages and how it chose."""
    summary = {"config": config}
    if soup.is_soup(config):
        summary |= {"kept": metrics["kept"], "trials": metrics["trials"]}
    else:
        summary["best_step"] = metrics["best_step"]
    summary |= {"seconds": metrics["training_seconds"], "hardware": metrics["hardware"]}
    if "images_per_second" in metrics:
        summary["images_per_second"] = metrics["images_per_second"]
    return summary | {"torch": metrics["torch_version"]}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", type=Path, default=Path("runs/mnist_cnn/checkpoint.pt"))
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("models/mnist_cnn.onnx"),
        help="ONNX file to write; the card goes beside it as .json",
    )
    parser.add_argument("--model-version", default="1.0.0")
    parser.add_argument("--data-dir", help="MNIST folder (default: $MNIST_DIR, else data/mnist, downloaded)")
    parser.add_argument("--atol", type=float, default=1e-4, help="max |logit difference| ONNX vs PyTorch")
    parser.add_argument("--int8", action="store_true", help="also write <out>_int8.onnx (static quantization)")
    parser.add_argument("--fp16", action="store_true", help="also write <out>_fp16.onnx (float16, float32 I/O)")
    parser.add_argument(
        "--from-onnx",
        type=Path,
        metavar="FP32_ONNX",
        help="make the variants from this already exported fp32 model (and its card) instead of a checkpoint",
    )


def main(args: argparse.Namespace) -> None:
    fp32 = args.from_onnx or args.out
    try:
        if not args.from_onnx:
            card = export(args.checkpoint, args.out, args.model_version, args.data_dir, args.atol)
            print(f"wrote {args.out} (sha256 {card['sha256'][:12]}…) and {args.out.with_suffix('.json')}")
        for variant in (v for v in VARIANTS if v != "fp32" and getattr(args, v)):
            card = make_variant(fp32, variant, args.data_dir)
            print(
                f"wrote {card['file']}: test accuracy {100 * card['test_accuracy']:.2f}% "
                f"(fp32 {100 * card['derived_from']['test_accuracy']:.2f}%), "
                f"{card['predictions_changed_vs_fp32']} predictions changed, {card['size_bytes'] / 1e6:.1f} MB"
            )
    except (ExportError, VariantError) as exc:
        sys.exit(f"export refused: {exc}")
