"""The comparison stage's two kinds of analysis beside the tiles, and the jobs that run them.

- A `TrialStage` runs once per finished trial, on the actor pool: it loads the trial's model
  and data and returns the trial's rows of its table, written as part `<trial_id>`. A trial
  whose part exists is done and skipped, so re-runs are resumable and idempotent like tiles.
  (Linear probes, block deletion, the block without its dominant datapoints.)
- A `DerivedTable` is computed from other tables, no models, in the driver: tables in, table
  parts out, recomputed by every comparison (its inputs may have grown) and written only where its rows
  changed, so a re-run rewrites nothing. (Blocks, error statistics, findings.)

A `Step` is a set of per-trial stages run together, then derived tables in order; the
comparison runs its steps in order (orchestrator/comparison/analyses.py: STEPS), the tiles with the first
step's per-trial jobs. Every job's end is recorded in the `stage_runs` table (tiles in `tiles`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pandas as pd

from repsweep.analysis.tables.store import SweepStore
from repsweep.models import RepresentationModel
from repsweep.orchestrator.training.data import Dataset
from repsweep.orchestrator.grid import TrialConfig
from repsweep.orchestrator.comparison.plan import Plan
from repsweep.orchestrator.comparison.pool import Job
from repsweep.orchestrator.spec import SweepSpec

# compute(model, data, trial, spec, store) -> the trial's rows
TrialCompute = Callable[[RepresentationModel, Dataset, TrialConfig, SweepSpec, SweepStore], pd.DataFrame]


def _always(spec: SweepSpec) -> bool:
    return True


def _every_trial(store: SweepStore, plan: Plan, spec: SweepSpec) -> list[str]:
    return list(plan.n_layers)


@dataclass(frozen=True)
class TrialStage:
    """An analysis of one trained model, written as part <trial_id> of `table`."""

    table: str  # the table it writes (analysis/tables/schemas.py), one part per trial
    compute: TrialCompute
    enabled: Callable[[SweepSpec], bool] = _always  # e.g. switched by a compare field
    select: Callable[[SweepStore, Plan, SweepSpec], list[str]] = _every_trial  # the trials it applies to


@dataclass(frozen=True)
class DerivedTable:
    """A table computed from a sweep's tables; `compute(store, plan, spec)` returns its parts by key."""

    table: str
    compute: Callable[[SweepStore, Plan, SweepSpec], dict[str, pd.DataFrame]]


@dataclass(frozen=True)
class Step:
    """Per-trial stages run together on the pool, then derived tables, in order, in the driver."""

    trial_stages: tuple[TrialStage, ...] = ()
    derived: tuple[DerivedTable, ...] = ()


# ------------------------------------------------------------------ per-trial stages

def trial_jobs(stages: tuple[TrialStage, ...], spec: SweepSpec, store: SweepStore, plan: Plan) -> list[Job]:
    """One job per (enabled stage, selected trial) whose part is not written yet."""
    return [Job(s.table, tid, run_trial_stage, (s, store.uri, tid, spec))
            for s in stages if s.enabled(spec) for tid in s.select(store, plan, spec) if not store.part_readable(s.table, tid)]


def run_trial_stage(stage: TrialStage, sweep_uri: str, trial_id: str, spec: SweepSpec) -> dict[str, Any]:
    """Load one trial's model and data on this actor, run the stage, write its part."""
    from repsweep.models import model_from_bytes
    from repsweep.orchestrator.training.data import load_dataset
    from repsweep.orchestrator.training.train import pick_device

    t0 = time.perf_counter()
    store, device = SweepStore(sweep_uri), pick_device()
    model, saved = model_from_bytes(store.read_bytes("checkpoints", f"{trial_id}.pt"),
                                    store.uri_of("checkpoints", f"{trial_id}.pt"))
    trial = TrialConfig.from_dict(saved["meta"]["trial"])
    rows = stage.compute(model.to(device), load_dataset(spec.dataset).to(device), trial, spec, store)
    store.write_part(stage.table, trial_id, rows)
    return {"n_rows": len(rows), "wall_time_s": time.perf_counter() - t0, "device": str(device)}


# -------------------------------------------------------------------- derived tables

def derived_jobs(tables: tuple[DerivedTable, ...], spec: SweepSpec, store: SweepStore, plan: Plan) -> list[Job]:
    return [Job(t.table, "all", run_derived, (t, store.uri, plan, spec)) for t in tables]


def run_derived(table: DerivedTable, sweep_uri: str, plan: Plan, spec: SweepSpec) -> dict[str, Any]:
    """Compute one derived table and write the parts whose rows changed."""
    t0 = time.perf_counter()
    store = SweepStore(sweep_uri)
    parts = table.compute(store, plan, spec)
    written = sum(write_if_changed(store, table.table, key, rows) for key, rows in parts.items())
    return {"n_rows": sum(len(r) for r in parts.values()), "parts_written": written,
            "wall_time_s": time.perf_counter() - t0, "device": "cpu"}


def write_if_changed(store: SweepStore, table: str, key: str, frame: pd.DataFrame) -> bool:
    """Write a part only when its rows differ from the stored ones, so a re-run leaves files alone."""
    if store.part_holds(table, key, frame):
        return False
    store.write_part(table, key, frame)
    return True
