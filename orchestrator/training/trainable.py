"""The Ray Tune trainable: train one grid point, checkpoint every epoch, write its tables.

Tune calls `train_trial(config)` with config = {"trial": TrialConfig dict, "sweep_uri": ...,
"provenance": {...}}. It checkpoints every epoch (every k-th where `training.min_steps` or
`training.budget: steps` gave a small subset k times the epochs, so the count of checkpoints stays `training.epochs`), and
resumes from the newest checkpoint Tune hands it, or,
in a new experiment (`repsweep resume`), from the newest one any earlier experiment of this
sweep saved for the same trial id. When it finishes it writes, each atomically and keyed by
its trial id: checkpoints/<trial_id>.pt and its rows of trials, layers, predictions and
train_subset. A trial whose loss becomes NaN is recorded as failed and ends normally, so the
sweep goes on.
"""

from __future__ import annotations

import json
import logging
import os
import posixpath
import tempfile
import time
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd
import pyarrow.fs as pafs
import torch
from ray import tune

from repsweep.analysis.tables.store import SweepStore
from repsweep.models import count_flops, count_params, model_bytes
from repsweep.orchestrator.training.data import fraction_indices, load_dataset
from repsweep.orchestrator.grid import TrialConfig
from repsweep.orchestrator.training.train import Diverged, build, pick_device, predict, train_epoch

STATE_FILE = "state.pt"  # inside each Tune checkpoint: model, optimizer, schedule, epoch
META_FILE = "meta.json"  # inside each Tune checkpoint: {"epoch": e, "wall_time_s": t}

log = logging.getLogger(__name__)


def trial_row(trial: TrialConfig, sweep: str, status: str, provenance: dict[str, str],
              **metrics: Any) -> dict[str, Any]:
    """One row of the trials table (analysis/tables/schemas.py): ids, the whole configuration, metrics; not
    excluded (the comparison marks a trial that did not train, analysis/study/quality.py)."""
    return {"trial_id": trial.trial_id, "sweep": sweep, "arch": trial.arch, **trial.config_row(),
            "status": status, "updated_at": datetime.now(timezone.utc).replace(microsecond=0),
            "excluded": False, **provenance, **metrics}


def is_finished(store: SweepStore, trial_id: str) -> bool:
    """Done (with its model file) or failed by divergence: nothing a re-run would change."""
    if not store.has_part("trials", trial_id):
        return False
    row = store.read_part("trials", trial_id).iloc[0]
    if row["status"] == "done":
        return store.exists("checkpoints", f"{trial_id}.pt")
    return row["status"] == "failed" and str(row["error"]).startswith("diverged")


def _earlier_checkpoints(store: SweepStore, trial_id: str) -> list[tune.Checkpoint]:
    """This trial's epoch checkpoints in every earlier Tune experiment of the sweep, newest epoch first."""
    found = []
    for exp in store.fs.get_file_info(pafs.FileSelector(store.path("tune"), allow_not_found=True)):
        trial_dir = posixpath.join(exp.path, trial_id)
        sel = pafs.FileSelector(trial_dir, allow_not_found=True)
        for ck in store.fs.get_file_info(sel):
            if not posixpath.basename(ck.path).startswith("checkpoint_"):
                continue
            try:
                with store.fs.open_input_stream(posixpath.join(ck.path, META_FILE)) as f:
                    epoch = json.loads(f.read())["epoch"]
            except (OSError, ValueError, KeyError):
                continue  # a checkpoint cut off mid-write
            found.append((epoch, ck.path))
    return [tune.Checkpoint(path, filesystem=store.fs) for _, path in sorted(found, reverse=True)]


def _resume_state(candidates: list[tune.Checkpoint], device: torch.device) -> tuple[dict | None, str | None]:
    """The newest checkpoint's saved state that loads, and a note if damaged ones were passed over
    (a truncated state.pt): it names them and says what the trial resumes from. (None, note): start over."""
    damaged = []
    for ckpt in candidates:
        try:
            with ckpt.as_directory() as d:
                state = torch.load(os.path.join(d, STATE_FILE), map_location=device, weights_only=True)
        except Exception as e:  # torch raises many types for a truncated file
            damaged.append(f"{posixpath.basename(ckpt.path)} ({type(e).__name__})")
            continue
        note = f"damaged checkpoint {', '.join(damaged)} passed over; resumed after epoch {state['epoch'] + 1}"
        return state, note if damaged else None
    return None, f"damaged checkpoint {', '.join(damaged)} passed over; started over" if damaged else None


