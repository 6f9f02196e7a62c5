"""Spec validation: every bad field is one clear line, exit code 2, and nothing written."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from repsweep.orchestrator.cli import main
from repsweep.orchestrator.grid import expand_grid
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
    ("unknown budget", {"training": {"budget": "time"}}, "'training.budget': got 'time', expected epochs or steps"),
    ("negative grad_clip", {"training": {"grad_clip": -1}}, "'training.grad_clip': got -1.0, expected a gradient norm"),
    ("warm-up longer than training", {"training": {"epochs": 2, "warmup_epochs": 5}},
     "'training.warmup_epochs': got 5.0"),
    ("negative min_errors", {"findings": {"min_errors": -1}}, "'findings.min_errors': got -1, expected an integer >= 0"),
    ("unknown dataset", {"dataset": {"name": "mnist"}}, "'dataset.name': got 'mnist', expected one of digits"),
    ("cifar without root", {"dataset": {"name": "cifar10"}}, "'dataset.root': got None"),
    ("cifar root missing", {"dataset": {"name": "cifar10", "root": "/nonexistent/cifar"}},
     "dataset.root '/nonexistent/cifar' is not a folder"),
    ("bad sweep name", {"name": "a/b"}, "'name': got 'a/b'"),
    ("fractional gpu above one", {"resources": {"gpu": 1.5}}, "'resources.gpu': got 1.5"),
    ("unknown pair kind", {"compare": {"pairs": ["within", "cross_width"]}}, "'compare.pairs': got 'cross_width'"),
    ("section not a mapping", {"training": [1, 2]}, "'training': got [1, 2], expected a mapping"),
    # values the validator once accepted but nothing downstream can hold
    ("lr NaN", {"training": {"lr": float("nan")}}, "'training.lr': got nan, expected a finite number"),
    ("lr infinite", {"training": {"lr": float("inf")}}, "'training.lr': got inf, expected a finite number"),
    ("weight decay NaN", {"training": {"weight_decay": float("nan")}}, "'training.weight_decay': got nan"),
    ("cpu NaN", {"resources": {"cpu": float("nan")}}, "'resources.cpu': got nan, expected a finite number"),
    ("gpu infinite", {"resources": {"gpu": float("inf")}}, "'resources.gpu': got inf, expected a finite number"),
    ("compare gpu NaN", {"compare": {"gpu": float("nan")}}, "'compare.gpu': got nan, expected a finite number"),
    ("compare cpu -inf", {"compare": {"cpu": float("-inf")}}, "'compare.cpu': got -inf, expected a finite number"),
    ("seed beyond int32", {"grid": {"seed": [2**31]}}, "'grid.seed': got 2147483648, expected an integer from 0"),
    ("seed beyond int64", {"grid": {"seed": [2**70]}}, "expected an integer the tables can store"),
    ("lr beyond float", {"training": {"lr": 10**400}}, "'training.lr': got 1000000000000000000000000000000000000"),
    ("huge depth", {"grid": {"depth": [6 * 10**6 + 2]}}, "'grid.depth': got 6000002, expected 6n+2 with n >= 1, at most 2,000"),
    ("huge width", {"grid": {"width": [1000]}}, "'grid.width': got 1000, expected an integer width multiplier from 1 to 64"),
    ("huge image size", {"dataset": {"name": "digits", "image_size": 100000}},
     "'dataset.image_size': got 100000, expected an integer from 4 to 512"),
    ("probe set below the estimator's batch", {"compare": {"probe_examples": 3}},
     "'compare.probe_examples': got 3, expected 0 (the whole test set) or an integer >= 4"),
    ("grid of a million trials", {"grid": {"depth": [8], "seed": list(range(1000)), "width": list(range(1, 11)),
                                           "data_fraction": [i / 100 for i in range(1, 101)]}},
     "'grid': got '1,000,000 trials', expected at most 10,000 trials per sweep"),
    ("an axis of 20,000 values", {"grid": {"seed": list(range(20000))}}, "'grid.seed': got 'a list of 20,000 values'"),
    ("a long value is cut short", {"name": "x" * 5000}, "'name': got 'xxxxxxxx"),
    ("a long unknown key is cut short", {"k" * 5000: 1}, "kkkk...': unknown"),
]


@pytest.mark.parametrize("what, override, message", BAD_SPECS, ids=[b[0] for b in BAD_SPECS])
def test_bad_spec_is_one_line_exit_2_and_writes_nothing(tmp_path, tiny_spec, capsys, what, override, message):
    path = tiny_spec(**override)
    rc = main(["run", str(path)])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.count("\n") == 1 and err.startswith("repsweep: error: ") and len(err) < 400
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
    assert spec.grid == [GridSpec(depth=[20], width=[2], data_fraction=[0.5], seed=[3])]


def test_examples_are_valid_specs():
    demo = load_spec(EXAMPLES / "demo.yaml")
    paper = load_spec(EXAMPLES / "cifar10-paper.yaml")
    points = expand_grid(demo)
    assert demo.dataset.name == "digits" and len({t.depth for t in points}) >= 4 and max(t.depth for t in points) >= 56
    assert len({t.width for t in points}) >= 2 and {t.data_fraction for t in points} == {1.0, 0.25, 0.0625}
    # the wide/deep pair has the 4 seeds a permutation test over seeds needs to reach p < 0.05
    seeds = {(t.depth, t.width): set() for t in points if t.data_fraction == 1.0}
    for t in points:
        if t.data_fraction == 1.0:
            seeds[(t.depth, t.width)].add(t.seed)
    assert len(seeds[(8, 2)]) >= 4 and len(seeds[(20, 1)]) >= 4
    assert paper.dataset.name == "cifar10"


def test_spec_round_trips_through_yaml():
    spec = load_spec(EXAMPLES / "demo.yaml")
    assert spec_from_dict(yaml.safe_load(yaml.safe_dump(spec.to_dict()))) == spec


def test_the_trial_axes_are_the_grids_numeric_fields():
    assert AXES == ("depth", "width", "data_fraction", "seed")
    with pytest.raises(SpecError, match="training.lr"):
        TrainingSpec(lr=0)
    assert {f.name for f in dataclasses.fields(GridSpec)} == {*AXES, "model_name"}  # a model's name is the model's field


HOSTILE = {  # file name -> (bytes, text the one-line error must contain)
    "alias-bomb.yaml": (("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, "
        f"*{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}, *{chr(97 + i)}]\n" for i in range(9))
        + "name: bomb\ngrid: {seed: *j}\n").encode(), "YAML aliases (*name) are not allowed"),
    "deep.yaml": (b"name: x\ngrid: " + b"[" * 100_000 + b"]" * 100_000 + b"\n", "nested too deeply"),
    "latin1.yaml": ("name: caf\u00e9\n".encode("latin-1"), "is not UTF-8 text"),
    "huge.yaml": (b"name: x\n" + b"# padding\n" * 200_000, "a spec is a small YAML file"),
    "binary.yaml": (bytes(range(256)) * 10, "is not UTF-8 text"),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_a_hostile_spec_file_is_one_line_within_seconds_and_little_memory(tmp_path, name):
    import subprocess
    import sys
    import time

    raw, message = HOSTILE[name]
    (tmp_path / name).write_bytes(raw)
    # the peak RSS of this process alone: /proc's VmHWM starts anew at exec (ru_maxrss would
    # carry the forking test process's own peak over)
    probe = ("import re, sys; from repsweep.orchestrator.cli import main; rc = main(['run', sys.argv[1]]); "
             "print(re.search(r'VmHWM:\\s+(\\d+) kB', open('/proc/self/status').read()).group(1)); sys.exit(rc)")
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", probe, str(tmp_path / name)], cwd=tmp_path, capture_output=True,
                         text=True, timeout=60)
    seconds = time.perf_counter() - t0
    assert out.returncode == 2, out.stderr[-500:]
    assert out.stderr.count("\n") == 1 and message in out.stderr and len(out.stderr) < 400, out.stderr[:500]
    peak_mb = int(out.stdout.split()[-1]) / 1024
    assert seconds < 20 and peak_mb < 800, (seconds, peak_mb)  # the interpreter with torch imported: ~450 MB
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing written


def test_the_findings_block_threshold_defaults_to_the_block_rule_s_central_level():
    from repsweep.analysis.study.blocks import CENTRAL_THRESHOLD, MIN_SIZE
    from repsweep.analysis.study.findings_spec import FindingsSpec

    assert (FindingsSpec().block_threshold, FindingsSpec().block_min_layers) == (CENTRAL_THRESHOLD, MIN_SIZE)
