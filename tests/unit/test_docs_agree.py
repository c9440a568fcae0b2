"""The README agrees with the code: its configuration table lists exactly the settings service/config.py reads, with
the same defaults, its install table names every package of each extra of pyproject.toml and of make bench-v2's
environment, and its layout names every module."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path

import pytest

from service.config import DEFAULT_MODEL, Settings, usable_cores
from tests.conftest import ROOT, requirement_lines

ROW = re.compile(r"^\| `(DIGITSERVE_[A-Z_]+)` \| ([^|]*) \|", re.MULTILINE)
# What each default cell says, as the value Settings holds when the variable is unset.
SPOKEN = {
    "unset": "",
    "number of cores": "cpu_count",
    "usable cores, at most 4": str(min(4, usable_cores())),
    "`models/mnist_cnn.onnx`": str(DEFAULT_MODEL.relative_to(ROOT)),
    "`$TMPDIR/digitserve`": str(Path(tempfile.gettempdir()) / "digitserve"),
}


def documented() -> dict[str, str]:
    return {name: cell.strip() for name, cell in ROW.findall((ROOT / "README.md").read_text())}


def read_by_config() -> set[str]:
    return set(re.findall(r'"(DIGITSERVE_[A-Z_]+)"', (ROOT / "service" / "config.py").read_text()))


def test_the_table_lists_every_setting_and_no_other():
    assert set(documented()) == read_by_config()


@pytest.mark.parametrize("name", sorted(read_by_config()))
def test_the_table_gives_each_default(name):
    settings = Settings.from_env({})
    field = {"DIGITSERVE_MODEL": "model_path", "DIGITSERVE_VARIANT": "model_path", "DIGITSERVE_CACHE_DIR": "cache_dir"}
    actual = getattr(settings, field.get(name, name.removeprefix("DIGITSERVE_").lower()))
    cell = documented()[name]
    if name == "DIGITSERVE_VARIANT":  # the fp32 file itself
        assert cell == "`fp32`" and actual == DEFAULT_MODEL
        return
    said = SPOKEN[cell] if cell in SPOKEN else re.match(r"`([^`]*)`", cell).group(1)
    if isinstance(actual, Path):
        actual = actual.relative_to(ROOT) if actual.is_relative_to(ROOT) else actual
    expected = str(actual).lower() if isinstance(actual, bool) else str(actual)
    assert said in (expected, expected.removesuffix(".0")), f"{name}: README says {cell}, config.py gives {actual!r}"


def test_the_install_table_names_every_package_of_each_extra():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    readme = (ROOT / "README.md").read_text()
    extras = {"": project["dependencies"], **project["optional-dependencies"]}
    for extra, requirements in extras.items():
        target = f"'.[{extra}]'" if extra else "."
        install = f"| `pip install -e {target}` |"
        row = next((line for line in readme.splitlines() if line.startswith(install)), None)
        assert row is not None, f"no README row {install}"
        for requirement in requirements:
            assert Requirement(requirement).name in row, f"{requirement} missing from the README row {install}"
    bench_v2 = "| `requirements/bench-v2.txt` |"
    row = next(line for line in readme.splitlines() if line.startswith(bench_v2))
    for line in requirement_lines(ROOT / "requirements" / "bench-v2.txt"):
        assert Requirement(line).name in row, f"{line} missing from the README row {bench_v2}"


def card(variant: str = "") -> dict:
    import json

    return json.loads((ROOT / "models" / f"mnist_cnn{variant}.json").read_text())


def percent(value: float) -> str:
    return f"{100 * value:.2f} %"


def test_the_model_table_says_what_the_card_says():
    readme, fp32 = (ROOT / "README.md").read_text(), card()
    per_class = fp32["per_class_accuracy"]
    worst, best = min(per_class, key=per_class.get), max(per_class, key=per_class.get)
    expected = (
        f"| test accuracy | **{percent(fp32['test_accuracy'])}** ({fp32['test_correct']:,} / {fp32['test_total']:,}), "
        f"per class {percent(per_class[worst])} (digit {worst}) to {percent(per_class[best])} (digit {best}) |"
    )
    assert expected in readme
    assert f"| parameters | {fp32['parameters']:,} |" in readme
    trained = next(line for line in readme.splitlines() if line.startswith("| trained | "))
    runs = [re.search(r"--steps (\d+) --batch-size (\d+)", line) for line in fp32["reproduce"] if " train " in line]
    for run in runs:  # every run of the card's, in order (a model trained in cycles has several)
        assert f"{int(run[1]):,} steps of batch {run[2]}" in trained
    assert f" {round(fp32['training']['seconds']):,} s on " in trained  # the last run's time
    corruptions, calibration = fp32["corruptions"], fp32["calibration"]
    assert (
        f"| under corruption | **{corruptions['mean_accuracy'] * 100:.2f} %** mean over MNIST-C's 15 corruptions, "
        f"worst {corruptions['worst_accuracy'] * 100:.2f} % ({corruptions['worst']});"
    ) in readme
    assert (
        f"| confidence | temperature {calibration['temperature']} (fitted on the validation split); expected "
        f"calibration error {calibration['test_ece_after'] * 100:.2f} % on the test set, "
        f"{corruptions['ece_after'] * 100:.2f} % under the corruptions (without it: "
        f"{calibration['test_ece_before'] * 100:.2f} % and {corruptions['ece_before'] * 100:.2f} %) |"
    ) in readme


@pytest.mark.parametrize("variant", ["fp32", "int8", "fp16"])
def test_the_variants_table_says_what_each_card_says(variant):
    readme = (ROOT / "README.md").read_text()
    data = card("" if variant == "fp32" else f"_{variant}")
    changed = data.get("predictions_changed_vs_fp32")
    changed_cell = "" if changed is None else (f"{changed} of {data['test_total']:,}" if changed else "0")
    row = f"| {variant} | {data['size_bytes'] / 1e6:.1f} MB | {percent(data['test_accuracy'])} | {changed_cell} |"
    assert row.replace("|  |", "| |") in readme, row


@pytest.mark.parametrize("package", ["service", "training", "harness", "benchmarks", "accuracy", "gpu", "loadtests"])
def test_the_layout_names_every_module(package):
    text = (ROOT / "README.md").read_text()
    layout = text[text.index("## Layout") :]
    layout = layout[: layout.index("```", layout.index("```") + 3)]
    modules = [p.name for p in sorted((ROOT / package).glob("*.py")) if p.name != "__init__.py"]
    assert [m for m in modules if m not in layout] == []
