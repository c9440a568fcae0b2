"""The greedy model soup's choice (training/soup.py) and how a soup's card repeats it."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

from training.__main__ import main
from training.export import reproduce_commands, runs_from_card, training_summary
from training.model import MnistCNN
from training.soup import Score, average, greedy
from training.train import TrainConfig


def test_average_is_the_element_wise_mean():
    states = [
        {"w": torch.tensor([1.0, 2.0]), "b": torch.tensor(0.0)},
        {"w": torch.tensor([3.0, 6.0]), "b": torch.tensor(1.0)},
    ]
    mean = average(states)
    assert torch.equal(mean["w"], torch.tensor([2.0, 4.0])) and torch.equal(mean["b"], torch.tensor(0.5))


def scorer(table: dict[float, tuple[int, float]]):
    """A stand-in validation split: weights {"w": x} score what the table says for x (correct of 100, loss)."""

    def score(state: dict) -> Score:
        correct, loss = table[round(float(state["w"]), 4)]
        return Score(correct, 100, loss)

    return score


def test_greedy_tries_the_best_first_and_keeps_what_the_average_improves():
    states = {name: {"w": torch.tensor(w)} for name, w in (("a", 0.0), ("b", 1.0), ("c", 2.0), ("d", 4.0))}
    table = {
        0.0: (95, 0.20),
        1.0: (97, 0.10),
        2.0: (97, 0.12),
        4.0: (90, 0.50),  # alone
        1.5: (97, 0.11),  # b + c: the same accuracy as b, a higher loss: left out
        0.5: (98, 0.15),  # b + a: a higher accuracy: kept
        1.6667: (97, 0.05),  # b + a + d: lower accuracy than the soup of b + a, whatever its loss: left out
    }
    kept, trials = greedy(states, scorer(table))
    assert kept == ["b", "a"]
    assert [(t["ingredient"], t["kept"]) for t in trials] == [("b", True), ("c", False), ("a", True), ("d", False)]
    assert trials[1]["validation_accuracy"] == 0.97 and trials[1]["alone"]["validation_loss"] == 0.12


def test_a_tie_in_accuracy_goes_to_the_lower_loss():
    assert Score(97, 100, 0.10).beats(Score(97, 100, 0.11))
    assert not Score(97, 100, 0.11).beats(Score(97, 100, 0.11))
    assert Score(98, 100, 0.50).beats(Score(97, 100, 0.01))
    kept, _ = greedy(
        {"a": {"w": torch.tensor(0.0)}, "b": {"w": torch.tensor(1.0)}},
        scorer({0.0: (97, 0.20), 1.0: (97, 0.10), 0.5: (97, 0.09)}),
    )
    assert kept == ["b", "a"]  # b first (same accuracy, lower loss); the average's lower loss keeps a


@pytest.fixture
def ingredients(tmp_path):
    """Two runs fine-tuned from one checkpoint (runs/base here), as a soup's ingredients."""
    base = tmp_path / "base"
    base.mkdir()
    torch.save({"state_dict": MnistCNN().state_dict(), "config": asdict(TrainConfig(seed=1))}, base / "checkpoint.pt")
    paths = []
    for seed in (2, 3):
        (tmp_path / str(seed)).mkdir()
        config = asdict(TrainConfig(seed=seed, init=str(base / "checkpoint.pt")))
        torch.save({"state_dict": MnistCNN().state_dict(), "config": config}, tmp_path / str(seed) / "checkpoint.pt")
        paths.append(str(tmp_path / str(seed) / "checkpoint.pt"))
    return paths


def test_a_soups_card_repeats_every_run_once_then_the_soup(ingredients, tmp_path, capsys):
    soup_config = {"ingredients": ingredients, "dropout": 0.5, "eval_subset": 0}
    commands = reproduce_commands(soup_config, tmp_path / "soup" / "checkpoint.pt", tmp_path / "m.onnx", "2.0.0")
    assert [c.split("--seed ")[1][0] for c in commands[:3]] == ["1", "2", "3"]  # the shared start once
    assert commands[3] == f"python -m training soup {' '.join(ingredients)} --out {tmp_path / 'soup'}"
    assert commands[4].startswith(f"python -m training export --checkpoint {tmp_path / 'soup' / 'checkpoint.pt'} ")

    # A card's soup line reads back as the soup's config, and `reproduce` runs it after the runs it averages.
    card = {"reproduce": commands}
    config, out = runs_from_card(card, "m")[3]
    assert config == {"ingredients": ingredients, "eval_subset": 0} and out == tmp_path / "soup"
    (tmp_path / "card.json").write_text(json.dumps(card))
    assert main(["reproduce", str(tmp_path / "card.json"), "--dry-run"]) == 0
    printed = [line.split(": ")[0] for line in capsys.readouterr().out.splitlines()]
    assert printed == [
        "run 1 of 4 (done already, skipped)",
        "run 2 of 4 (done already, skipped)",
        "run 3 of 4 (done already, skipped)",
        "run 4 of 4 (dry run)",
    ]


def test_a_soups_card_says_what_it_averages_and_how_it_chose():
    trials = [{"ingredient": "a", "validation_accuracy": 0.99, "kept": True}]
    metrics = {"kept": ["a"], "trials": trials, "training_seconds": 7.0, "hardware": "cpu", "torch_version": "2"}
    summary = training_summary({"ingredients": ["a", "b"]}, metrics)
    assert summary == {
        "config": {"ingredients": ["a", "b"]},
        "kept": ["a"],
        "trials": trials,
        "seconds": 7.0,
        "hardware": "cpu",
        "torch": "2",
    }
    run = {"best_step": 5, "training_seconds": 3.0, "hardware": "cpu", "images_per_second": 9.0, "torch_version": "2"}
    assert training_summary({"seed": 1}, run) == {
        "config": {"seed": 1},
        "best_step": 5,
        "seconds": 3.0,
        "hardware": "cpu",
        "images_per_second": 9.0,
        "torch": "2",
    }


def test_a_soup_whose_ingredient_is_gone_still_names_it(ingredients, tmp_path):
    """An ingredient's checkpoint deleted since: its runs cannot be listed, the soup line still names it."""
    Path(ingredients[1]).unlink()
    soup_config = {"ingredients": ingredients, "dropout": 0.5, "eval_subset": 0}
    commands = reproduce_commands(soup_config, tmp_path / "soup" / "checkpoint.pt", tmp_path / "m.onnx", "2.0.0")
    assert [c.split("--seed ")[1][0] for c in commands[:2]] == ["1", "2"]
    assert commands[2] == f"python -m training soup {' '.join(ingredients)} --out {tmp_path / 'soup'}"
