"""Spec validation: every bad field is one clear line, exit code 2, and nothing written."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from repsweep.orchestrator.cli import main
from repsweep.orchestrator.spec import AXES, GridSpec, SpecError, TrainingSpec, load_spec, spec_from_dict

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"

# (what is wrong, override of a valid spec, text the one-line error must contain)
BAD_SPECS = [
    ("unknown top-level key", {"epochs": 3}, "'epochs': unknown; valid fields are name, model, dataset"),
    ("unknown nested key", {"training": {"learning_rate": 0.1}}, "'training.learning_rate': unknown"),
    ("depth not 6n+2", {"grid": {"depth": [8, 7]}}, "'grid.depth': got 7, expected 6n+2"),
    ("width zero", {"grid": {"width": 0}}, "'grid.width': got 0"),
    ("fraction above one", {"grid": {"data_fraction": [0.5, 1.5]}}, "'grid.data_fraction': got 1.5"),
    ("negative seed", {"grid": {"seed": [-1]}}, "'grid.seed': got -1"),
    ("empty axis", {"grid": {"depth": []}}, "'grid.depth': got [], expected at least one value"),
    ("repeated axis value", {"grid": {"seed": [0, 0]}}, "'grid.seed': got [0, 0], expected distinct"),
    ("lr a string", {"training": {"lr": "fast"}}, "'training.lr': got 'fast', expected a number"),
    ("epochs a bool", {"training": {"epochs": True}}, "'training.epochs': got True, expected an integer"),
    ("batch size one", {"training": {"batch_size": 1}}, "'training.batch_size': got 1"),
    ("momentum one", {"training": {"momentum": 1.0}}, "'training.momentum': got 1.0"),
    ("warm-up longer than training", {"training": {"epochs": 2, "warmup_epochs": 5}},
     "'training.warmup_epochs': got 5.0"),
    ("unknown dataset", {"dataset": {"name": "mnist"}}, "'dataset.name': got 'mnist', expected one of digits"),
    ("cifar without root", {"dataset": {"name": "cifar10"}}, "'dataset.root': got None"),
    ("cifar root missing", {"dataset": {"name": "cifar10", "root": "/nonexistent/cifar"}},
     "dataset.root '/nonexistent/cifar' is not a folder"),
    ("bad sweep name", {"name": "a/b"}, "'name': got 'a/b'"),
    ("fractional gpu above one", {"resources": {"gpu": 1.5}}, "'resources.gpu': got 1.5"),
    ("unknown pair kind", {"compare": {"pairs": ["within", "cross_width"]}}, "'compare.pairs': got 'cross_width'"),
    ("section not a mapping", {"training": [1, 2]}, "'training': got [1, 2], expected a mapping"),
]


@pytest.mark.parametrize("what, override, message", BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_bad_spec_is_one_line_exit_2_and_writes_nothing(tmp_path, tiny_spec, capsys, what, override, message):
    path = tiny_spec(**override)
    rc = main(["run", str(path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("repsweep: error: ")
    assert message in err
    assert not (tmp_path / "results").exists()


def test_missing_required_name_and_unparseable_yaml_are_clear(tmp_path, capsys):
    (tmp_path / "noname.yaml").write_text("grid: {depth: [8]}\n")
    (tmp_path / "broken.yaml").write_text("name: x\ngrid: {depth: [8\n")
    (tmp_path / "list.yaml").write_text("- name: x\n")
    assert main(["run", str(tmp_path / "noname.yaml")]) == 2
    assert "'name': missing; it is required" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "broken.yaml")]) == 2
    assert "not valid YAML at line" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "list.yaml")]) == 2
    assert "expected a mapping" in capsys.readouterr().err
    assert main(["run", str(tmp_path / "absent.yaml")]) == 2
    assert "not found" in capsys.readouterr().err


def test_axis_may_hold_a_single_value():
    spec = spec_from_dict({"name": "x", "grid": {"depth": 20, "width": 2, "data_fraction": 0.5, "seed": 3}})
    assert spec.grid == GridSpec(depth=[20], width=[2], data_fraction=[0.5], seed=[3])


def test_examples_are_valid_specs():
    demo = load_spec(EXAMPLES / "demo.yaml")
    paper = load_spec(EXAMPLES / "cifar10-paper.yaml")
    assert demo.dataset.name == "digits" and len(demo.grid.depth) >= 3 and max(demo.grid.depth) >= 56
    assert len(demo.grid.width) >= 2 and len(demo.grid.data_fraction) >= 2
    assert paper.dataset.name == "cifar10"


def test_spec_round_trips_through_yaml():
    spec = load_spec(EXAMPLES / "demo.yaml")
    assert spec_from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict()))) == spec


def test_axes_come_from_the_grid_dataclass():
    assert AXES == ("depth", "width", "data_fraction", "seed")
    with pytest.raises(SpecError, match="training.lr"):
        TrainingSpec(lr=0)
    assert {f.name for f in dataclasses.fields(GridSpec)} == set(AXES)
