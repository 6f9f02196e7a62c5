"""Grid expansion and trial ids: stable across processes, sensitive to what changes a model."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys

from orchestrator.grid import TrialConfig, expand_grid
from orchestrator.spec import load_spec, spec_from_dict

IDS_SCRIPT = "import json,sys; from orchestrator import load_spec, expand_grid; " \
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


def test_trial_id_changes_with_training_but_not_with_data_location():
    base = expand_grid(spec_from_dict({"name": "x", "dataset": {"name": "cifar10", "root": "/a"}}))[0]
    moved = dataclasses.replace(base, dataset=dataclasses.replace(base.dataset, root="/b"))
    other_lr = dataclasses.replace(base, training=dataclasses.replace(base.training, lr=0.05))
    assert moved.trial_id == base.trial_id
    assert other_lr.trial_id != base.trial_id
    assert base.trial_id.startswith("d20-w1-f1-s0-")
    assert TrialConfig.from_dict(base.to_dict()) == base
