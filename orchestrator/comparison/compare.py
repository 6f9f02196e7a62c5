"""The comparison stage's driver: plan -> tiles and per-trial stages -> derived tables, by steps.

    compare(spec, store)   # every job not yet done; returns the plan and failures

Tables written: cka, pca, pc1_pairs, dominant and tiles (orchestrator/comparison/tiles.py), then each step
of orchestrator/comparison/analyses.py: its per-trial stages' tables (probes, deletion, ...) on one actor
pool kept for the whole stage, then its derived tables (class_accuracy, disagreement, blocks,
..., findings) in this process, and stage_runs. Each job's output is keyed, so a re-run does
only what is missing and never duplicates rows; a tile or per-trial job that fails twice, or a
derived table that fails once (it is pandas over the tables: a second try would fail the
same way), is recorded as failed while the rest finish.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from repsweep.analysis.tables.store import SweepStore
from repsweep.orchestrator.comparison.plan import Tile, plan_comparison
from repsweep.orchestrator.comparison.pool import Job, Pool, last_line
from repsweep.orchestrator.spec import SweepSpec
from repsweep.orchestrator.comparison.analyses import STEPS
from repsweep.orchestrator.comparison.stages import Step, derived_jobs, trial_jobs
from repsweep.orchestrator.comparison.tiles import run_tile

log = logging.getLogger(__name__)

# progress(description, total) -> an object with update(n) and close(), e.g. a tqdm bar
Progress = Callable[[str, int], Any]


def compare(spec: SweepSpec, store: SweepStore, *, progress: Progress | None = None,
            steps: tuple[Step, ...] = STEPS) -> dict[str, Any]:
    """Run every comparison job not yet done; returns {"plan": Plan, "failed": {job: error}}."""
    plan = plan_comparison(spec, store)
    tiles = {t.key: t for t in plan.tiles}
    done = {k for k in tiles if store.part_readable("cka", k)}  # a cut-off or damaged part is redone
    for key in done - set(store.part_keys("tiles")):  # finished by a run cut off before its tiles row
        _tile_row(store, tiles[key], "done", n_rows=len(store.read_part("cka", key)))
    tile_jobs = [Job("tile", t.key, run_tile, (t, store.uri, spec.compare, spec.dataset))
                 for t in plan.tiles if t.key not in done]
    failed: dict[str, str] = {}
    c = spec.compare
    with Pool(cpu=c.cpu, gpu=c.gpu, max_actors=c.max_actors) as pool:
        for n, step in enumerate(steps):
            jobs = (tile_jobs if n == 0 else []) + trial_jobs(step.trial_stages, spec, store, plan)
            if n == 0:
                description = (f"comparison: {len(plan.pairs)} model pairs, {plan.n_layer_pairs} layer pairs, "
                               f"{len(plan.tiles)} tiles ({len(tile_jobs)} to run)")
                if len(jobs) > len(tile_jobs):
                    description += f", {len(jobs) - len(tile_jobs)} per-trial analyses"
            else:
                description = f"analyses: {len(jobs)} per-trial jobs ({', '.join(s.table for s in step.trial_stages)})"
            log.info(description)
            bar = progress(description, len(jobs)) if progress and (n == 0 or jobs) else None
            failed |= _run(store, pool, jobs, bar, tiles)
            if n == 0 and not failed:  # parts of an older plan (other groups or settings) would duplicate rows
                for table in ("cka", "pca", "pc1_pairs", "dominant", "tiles"):
                    for key in set(store.part_keys(table)) - set(tiles):
                        store.delete_part(table, key)
            failed |= _derive(store, derived_jobs(step.derived, spec, store, plan))
    return {"plan": plan, "failed": failed}


def _run(store: SweepStore, pool: Pool, jobs: list[Job], bar: Any, tiles: dict[str, Tile]) -> dict[str, str]:
    """Run jobs on the pool, recording each one's end; returns the failed ones' errors."""
    failed: dict[str, str] = {}

    def on_done(job: Job, out: dict[str, Any]) -> None:
        if job.stage == "tile":
            _tile_row(store, tiles[job.key], "done", **out)
        else:
            _stage_row(store, job, "done", **out)
        if bar:
            bar.update(1)

    def on_failed(job: Job, error: str) -> None:
        failed[f"{job.stage} {job.key}"] = error
        if job.stage == "tile":
            _tile_row(store, tiles[job.key], "failed", error=error)
        else:
            _stage_row(store, job, "failed", error=error)
        if bar:
            bar.update(1)

    try:
        pool.run(jobs, on_done=on_done, on_failed=on_failed)
    finally:
        if bar:
            bar.close()
    return failed


def _derive(store: SweepStore, jobs: list[Job]) -> dict[str, str]:
    """Compute derived tables here in the driver, in order: they are light (pandas over the tables,
    under 2 s for the demo) and need no actor; returns the failed ones' errors."""
    failed: dict[str, str] = {}
    for job in jobs:
        try:
            out = job.fn(*job.args)
        except Exception as e:  # recorded; the other tables are still computed
            failed[f"{job.stage} {job.key}"] = error = f"{type(e).__name__}: {last_line(e)}"
            _stage_row(store, job, "failed", error=error)
        else:
            if out["parts_written"] or _failed_before(store, job):  # one that changed nothing leaves no trace
                _stage_row(store, job, "done", **out)
    return failed


def _tile_row(store: SweepStore, tile: Tile, status: str, **info: Any) -> None:
    store.write_part("tiles", tile.key, [{
        "tile": tile.key, "status": status, "error": info.get("error"), "trials_a": list(tile.group_a),
        "trials_b": list(tile.group_b), "n_rows": info.get("n_rows", 0),
        "wall_time_s": info.get("wall_time_s"), "node": info.get("node"), "device": info.get("device")}])


def _stage_key(job: Job) -> str:
    return f"{job.stage}-{job.key}"


def _failed_before(store: SweepStore, job: Job) -> bool:
    return (store.has_part("stage_runs", _stage_key(job))
            and store.read_part("stage_runs", _stage_key(job))["status"].iloc[0] == "failed")


def _stage_row(store: SweepStore, job: Job, status: str, **info: Any) -> None:
    store.write_part("stage_runs", _stage_key(job), [{
        "stage": job.stage, "key": job.key, "status": status, "error": info.get("error"),
        "n_rows": info.get("n_rows", 0), "wall_time_s": info.get("wall_time_s"), "node": info.get("node"),
        "device": info.get("device")}])

