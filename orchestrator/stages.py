"""The comparison stage's two kinds of analysis beside the tiles, and the jobs that run them.

- A `TrialStage` runs once per finished trial, on the actor pool: it loads the trial's model
  and data and returns the trial's rows of its table, written as part `<trial_id>`. A trial
  whose part exists is done and skipped, so re-runs are resumable and idempotent like tiles.
  (The home of linear probes and block deletion.)
- A `DerivedTable` is computed from other tables, no models: tables in, table parts out,
  recomputed by every comparison (its inputs may have grown) and written only where its rows
  changed, so a re-run rewrites nothing. (The home of block detection, error statistics,
  findings.) `DERIVED_TABLES` run in order, after the tiles and per-trial stages.

Every job's end is recorded in the `stage_runs` table (tiles in `tiles`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from repsweep.analysis import predictions
from repsweep.analysis.store import SweepStore
from repsweep.models import RepresentationModel
from repsweep.orchestrator.data import Dataset
from repsweep.orchestrator.grid import TrialConfig
from repsweep.orchestrator.plan import Plan
from repsweep.orchestrator.pool import Job
from repsweep.orchestrator.spec import SweepSpec


@dataclass(frozen=True)
class TrialStage:
    """An analysis of one trained model; `compute(model, data, trial, spec)` returns its rows."""

    table: str  # the table it writes (analysis/schemas.py), one part per trial
    compute: Callable[[RepresentationModel, Dataset, TrialConfig, SweepSpec], pd.DataFrame]
    enabled: Callable[[SweepSpec], bool] = lambda spec: True  # e.g. switched by a compare field


@dataclass(frozen=True)
class DerivedTable:
    """A table computed from a sweep's tables; `compute(store, plan)` returns its parts by key."""

    table: str
    compute: Callable[[SweepStore, Plan], dict[str, pd.DataFrame]]


# ------------------------------------------------------------------ per-trial stages

TRIAL_STAGES: tuple[TrialStage, ...] = ()  # none yet: probes and block deletion land here


def trial_jobs(stages: tuple[TrialStage, ...], spec: SweepSpec, store: SweepStore, plan: Plan) -> list[Job]:
    """One job per (enabled stage, compared trial) whose part is not written yet."""
    return [Job(s.table, tid, run_trial_stage, (s, store.uri, tid, spec))
            for s in stages if s.enabled(spec) for tid in plan.n_layers if not store.has_part(s.table, tid)]


def run_trial_stage(stage: TrialStage, sweep_uri: str, trial_id: str, spec: SweepSpec) -> dict[str, Any]:
    """Load one trial's model and data on this actor, run the stage, write its part."""
    from repsweep.models import model_from_bytes
    from repsweep.orchestrator.data import load_dataset
    from repsweep.orchestrator.train import pick_device

    t0 = time.perf_counter()
    store, device = SweepStore(sweep_uri), pick_device()
    model, saved = model_from_bytes(store.read_bytes("checkpoints", f"{trial_id}.pt"),
                                    store.uri_of("checkpoints", f"{trial_id}.pt"))
    trial = TrialConfig.from_dict(saved["meta"]["trial"])
    rows = stage.compute(model.to(device), load_dataset(spec.dataset).to(device), trial, spec)
    store.write_part(stage.table, trial_id, rows)
    return {"n_rows": len(rows), "wall_time_s": time.perf_counter() - t0, "device": str(device)}


# -------------------------------------------------------------------- derived tables

def _class_accuracy(store: SweepStore, plan: Plan) -> dict[str, pd.DataFrame]:
    preds = store.read_table("predictions")
    acc = predictions.class_accuracy(preds[preds["trial_id"].isin(plan.n_layers)])
    return {tid: part for tid, part in acc.groupby("trial_id")}


def _disagreement(store: SweepStore, plan: Plan) -> dict[str, pd.DataFrame]:
    pairs = [(p.a, p.b, p.kind) for p in plan.pairs if p.a != p.b]
    return {"pairs": predictions.pair_disagreement(store.read_table("predictions"), pairs)}


DERIVED_TABLES: tuple[DerivedTable, ...] = (
    DerivedTable("class_accuracy", _class_accuracy),
    DerivedTable("disagreement", _disagreement),
)


def derived_jobs(tables: tuple[DerivedTable, ...], store: SweepStore, plan: Plan) -> list[Job]:
    return [Job(t.table, "all", run_derived, (t, store.uri, plan)) for t in tables]


def run_derived(table: DerivedTable, sweep_uri: str, plan: Plan) -> dict[str, Any]:
    """Compute one derived table and write the parts whose rows changed."""
    t0 = time.perf_counter()
    store = SweepStore(sweep_uri)
    parts = table.compute(store, plan)
    written = sum(write_if_changed(store, table.table, key, rows) for key, rows in parts.items())
    return {"n_rows": sum(len(r) for r in parts.values()), "parts_written": written,
            "wall_time_s": time.perf_counter() - t0, "device": "cpu"}


def write_if_changed(store: SweepStore, table: str, key: str, frame: pd.DataFrame) -> bool:
    """Write a part only when its rows differ from the stored ones, so a re-run leaves files alone."""
    if store.has_part(table, key):
        old = store.read_part(table, key)
        new = pd.DataFrame(frame).reindex(columns=old.columns).astype(old.dtypes.to_dict()).reset_index(drop=True)
        if old.equals(new):
            return False
    store.write_part(table, key, frame)
    return True
