"""Grid expansion and trial ids: stable across processes, sensitive to what changes a model."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import types
import typing

import pyarrow as pa

from repsweep.orchestrator.grid import TrialConfig, expand_grid
from repsweep.orchestrator.spec import AXES, load_spec, spec_from_dict

IDS_SCRIPT = "import json,sys; from repsweep.orchestrator import load_spec, expand_grid; " \
             "print(json.dumps([t.trial_id for t in expand_grid(load_spec(sys.argv[1]))]))"


def test_same_spec_gives_same_trial_ids_in_two_processes(tiny_spec):
    path = tiny_spec(grid={"depth": [8, 20], "width": [1, 2], "seed": [0, 1]})
    runs = [json.loads(subprocess.run([sys.executable, "-c", IDS_SCRIPT, str(path)], capture_output=True,
                                      text=True, check=True, env={"PYTHONHASHSEED": str(i), "PATH": ""}).stdout)
            for i in (1, 2)]
    assert runs[0] == runs[1] == [t.trial_id for t in expand_grid(load_spec(path))]
    assert len(set(runs[0])) == 2 * 2 * 2 * 2


def test_grid_is_the_product_of_the_axes_in_order():
    spec = spec_from_dict({"name": "x", "grid": {"depth": [8, 20], "width": [1, 2, 4], "seed": [0, 1]}})
    trials = expand_grid(spec)
    assert len(trials) == 12
    assert [(t.depth, t.width, t.seed) for t in trials[:3]] == [(8, 1, 0), (8, 1, 1), (8, 2, 0)]


def test_a_union_of_grids_expands_to_exactly_the_listed_points_each_once():
    spec = spec_from_dict({"name": "x", "grid": [
        {"depth": [8, 20, 56], "width": 1, "seed": [0, 1]},  # a depth series at width 1
        {"depth": 20, "width": [1, 2, 4], "seed": [0, 1]},  # a width series at depth 20: d20-w1 again
    ]})
    points = [(t.depth, t.width, t.seed) for t in expand_grid(spec)]
    expected = [(d, 1, s) for d in (8, 20, 56) for s in (0, 1)] + [(20, w, s) for w in (2, 4) for s in (0, 1)]
    assert points == expected
    assert len({t.trial_id for t in expand_grid(spec)}) == 10
    single = spec_from_dict({"name": "x", "grid": {"depth": [8, 20, 56], "width": 1, "seed": [0, 1]}})
    assert [t.trial_id for t in expand_grid(single)] == [t.trial_id for t in expand_grid(spec)][:6]


def test_min_steps_adds_epochs_only_where_a_subset_is_small_and_leaves_old_ids_alone():
    from repsweep.orchestrator.spec import TrainingSpec

    t = TrainingSpec(epochs=40, batch_size=128, warmup_epochs=5, min_steps=240)
    assert t.epochs_for(1437, 1437) == (40, 5.0)  # 12 steps an epoch: 480 steps already
    assert t.epochs_for(359, 1437) == (80, 10.0)  # 3 steps an epoch: 240 steps, warm-up scaled alike
    assert t.epochs_for(90, 1437) == (240, 30.0)
    base = expand_grid(spec_from_dict({"name": "x"}))[0]
    with_steps = dataclasses.replace(base, training=dataclasses.replace(base.training, min_steps=240))
    assert with_steps.trial_id != base.trial_id
    assert base.trial_id == "d20-w1-f1-s0-037b6865"  # the id it had before min_steps existed (commit 0787f92)


def test_a_steps_budget_gives_every_fraction_the_steps_of_all_the_data_and_is_in_the_id():
    from repsweep.orchestrator.spec import TrainingSpec

    t = TrainingSpec(epochs=40, batch_size=128, warmup_epochs=5, budget="steps")
    for n_train, epochs in ((1437, 40), (359, 160), (90, 480)):  # 12, 3 and 1 steps an epoch
        got, warmup = t.epochs_for(n_train, 1437)
        assert (got, warmup) == (epochs, 5 * epochs / 40)  # warm-up the same share of training
        assert got * -(-n_train // 128) == 40 * 12  # 480 SGD steps at every fraction
    assert TrainingSpec(epochs=40, batch_size=128, min_steps=960, budget="steps").epochs_for(1437, 1437)[0] == 80
    base = expand_grid(spec_from_dict({"name": "x"}))[0]
    steps = dataclasses.replace(base, training=dataclasses.replace(base.training, budget="steps"))
    assert steps.trial_id != base.trial_id and steps.config_row()["budget"] == "steps"
    assert base.trial_id == "d20-w1-f1-s0-037b6865"  # "epochs", the default, leaves old ids as they were


def test_trial_id_changes_with_training_but_not_with_data_location():
    base = expand_grid(spec_from_dict({"name": "x", "dataset": {"name": "cifar10", "root": "/a"}}))[0]
    moved = dataclasses.replace(base, dataset=dataclasses.replace(base.dataset, root="/b"))
    other_lr = dataclasses.replace(base, training=dataclasses.replace(base.training, lr=0.05))
    assert moved.trial_id == base.trial_id
    assert other_lr.trial_id != base.trial_id
    assert base.trial_id.startswith("d20-w1-f1-s0-")
    assert TrialConfig.from_dict(base.to_dict()) == base


def _spec_fields() -> dict[str, list[str]]:
    """Each spec section a trial carries, with its fields, read from the dataclasses themselves."""
    from repsweep.orchestrator import spec

    return {s: [f.name for f in dataclasses.fields(cls)]
            for s, cls in (("model", spec.ModelSpec), ("dataset", spec.DatasetSpec), ("training", spec.TrainingSpec))}


def test_every_spec_field_of_a_trial_is_a_trials_column():
    from repsweep.analysis.tables.schemas import SCHEMAS

    names = SCHEMAS["trials"].names
    expected = list(AXES) + [(s if f == "name" else f if s == "training" else f"{s}_{f}")
                             for s, fields in _spec_fields().items() for f in fields]
    assert [c for c in names if c in expected] == expected
    assert len(set(names)) == len(names)
    assert {"dataset_augment", "dataset_image_size", "model_family", "arch"} <= set(names)


_ARROW = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}


def _config_schema() -> list[tuple[str, pa.DataType]]:
    """The columns `TrialConfig.config_row` fills, typed from the spec's annotations (`X | None` as X)."""
    out = []
    for name, tp in TrialConfig.config_columns():
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            (tp,) = [a for a in typing.get_args(tp) if a is not type(None)]
        out.append((name, _ARROW[tp]))
    return out