def train_trial(config: dict[str, Any]) -> None:
    """Tune function trainable for one trial (see the module docstring)."""
    trial = TrialConfig.from_dict(config["trial"])
    store, sweep, prov = SweepStore(config["sweep_uri"]), config["sweep"], config["provenance"]
    tid = trial.trial_id
    if is_finished(store, tid):
        tune.report({"epoch": trial.training.epochs, "status": "skipped"})  # Tune needs one report
        return

    torch.set_num_threads(max(1, int(config.get("cpus", 1))))
    device = pick_device()
    data = load_dataset(trial.dataset).to(device)
    subset = fraction_indices(data.y_train.cpu().numpy(), trial.data_fraction, trial.seed)
    train_idx = torch.from_numpy(subset).to(device)
    model, opt, sched = build(trial, data, len(subset), device)
    epochs = trial.training.epochs_for(len(subset), len(data.y_train))[0]
    fixed = {"n_train": len(subset), "params": count_params(model),
             "flops": count_flops(model, data.input_shape), "device": str(device)}

    start_epoch, wall_before = 0, 0.0
    own = tune.get_checkpoint()
    state, note = _resume_state(([own] if own else []) + _earlier_checkpoints(store, tid), device)
    if own and state is not None and not note:  # Tune restarted it: a lost node, a killed driver
        note = f"restarted; went on after epoch {state['epoch'] + 1} from its checkpoint"
    if note:  # say which checkpoint the trial goes on from: `repsweep status` shows it
        log.warning("trial %s: %s", tid, note)
        store.write_part("trials", tid, [trial_row(trial, sweep, "running", prov, error=note,
                                                   epochs_done=state["epoch"] + 1 if state else 0, **fixed)])
    if state is not None:
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        start_epoch, wall_before = state["epoch"] + 1, state["wall_time_s"]
        if start_epoch == epochs:  # trained, but its outputs are gone: write them again
            tune.report(_finish(trial, store, sweep, prov, model, data, subset, state["train_loss"],
                                state["train_acc"], wall_before, fixed, note))
            return
    elif not note:
        store.write_part("trials", tid, [trial_row(trial, sweep, "running", prov, epochs_done=0, **fixed)])

    t0 = time.perf_counter()
    every = max(1, epochs // trial.training.epochs)  # epochs per checkpoint: training.epochs checkpoints in all
    for epoch in range(start_epoch, epochs):
        try:
            loss, acc = train_epoch(model, opt, sched, data, train_idx, trial=trial, epoch=epoch,
                                    augment_data=trial.dataset.augment)
        except Diverged as e:
            wall = wall_before + time.perf_counter() - t0
            store.write_part("trials", tid, [trial_row(trial, sweep, "failed", prov, error=f"diverged: {e}",
                                                       epochs_done=epoch, wall_time_s=wall, **fixed)])
            tune.report({"epoch": epoch, "status": "failed", "train_loss": float("nan")})
            return
        if epoch + 1 < epochs and (epoch + 1) % every:
            continue  # between checkpoints (a small subset's extra epochs: min_steps, budget steps)
        wall = wall_before + time.perf_counter() - t0
        metrics = {"epoch": epoch + 1, "train_loss": loss, "train_acc": acc, "status": "running"}
        if epoch + 1 == epochs:  # the final epoch is the model: evaluate and write it out
            metrics.update(_finish(trial, store, sweep, prov, model, data, subset, loss, acc, wall, fixed, note))
        with tempfile.TemporaryDirectory() as d:
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(),
                        "scheduler": sched.state_dict(), "epoch": epoch, "wall_time_s": wall,
                        "train_loss": loss, "train_acc": acc},
                       os.path.join(d, STATE_FILE))
            with open(os.path.join(d, META_FILE), "w") as f:
                json.dump({"epoch": epoch, "wall_time_s": wall}, f)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))


def _finish(trial: TrialConfig, store: SweepStore, sweep: str, prov: dict[str, str], model: torch.nn.Module,
            data: Any, subset: np.ndarray, loss: float, acc: float, wall: float,
            fixed: dict[str, Any], note: str | None = None) -> dict[str, Any]:
    """Evaluate on the test set and write the model file and the trial's table rows (`note`: how it resumed)."""
    tid = trial.trial_id
    test_loss, pred, conf, p_true = predict(model, data.x_test, data.y_test)
    label = data.y_test.cpu().numpy()
    test_acc = float((pred == label).mean())
    config = trial.model_config(data.input_shape[0], data.num_classes)
    store.write_bytes(model_bytes(model, config, data.input_shape, {"trial": trial.to_dict()}),
                      "checkpoints", f"{tid}.pt")
    store.write_part("predictions", tid, pd.DataFrame({
        "trial_id": tid, "example": np.arange(len(label)), "label": label, "prediction": pred,
        "correct": pred == label, "confidence": conf, "p_true": p_true}))
    store.write_part("layers", tid, [{"trial_id": tid, **info.__dict__}
                                     for info in model.layer_info(data.input_shape)])
    store.write_part("train_subset", tid, pd.DataFrame({"trial_id": tid, "example": subset}))
    done = {"test_loss": test_loss, "test_acc": test_acc, "status": "done"}
    store.write_part("trials", tid, [trial_row(
        trial, sweep, "done", prov, epochs_done=trial.training.epochs_for(len(subset), len(data.y_train))[0],
        train_loss=loss, train_acc=acc, test_loss=test_loss, test_acc=test_acc, wall_time_s=wall, error=note,
        checkpoint_uri=store.uri_of("checkpoints", f"{tid}.pt"), **fixed)])
    return done
