"""A short real training run on real MNIST, its checkpoint, and its export to ONNX."""

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from service.contract import card_path, file_sha256, to_model_input
from service.line_reader import LineReader, line_image
from tests.conftest import MODEL
from training import data
from training.__main__ import main
from training.calibration import negative_log_likelihood
from training.corruptions import CORRUPTIONS
from training.export import ExportError, export, reproduce_commands
from training.inference import evaluate, split_logits
from training.line_reader import from_exported
from training.network import initial_weights, load_checkpoint, predict
from training.train import TrainConfig, train

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def run(mnist_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    # The first 1,000 validation and test images: the export still evaluates on all 10,000 (the card). No
    # augmentation: twice as fast, and the robust recipe's path through train() is test_same_seed's.
    config = TrainConfig(steps=80, eval_every=40, train_subset=3000, eval_subset=1000, lr=1.5e-3, seed=0)
    return out, train(config, out, str(mnist_dir), progress=False)


def test_short_training_lifts_accuracy_far_above_chance(run):
    out, metrics = run
    assert metrics["test"]["accuracy"] > 0.85  # chance is 0.10
    assert [h["step"] for h in metrics["history"]] == [40, 80]
    assert metrics["validation_accuracy"] == max(h["validation_accuracy"] for h in metrics["history"])
    assert json.loads((out / "metrics.json").read_text())["test"] == metrics["test"]
    for picture in ("curves.png", "confusion.png"):
        assert (out / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_checkpoint_round_trip_with_weights_only(run, mnist_dir):
    out, metrics = run
    model, checkpoint = load_checkpoint(out / "checkpoint.pt")  # torch.load(..., weights_only=True)
    assert checkpoint["config"]["train_subset"] == 3000
    test = data.load_split("test", mnist_dir)
    images, labels = test.images[:1000], test.labels[:1000]  # what the run evaluated (eval_subset)
    accuracy = float((predict(model, images, torch.device("cpu")) == labels).mean())
    assert accuracy == metrics["test"]["accuracy"]


def test_same_seed_same_weights_on_cpu(mnist_dir, tmp_path):
    config = TrainConfig(
        steps=10, eval_every=10, train_subset=500, eval_subset=200, augment="robust", seed=3, device="cpu"
    )
    first = train(config, tmp_path / "a", str(mnist_dir), progress=False)
    second = train(config, tmp_path / "b", str(mnist_dir), progress=False)
    a = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert first["history"][0]["train_loss"] == second["history"][0]["train_loss"]
    assert first["test"]["total"] == 200  # --eval-subset: the first 200 test images


def test_ema_keeps_the_averaged_weights_and_the_best_so_far(mnist_dir, tmp_path):
    """--ema: the kept weights are the moving average (a decay of ~0 averages nothing: the last step's weights, the
    same as without it); the best weights so far are on disk during the run; the card's command repeats it."""
    base = {"steps": 10, "eval_every": 5, "train_subset": 500, "eval_subset": 200, "seed": 3, "device": "cpu"}
    states = {}
    for ema in (0.0, 1e-9, 0.5):
        train(TrainConfig(**base, ema=ema), tmp_path / str(ema), str(mnist_dir), progress=False)
        states[ema] = torch.load(tmp_path / str(ema) / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(states[0.0]["state_dict"][k], v) for k, v in states[1e-9]["state_dict"].items())
    assert not torch.equal(
        states[0.0]["state_dict"]["classifier.4.weight"], states[0.5]["state_dict"]["classifier.4.weight"]
    )
    _, checkpoint = load_checkpoint(tmp_path / "0.5" / "best_so_far.pt")
    assert checkpoint["config"]["ema"] == 0.5
    assert "--ema 0.5" in reproduce_commands(checkpoint["config"], tmp_path / "c.pt", tmp_path / "m.onnx", "0")[0]


def test_init_starts_from_an_exported_model_or_a_checkpoint(mnist_dir, tmp_path):
    """--init: fine-tuning starts from the shipped ONNX model's weights (its initializers) or a checkpoint's; with a
    learning rate of 0 the run keeps them, and the card's command names where it started."""
    weights = initial_weights(MODEL)
    config = TrainConfig(steps=2, eval_every=2, train_subset=200, eval_subset=200, lr=0.0, init=str(MODEL))
    train(config, tmp_path / "a", str(mnist_dir), progress=False)
    model, checkpoint = load_checkpoint(tmp_path / "a" / "checkpoint.pt")
    assert all(torch.equal(weights[k], v) for k, v in checkpoint["state_dict"].items())
    test = data.load_split("test", mnist_dir)
    session = ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"])
    logits = session.run(None, {"image": to_model_input(test.images[:500], data.MEAN, data.STD)})[0]
    assert np.array_equal(predict(model, test.images[:500], torch.device("cpu")), logits.argmax(1))
    again = initial_weights(tmp_path / "a" / "checkpoint.pt")
    assert all(torch.equal(weights[k], v) for k, v in again.items())
    # The card's commands: the shipped model's own runs (its card lists them), then this one from its weights.
    *runs, _ = reproduce_commands(checkpoint["config"], tmp_path / "c.pt", tmp_path / "m.onnx", "0")
    shipped = [line for line in json.loads(card_path(MODEL).read_text())["reproduce"] if " train " in line]
    assert runs[:-1] == shipped and "--init" not in runs[0]
    last_out = shipped[-1].rsplit("--out ", 1)[1]
    assert f"--init {last_out}/checkpoint.pt " in runs[-1] and "--shape-only" not in runs[-1]  # the default share
    shares = {**checkpoint["config"], "shape_only": 0.6}
    assert "--shape-only 0.6" in reproduce_commands(shares, tmp_path / "c.pt", tmp_path / "m.onnx", "0")[-2]


def test_init_refuses_a_model_of_another_network(tmp_path):
    graph = onnx.helper.make_graph(
        [onnx.helper.make_node("Identity", ["x"], ["y"])],
        "other",
        [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
        [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])],
    )
    onnx.save(onnx.helper.make_model(graph), tmp_path / "other.onnx")
    with pytest.raises(ValueError, match=r"no weights named features\.0\.weight"):
        initial_weights(tmp_path / "other.onnx")


@pytest.fixture(scope="module")
def exported(run, mnist_dir, tmp_path_factory):
    out, _ = run
    path = tmp_path_factory.mktemp("models") / "tiny.onnx"
    return path, export(out / "checkpoint.pt", path, version="0.0.1", data_dir=str(mnist_dir))


def test_export_writes_a_checked_graph_with_a_dynamic_batch(exported, mnist_dir):
    path, _ = exported
    proto = onnx.load(str(path))
    onnx.checker.check_model(proto, full_check=True)
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,), (outp,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.type, inp.shape[1:]) == ("image", "tensor(float)", [1, 28, 28])
    assert isinstance(inp.shape[0], str)  # symbolic: any batch size
    assert (outp.name, outp.shape[1]) == ("logits", 10)
    images = to_model_input(data.load_split("test", mnist_dir).images[:7], data.MEAN, data.STD)
    for n in (1, 7):
        assert session.run(None, {"image": images[:n]})[0].shape == (n, 10)