def test_the_trials_table_lists_every_configuration_column_with_its_type():
    from repsweep.analysis.tables.schemas import TRIAL_CONFIG

    assert [(n, str(t)) for n, t in TRIAL_CONFIG] == [(n, str(t)) for n, t in _config_schema()], (
        "a spec field and the trials table's columns differ: list it in analysis/tables/schemas.py, TRIAL_CONFIG")


def test_a_field_added_to_the_spec_changes_the_id_and_is_a_column_the_table_must_list(monkeypatch):
    from repsweep.analysis.tables.schemas import TRIAL_CONFIG
    from repsweep.orchestrator import grid
    from repsweep.orchestrator.spec import TrainingSpec

    @dataclasses.dataclass(frozen=True)
    class Extended(TrainingSpec):
        label_smoothing: float = 0.1  # a field a later version might add

    monkeypatch.setattr(grid, "TrainingSpec", Extended)  # what TrialConfig's annotation names
    added = [c for c in _config_schema() if c[0] not in dict(TRIAL_CONFIG)]
    assert [(n, str(t)) for n, t in added] == [("label_smoothing", "double")]  # the test above names it
    base = expand_grid(spec_from_dict({"name": "x"}))[0]
    trial = dataclasses.replace(base, training=Extended())
    assert trial.config_row()["label_smoothing"] == 0.1
    assert trial.trial_id != base.trial_id  # it changes the model, so it changes the id


def test_a_column_a_table_does_not_know_is_refused_not_dropped(tmp_path):
    import pytest

    from repsweep.analysis.tables.schemas import TableError
    from repsweep.analysis.tables.store import SweepStore
    from repsweep.orchestrator.training.trainable import trial_row

    trial = expand_grid(spec_from_dict({"name": "x"}))[0]
    store = SweepStore(str(tmp_path))
    row = trial_row(trial, "x", "done", {}, label_smoothing=0.1)
    with pytest.raises(TableError, match="table 'trials' has no column 'label_smoothing'"):
        store.write_part("trials", trial.trial_id, [row])
    assert not store.has_part("trials", trial.trial_id)
    row.pop("label_smoothing")
    store.write_part("trials", trial.trial_id, [row])
    back = store.read_part("trials", trial.trial_id).iloc[0]
    assert back["dataset_augment"] and back["dataset_image_size"] == 32 and back["arch"] == "d20-w1"
