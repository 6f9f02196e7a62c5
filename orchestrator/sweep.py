"""The training stage's driver: spec -> grid -> Tuner -> fit -> trials table.

`open_sweep` creates or re-opens the sweep folder (its spec.yaml is the source of truth for
`resume`, `status` and `compare`); `train` runs one Tune experiment over every trial not yet
finished; `trial_status` summarises the trials table against the grid.
"""

from __future__ import annotations

import logging
import os
import posixpath
import subprocess
from datetime import datetime, timezone
from typing import Any

import pandas as pd
import yaml

from repsweep.analysis.store import SweepStore
from repsweep.orchestrator.grid import TrialConfig, expand_grid
from repsweep.orchestrator.spec import SpecError, SweepSpec, parse_spec

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------ the sweep

def open_sweep(spec: SweepSpec) -> SweepStore:
    """The sweep's storage; writes spec.yaml the first time, refuses a different spec later."""
    store = SweepStore(spec.sweep_uri)
    text = yaml.safe_dump(spec.to_dict(), sort_keys=False)
    if store.exists("spec.yaml"):
        saved = parse_spec(store.read_bytes("spec.yaml"), store.uri_of("spec.yaml"))
        if saved != spec:
            raise SpecError(f"sweep '{spec.name}' at '{store.uri}' was created from a different spec; "
                            f"give this one another name, or delete that folder to start over")
    else:
        try:
            store.write_bytes(text.encode(), "spec.yaml")
        except OSError as e:  # a file where the folder should be, a read-only disk, no permission
            reason = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
            raise SpecError(f"storage '{spec.storage}': cannot write the sweep at '{store.uri}' ({reason}); "
                            f"point storage at a folder or bucket you can write") from e
    return store


def load_sweep(location: str) -> tuple[SweepSpec, SweepStore]:
    """Re-open an existing sweep from its folder or URI (`<storage>/<name>`)."""
    store = SweepStore(location)
    if not store.exists("spec.yaml"):
        raise SpecError(f"no sweep at '{store.uri}' (it has no spec.yaml); pass the folder that "
                        f"'repsweep run' created, <storage>/<name>, e.g. ./repsweep-results/demo")
    spec = parse_spec(store.read_bytes("spec.yaml"), store.uri_of("spec.yaml"))
    return spec, store


def provenance() -> dict[str, str]:
    """Code and package versions recorded with every trial."""
    import ray
    import torch

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        sha = subprocess.run(["git", "-C", here, "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        sha = ""
    from importlib.metadata import PackageNotFoundError, version

    try:
        pkg = version("repsweep")
    except PackageNotFoundError:
        pkg = "unknown"
    return {"code_version": f"{pkg}+{sha}" if sha else pkg, "torch_version": torch.__version__,
            "ray_version": ray.__version__}


# ------------------------------------------------------------------------- training

def _cost(t: TrialConfig) -> float:
    """Relative training cost: depth x width^2 x data (FLOPs scale so); biggest first."""
    return t.depth * t.width ** 2 * t.data_fraction


def train(spec: SweepSpec, store: SweepStore, *, progress: Any = None) -> dict[str, int]:
    """Train every trial of the grid not yet finished; returns counts by status."""
    from ray import tune

    from repsweep.orchestrator.trainable import is_finished, train_trial, trial_row

    trials = expand_grid(spec)
    pending = sorted((t for t in trials if not is_finished(store, t.trial_id)), key=_cost, reverse=True)
    log.info("%d of %d trials to train", len(pending), len(trials))
    if pending:
        prov = provenance()
        by_id = {t.trial_id: t for t in pending}
        name_of = lambda tune_trial: _trial_id(tune_trial.config)  # noqa: E731
        tuner = tune.Tuner(
            tune.with_resources(train_trial, {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}),
            param_space={"trial": tune.grid_search([t.to_dict() for t in pending]),
                         "sweep_uri": store.uri, "sweep": spec.name, "provenance": prov,
                         "cpus": spec.resources.cpu},
            tune_config=tune.TuneConfig(reuse_actors=True, trial_name_creator=name_of,
                                        trial_dirname_creator=name_of),
            run_config=tune.RunConfig(
                name=datetime.now(timezone.utc).strftime("run-%Y%m%dT%H%M%S"),
                storage_path=store.path("tune"), storage_filesystem=store.fs,
                failure_config=tune.FailureConfig(max_failures=1),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
                callbacks=[progress] if progress else None, verbose=0),
        )
        for result in tuner.fit():
            if result.error is not None:  # raised twice: recorded as failed, the sweep goes on
                tid = posixpath.basename(result.path)  # named by trial id (config: None if it never reported)
                msg = str(result.error).strip().splitlines()
                store.write_part("trials", tid, [trial_row(by_id[tid], spec.name, "failed", prov,
                                                           error=(msg[-1] if msg else repr(result.error))[:500])])
    return trial_status(spec, store)["status"].value_counts().to_dict()


def _trial_id(config: dict[str, Any]) -> str:
    """The trial id of a Tune trial's config (our ids, not Ray's)."""
    return TrialConfig.from_dict(config["trial"]).trial_id


def trial_status(spec: SweepSpec, store: SweepStore) -> pd.DataFrame:
    """Every grid point with its status (done / running / failed / pending) and metrics."""
    grid = pd.DataFrame([{"trial_id": t.trial_id, "arch": t.arch, "data_fraction": t.data_fraction,
                          "seed": t.seed} for t in expand_grid(spec)])
    rows = store.read_table("trials")[["trial_id", "status", "epochs_done", "test_acc", "wall_time_s", "error"]]
    out = grid.merge(rows, on="trial_id", how="left")
    out["status"] = out["status"].fillna("pending")
    return out