def test_export_embeds_metadata_and_writes_a_matching_card(exported, run):
    path, card = exported
    meta = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).get_modelmeta().custom_metadata_map
    assert meta["version"] == "0.0.1"
    assert float(meta["normalisation_mean"]) == data.MEAN and float(meta["normalisation_std"]) == data.STD
    assert json.loads(meta["labels"]) == [str(d) for d in range(10)]
    assert json.loads(meta["training_config"])["steps"] == 80
    assert meta["source_commit"]
    assert float(meta["test_accuracy"]) == card["test_accuracy"]

    on_disk = json.loads(path.with_suffix(".json").read_text())
    assert on_disk == card
    assert card["sha256"] == file_sha256(path)
    assert card["parameters"] == 3_274_634
    assert card["parity"]["max_abs_diff"] <= 1e-4
    assert set(card["per_class_accuracy"]) == {str(d) for d in range(10)}
    assert card["input"] == {"name": "image", "dtype": "float32", "shape": ["N", 1, 28, 28]}
    assert any("python -m training train" in c and "--train-subset 3000 " in c for c in card["reproduce"])
    assert any("--steps 80 " in c and "--eval-every 40 " in c for c in card["reproduce"])
    # ONNX Runtime agrees with PyTorch (the parity above); on all 10,000 images the model is about as good as on
    # the run's first 1,000, which are harder for a model this young (80 steps: 89.8 % on them, 91.7 % on all).
    assert card["test_total"] == 10_000 and abs(card["test_accuracy"] - run[1]["test"]["accuracy"]) < 0.05


