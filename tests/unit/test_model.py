import torch

from training.model import MnistCNN, count_parameters


def test_parameter_count_and_shapes():
    model = MnistCNN()
    assert count_parameters(model) == 3_274_634
    assert model(torch.zeros(3, 1, 28, 28)).shape == (3, 10)
    shapes = [tuple(p.shape) for p in model.parameters()]
    assert shapes == [(32, 1, 5, 5), (32,), (64, 32, 5, 5), (64,), (1024, 3136), (1024,), (10, 1024), (10,)]


def test_reference_initialisation():
    torch.manual_seed(0)
    model = MnistCNN()
    for name, p in model.named_parameters():
        if name.endswith("bias"):
            assert torch.all(p == 0.1), name
        else:  # truncated normal, std 0.1, cut at two standard deviations
            assert p.abs().max() <= 0.2, name
            assert 0.07 < p.std() < 0.1, name


def test_dropout_only_in_training_mode():
    model = MnistCNN(dropout=0.5)
    x = torch.randn(4, 1, 28, 28)
    model.eval()
    assert torch.equal(model(x), model(x))
    model.train()
    assert not torch.equal(model(x), model(x))


def test_a_checkpoint_from_before_the_recipes_reproduces_with_its_recipe(tmp_path):
    """Older checkpoints stored --augment as a flag (True: affine); their card's command names the recipe."""
    from dataclasses import asdict

    from training.export import reproduce_commands
    from training.network import load_checkpoint
    from training.train import TrainConfig

    for flag, recipe in ((True, "affine"), (False, "none")):
        config = {**asdict(TrainConfig()), "augment": flag}
        path = tmp_path / f"{flag}.pt"
        torch.save({"state_dict": MnistCNN().state_dict(), "config": config}, path)
        _, checkpoint = load_checkpoint(path)
        assert checkpoint["config"]["augment"] == recipe
        (train, *_) = reproduce_commands(checkpoint["config"], path, tmp_path / "m.onnx", "1.0.0")
        assert ("--augment affine" in train) == flag and "True" not in train and "False" not in train


def test_a_model_trained_in_cycles_reproduces_run_by_run(tmp_path, capsys):
    """Each run started from the last one's weights (--init, a checkpoint or an exported model with its card): the
    card's commands repeat every run in order, each from the run before's checkpoint, then the export; `python -m
    training reproduce` runs them, skipping those already done."""
    import json
    from dataclasses import asdict

    from training.__main__ import main
    from training.export import reproduce_commands
    from training.train import TrainConfig

    first = {**asdict(TrainConfig()), "seed": 1}
    (tmp_path / "shipped.json").write_text(json.dumps({"training": {"config": first}}))
    second = {**asdict(TrainConfig()), "seed": 2, "init": str(tmp_path / "shipped.onnx")}
    (tmp_path / "b").mkdir()
    torch.save({"state_dict": MnistCNN().state_dict(), "config": second}, tmp_path / "b" / "checkpoint.pt")
    third = {**asdict(TrainConfig()), "seed": 3, "init": str(tmp_path / "b" / "checkpoint.pt")}
    commands = reproduce_commands(third, tmp_path / "c" / "checkpoint.pt", tmp_path / "m.onnx", "2.0.0")
    assert [c.split("--seed ")[1][0] for c in commands[:3]] == ["1", "2", "3"]
    assert "--init" not in commands[0] and commands[0].endswith("--out runs/shipped")
    assert "--init runs/shipped/checkpoint.pt " in commands[1] and commands[1].endswith(f"--out {tmp_path / 'b'}")
    assert f"--init {tmp_path / 'b' / 'checkpoint.pt'} " in commands[2]
    assert commands[3].startswith("python -m training export --checkpoint") and "2.0.0" in commands[3]

    # Started from that model once exported: its card's lines are the runs before, whatever is left on disk.
    card = tmp_path / "card.json"
    card.write_text(json.dumps({"reproduce": commands}))
    fourth = {**asdict(TrainConfig()), "seed": 4, "init": str(tmp_path / "card.onnx")}
    again = reproduce_commands(fourth, tmp_path / "d" / "checkpoint.pt", tmp_path / "n.onnx", "3.0.0")
    assert again[:3] == commands[:3]
    assert "--seed 4 " in again[3] and f"--init {tmp_path / 'c' / 'checkpoint.pt'} " in again[3]

    assert main(["reproduce", str(card), "--dry-run"]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert [line.split(": ")[0] for line in printed] == [
        "run 1 of 3 (dry run)",
        "run 2 of 3 (done already, skipped)",
        "run 3 of 3 (dry run)",
    ]
