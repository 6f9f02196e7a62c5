"""The training loop's SGD step: training.grad_clip bounds how far one step moves the weights."""

from __future__ import annotations

import torch

from repsweep.orchestrator.grid import expand_grid
from repsweep.orchestrator.spec import spec_from_dict
from repsweep.orchestrator.training.data import load_dataset
from repsweep.orchestrator.training.train import build, train_epoch
from tests.test_cka import one_torch_thread  # noqa: F401 (a fixture: one torch thread, the suite runs in parallel)


def _one_step(grad_clip: float) -> float:
    """The norm of the weights' change over one SGD step of a depth-8 ResNet on 64 digits (lr 0.1, no
    momentum, decay or warm-up, so the step is lr times the gradient, clipped or not)."""
    spec = spec_from_dict({"name": "x", "grid": {"depth": [8]}, "training": {
        "lr": 0.1, "momentum": 0.0, "weight_decay": 0.0, "warmup_epochs": 0, "batch_size": 64,
        "grad_clip": grad_clip}})
    trial = expand_grid(spec)[0]
    data = load_dataset(spec.dataset)
    model, opt, sched = build(trial, data, 64, torch.device("cpu"))
    before = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()
    train_epoch(model, opt, sched, data, torch.arange(64), trial=trial, epoch=0, augment_data=False)
    return float((torch.nn.utils.parameters_to_vector(model.parameters()).detach() - before).norm())


def test_grad_clip_bounds_the_step_and_off_leaves_it_whole():
    free = _one_step(0.0)
    assert free > 0.01  # lr 0.1 times a gradient of norm > 0.1: the bound below bites
    clipped = _one_step(1e-3)
    assert 0 < clipped <= 0.1 * 1e-3 * (1 + 1e-4)  # lr times the largest norm allowed
    assert clipped >= 0.1 * 1e-3 * 0.99  # clipped to the bound, not below it


def test_grad_clip_is_in_the_trial_id_only_when_on():
    base = expand_grid(spec_from_dict({"name": "x"}))[0]
    clipped = expand_grid(spec_from_dict({"name": "x", "training": {"grad_clip": 1.0}}))[0]
    assert base.trial_id == "d20-w1-f1-s0-037b6865"  # off, the default: the id it had before (commit 0787f92)
    assert clipped.trial_id != base.trial_id and clipped.config_row()["grad_clip"] == 1.0