def test_export_fits_a_temperature_on_the_validation_split(exported, mnist_dir):
    path, card = exported
    calibration = card["calibration"]
    logits, labels = split_logits(path, "validation", str(mnist_dir))
    fitted = calibration["temperature"]
    # The fitted temperature is the minimum of the validation loss: a little either way is worse.
    loss = negative_log_likelihood(logits, labels, fitted)
    assert loss < negative_log_likelihood(logits, labels, fitted * 1.1)
    assert loss < negative_log_likelihood(logits, labels, fitted / 1.1)
    assert 0 <= calibration["test_ece_after"] < 1 and calibration["ece_bins"] == 15


def test_evaluate_corruptions_writes_the_card_the_table_and_the_plots(exported, mnist_dir, tmp_path):
    path, _ = exported
    readme = tmp_path / "README.md"
    readme.write_text("# digitserve\n\nkept\n")
    command = ["evaluate", str(path), "--corruptions", "--images", "100", "--data-dir", str(mnist_dir)]
    command += ["--plots", str(tmp_path), "--record", str(readme), "--baseline", str(MODEL)]
    assert main(command) == 0  # `python -m training evaluate ...`, in this process
    found = json.loads(path.with_suffix(".json").read_text())["corruptions"]
    assert list(found["accuracy"]) == list(CORRUPTIONS) and found["images"] == 100
    assert found["mean_accuracy"] == pytest.approx(np.mean(list(found["accuracy"].values())), abs=1e-4)
    assert found["worst_accuracy"] == min(found["accuracy"].values())
    text = readme.read_text()
    assert text.startswith("# digitserve\n\nkept") and "| shot_noise |" in text and "beside mnist_cnn.onnx" in text
    for picture in ("corruptions.png", "reliability.png"):
        assert (tmp_path / picture).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_evaluate_reproduces_the_card(exported, mnist_dir):
    path, card = exported
    report = evaluate(path, str(mnist_dir))
    assert report["correct"] == card["test_correct"]
    assert report["per_class_accuracy"] == card["per_class_accuracy"]


def test_export_refuses_a_model_that_fails_parity(run, mnist_dir, tmp_path):
    out, _ = run
    target = tmp_path / "refused.onnx"
    with pytest.raises(ExportError, match="disagrees"):
        export(out / "checkpoint.pt", target, data_dir=str(mnist_dir), atol=-1.0)  # no graph can pass
    assert not target.exists() and not target.with_suffix(".json").exists()
    assert list(tmp_path.iterdir()) == []


def test_reproduce_runs_a_cards_training_lines(mnist_dir, tmp_path, capsys):
    """`python -m training reproduce CARD` trains what the card's lines say, into their --out; run again, it skips
    the run whose checkpoint is there."""
    out = tmp_path / "run"
    line = f"python -m training train --steps 2 --eval-every 2 --train-subset 200 --eval-subset 200 --out {out}"
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"reproduce": [line, "python -m training export --checkpoint x.pt"]}))
    assert main(["reproduce", str(card), "--data-dir", str(mnist_dir)]) == 0
    _, checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint["config"]["steps"] == 2 and checkpoint["config"]["train_subset"] == 200
    assert main(["reproduce", str(card), "--data-dir", str(mnist_dir)]) == 0
    assert "run 1 of 1 (done already, skipped)" in capsys.readouterr().out


