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
    from training.train import TrainConfig, load_checkpoint

    for flag, recipe in ((True, "affine"), (False, "none")):
        config = {**asdict(TrainConfig()), "augment": flag}
        path = tmp_path / f"{flag}.pt"
        torch.save({"state_dict": MnistCNN().state_dict(), "config": config}, path)
        _, checkpoint = load_checkpoint(path)
        assert checkpoint["config"]["augment"] == recipe
        (train, *_) = reproduce_commands(checkpoint["config"], path, tmp_path / "m.onnx", "1.0.0")
        assert ("--augment affine" in train) == flag and "True" not in train and "False" not in train
