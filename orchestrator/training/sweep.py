"""The training stage's driver: spec -> grid -> Tuner -> fit -> trials table.

`open_sweep` creates or re-opens the sweep folder (its spec.yaml, checked against the copy the
sweep began with, is the source of truth for `resume`, `status` and `compare`); `train` runs one
Tune experiment over every trial not yet finished; `trial_status` summarises the trials table
against the grid.
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

from repsweep.analysis.tables.store import SweepStore
from repsweep.orchestrator.grid import TrialConfig, expand_grid
from repsweep.orchestrator.space import check_room, no_space, reported, training_bytes
from repsweep.orchestrator.spec import SpecError, SweepSpec, plain_number, shorten, stored_spec

log = logging.getLogger(__name__)


# ------------------------------------------------------------------------ the sweep

STARTED = "spec.started.yaml"  # spec.yaml as the sweep began: a spec.yaml edited since is refused


def open_sweep(spec: SweepSpec) -> SweepStore:
    """The sweep's storage; writes spec.yaml (and STARTED) the first time, refuses a different spec later."""
    store = SweepStore(spec.sweep_uri)
    text = yaml.safe_dump(spec.to_dict(), sort_keys=False)
    if store.exists("spec.yaml"):
        if saved_spec(store) != spec:
            raise SpecError(f"sweep '{spec.name}' at '{store.uri}' was created from a different spec; "
                            f"give this one another name, or delete that folder to start over")
    else:
        try:
            store.write_bytes(text.encode(), STARTED)
            store.write_bytes(text.encode(), "spec.yaml")  # last: a sweep exists once its spec.yaml does
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
    return saved_spec(store), store


def saved_spec(store: SweepStore) -> SweepSpec:
    """The sweep's spec.yaml, refused if it was edited after the sweep began.

    Trials, tiles and their keys follow the spec the sweep began with: another grid would regroup
    the tiles and compute every pair again beside the old rows. (Sweeps begun before STARTED was
    written have no copy to check against.)
    """
    spec = stored_spec(store)
    if store.exists(STARTED) and (started := stored_spec(store, STARTED)) != spec:
        raise SpecError(f"'{store.uri_of('spec.yaml')}' was edited after the sweep began "
                        f"({_changes(started.to_dict(), spec.to_dict())}); put it back as it was "
                        f"({STARTED} beside it is a copy), or run the edited spec as a sweep of another name")
    return spec


def _changes(before: dict[str, Any], after: dict[str, Any], limit: int = 3) -> str:
    """The first `limit` fields that differ, as 'grid[0].depth: [8, 14] -> [8, 20]'."""
    def flat(value: Any, name: str) -> dict[str, Any]:
        if isinstance(value, dict):
            return {k: v for key, item in value.items() for k, v in flat(item, f"{name}.{key}".lstrip(".")).items()}
        if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):  # the grids
            return {k: v for i, item in enumerate(value) for k, v in flat(item, f"{name}[{i}]").items()}
        return {name: value}

    a, b = flat(before, ""), flat(after, "")
    def shown(v: Any) -> str:  # 20, not 20.0
        return shorten([plain_number(x) if isinstance(x, float) else x for x in v] if isinstance(v, list)
                       else plain_number(v) if isinstance(v, float) else v)

    diff = [f"{k}: {shown(a.get(k))} -> {shown(b.get(k))}" for k in [*a, *(k for k in b if k not in a)]
            if a.get(k) != b.get(k)]
    return "; ".join(diff[:limit]) + (f"; and {len(diff) - limit} more" if len(diff) > limit else "")


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
    pkg = package_version()
    return {"code_version": f"{pkg}+{sha}" if sha else pkg, "torch_version": torch.__version__,
            "ray_version": ray.__version__}


def package_version() -> str:
    """repsweep's installed version ('unknown' when run from a folder that was never installed)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("repsweep")
    except PackageNotFoundError:
        return "unknown"


# ------------------------------------------------------------------------- training

def _cost(t: TrialConfig) -> float:
    """Relative training cost: depth x width^2 x data (FLOPs scale so); biggest first."""
    return t.depth * t.width ** 2 * t.data_fraction


def train(spec: SweepSpec, store: SweepStore, *, progress: Any = None) -> dict[str, int]:
    """Train every trial of the grid not yet finished; returns counts by status."""
    from repsweep.orchestrator.training.trainable import is_finished

    trials = expand_grid(spec)
    pending = sorted((t for t in trials if not is_finished(store, t.trial_id)), key=_cost, reverse=True)
    log.info("%d of %d trials to train", len(pending), len(trials))
    if pending:
        what = f"training {len(pending)} trial{'s' * (len(pending) > 1)}"
        needed = training_bytes(pending)
        check_room(store, needed, what)
        with reported(store, what, needed):
            _fit(spec, store, pending, progress)
    return trial_status(spec, store)["status"].value_counts().to_dict()


def _fit(spec: SweepSpec, store: SweepStore, pending: list[TrialConfig], progress: Any) -> None:
    """One Tune experiment over `pending`; a trial that raised twice is recorded as failed."""
    from ray import tune

    from repsweep.orchestrator.training.trainable import train_trial, trial_row

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
        if no_space(result.error):  # not the trial's failure (train's `reported` says so); resume trains it
            raise result.error
        if result.error is not None:  # raised twice: recorded as failed, the sweep goes on
            tid = posixpath.basename(result.path)  # named by trial id (config: None if it never reported)
            msg = str(result.error).strip().splitlines()
            store.write_part("trials", tid, [trial_row(by_id[tid], spec.name, "failed", prov,
                                                       error=(msg[-1] if msg else repr(result.error))[:500])])


def _trial_id(config: dict[str, Any]) -> str:
    """The trial id of a Tune trial's config (our ids, not Ray's)."""
    return TrialConfig.from_dict(config["trial"]).trial_id


def trial_status(spec: SweepSpec, store: SweepStore) -> pd.DataFrame:
    """Every grid point with its status (done / running / failed / pending) and metrics."""
    grid = pd.DataFrame([{"trial_id": t.trial_id, "arch": t.arch, "data_fraction": t.data_fraction,
                          "seed": t.seed} for t in expand_grid(spec)])
    rows = store.read_table("trials")[["trial_id", "status", "epochs_done", "test_acc", "wall_time_s", "error",
                                       "exclusion_reason"]]
    out = grid.merge(rows, on="trial_id", how="left")
    out["status"] = out["status"].fillna("pending")
    return out