def test_soup_averages_runs_from_one_start_and_judges_on_validation(mnist_dir, tmp_path):
    """`python -m training soup`: two short runs fine-tuned from the shipped model; the soup's checkpoint holds the
    average of those it kept, with the validation figures of that average and the test report of it; runs that
    started from different weights are refused."""
    runs = []
    for seed in (1, 2):
        config = TrainConfig(
            steps=5, eval_every=5, train_subset=500, eval_subset=200, lr=1e-4, seed=seed, init=str(MODEL)
        )
        train(config, tmp_path / str(seed), str(mnist_dir), progress=False)
        runs.append(str(tmp_path / str(seed) / "checkpoint.pt"))
    assert (
        main(["soup", *runs, "--eval-subset", "200", "--data-dir", str(mnist_dir), "--out", str(tmp_path / "s")]) == 0
    )
    model, checkpoint = load_checkpoint(tmp_path / "s" / "checkpoint.pt")
    metrics = checkpoint["metrics"]
    assert json.loads((tmp_path / "s" / "metrics.json").read_text()) == metrics
    assert (tmp_path / "s" / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert set(metrics["kept"]) <= set(runs) and metrics["kept"][0] == metrics["trials"][0]["ingredient"]
    states = [load_checkpoint(run)[1]["state_dict"] for run in metrics["kept"]]
    assert all(torch.allclose(sum(s[k] for s in states) / len(states), v) for k, v in checkpoint["state_dict"].items())
    validation, test = (data.load_split(split, mnist_dir) for split in ("validation", "test"))
    cpu = torch.device("cpu")
    assert metrics["validation_accuracy"] == float(
        (predict(model, validation.images[:200], cpu) == validation.labels[:200]).mean()
    )
    assert metrics["test"]["accuracy"] == float((predict(model, test.images[:200], cpu) == test.labels[:200]).mean())
    assert metrics["validation_accuracy"] >= max(t["validation_accuracy"] for t in metrics["trials"] if t["kept"])

    train(
        TrainConfig(steps=2, eval_every=2, train_subset=200, eval_subset=200),
        tmp_path / "3",
        str(mnist_dir),
        progress=False,
    )
    with pytest.raises(SystemExit, match="fine-tuned from the same weights"):
        main(
            [
                "soup",
                runs[0],
                str(tmp_path / "3" / "checkpoint.pt"),
                "--data-dir",
                str(mnist_dir),
                "--out",
                str(tmp_path / "t"),
            ]
        )
    with pytest.raises(SystemExit, match="no checkpoint at"):
        main(["soup", runs[0], str(tmp_path / "absent.pt"), "--out", str(tmp_path / "t")])
    assert not (tmp_path / "t").exists()


def test_line_reader_training_writes_a_model_the_service_loads(mnist_dir, tmp_path):
    """A few steps of `python -m training line_reader`: the ONNX file (checked against the network before it is
    kept), its card with the command and sha256, and the service's LineReader reading a line with it."""
    out = tmp_path / "line_reader.onnx"
    argv = ["line_reader", "--steps", "3", "--batch-size", "8", "--validation-lines", "16"]
    assert main([*argv, "--out", str(out), "--data-dir", str(mnist_dir)]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["sha256"] == file_sha256(out) and card["validation_lines"] == 16
    (command,) = card["reproduce"]
    assert command.startswith("python -m training line_reader --steps 3 --batch-size 8")
    line = line_image(np.pad(data.load_split("test", mnist_dir).images[0], 4))
    assert set(LineReader(out).read(line).text) <= set("0123456789")  # three steps: any digits, or none
    # Trained on from the file (--init): the network starts as the file computes, the card lists both commands.
    with torch.no_grad():
        started = from_exported(out)(torch.from_numpy(line)[None, None]).numpy()[0]
    assert np.abs(started - LineReader(out).session.run(None, {"line": line[None, None]})[0][0]).max() < 1e-4
    # Widened as it is trained on (--wider): the file holds the blocks, and a reader loaded from it has them.
    on = tmp_path / "on.onnx"
    assert main([*argv, "--out", str(on), "--wider", "1", "--init", str(out), "--data-dir", str(mnist_dir)]) == 0
    first, second = json.loads(on.with_suffix(".json").read_text())["reproduce"]
    assert first == command and second.endswith(f"--out {on} --wider 1 --init {out}")
    with torch.no_grad():
        widened = from_exported(on)
        assert len(widened.wider) == 1
        started = widened(torch.from_numpy(line)[None, None]).numpy()[0]
    assert np.abs(started - LineReader(on).session.run(None, {"line": line[None, None]})[0][0]).max() < 1e-4
