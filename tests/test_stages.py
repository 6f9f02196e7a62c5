"""Per-trial stages and derived tables on the actor pool: resumable, idempotent, failures recorded."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from repsweep.analysis.tables.store import SweepStore
from repsweep.orchestrator.comparison.compare import compare
from repsweep.orchestrator.comparison.analyses import STEPS
from repsweep.orchestrator.comparison.stages import DerivedTable, Step, TrialStage
from repsweep.orchestrator.training.sweep import load_sweep
from tests.conftest import copy_sweep

pytestmark = pytest.mark.timeout(300)


def _per_class_from_the_model(fail_for: str | None = None) -> TrialStage:
    """A per-trial stage: each class's test accuracy and mean true-class probability, from the model itself
    (its own forward pass)."""

    def compute(model, data, trial, spec, store) -> pd.DataFrame:
        from repsweep.orchestrator.training.train import predict

        if trial.trial_id == fail_for:
            raise RuntimeError(f"planted failure for {trial.trial_id}")
        _, pred, _, p_true = predict(model, data.x_test, data.y_test)
        label = data.y_test.cpu().numpy()
        frame = pd.DataFrame({"label": label, "correct": pred == label, "p_true": p_true})
        acc = frame.groupby("label").agg(size=("correct", "size"), mean=("correct", "mean"),
                                         p_true=("p_true", "mean")).reset_index()
        return pd.DataFrame({"trial_id": trial.trial_id, "label": acc["label"], "n_examples": acc["size"],
                             "accuracy": acc["mean"], "mean_p_true": acc["p_true"]})

    return TrialStage("class_accuracy", compute)


def _mtimes(folder: Path) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in folder.rglob("*.parquet")}


def test_a_trial_stage_runs_once_per_trial_records_failures_and_resumes(small_sweep, tmp_path, ray_local):
    sweep = copy_sweep(small_sweep, tmp_path)
    for p in (sweep / "tables" / "class_accuracy").glob("*.parquet"):
        p.unlink()
    spec, store = load_sweep(str(sweep))
    trials = sorted(store.read_table("trials")["trial_id"])
    plans = []

    def progress(description: str, total: int):
        plans.append((description, total))

    out = compare(spec, store, progress=progress, steps=(Step(trial_stages=(_per_class_from_the_model(trials[0]),)),))
    assert plans[-1] == ("comparison: 8 model pairs, 459 layer pairs, 3 tiles (0 to run), 4 per-trial analyses", 4)
    assert out["failed"] == {f"class_accuracy {trials[0]}": f"RuntimeError: planted failure for {trials[0]}"}
    runs = store.read_table("stage_runs").query("stage == 'class_accuracy'").set_index("key")
    assert runs.loc[trials[0], "status"] == "failed" and (runs.loc[trials[1:], "status"] == "done").all()
    assert sorted(store.part_keys("class_accuracy")) == trials[1:]

    # the next comparison runs only the trial that failed; the finished parts stay as they are
    before = _mtimes(sweep / "tables" / "class_accuracy")
    out = compare(spec, store, progress=progress, steps=(Step(trial_stages=(_per_class_from_the_model(),)),))
    assert out["failed"] == {} and plans[-1][1] == 1
    assert {p: t for p, t in _mtimes(sweep / "tables" / "class_accuracy").items() if p in before} == before
    assert (store.read_table("stage_runs").query("stage == 'class_accuracy'")["status"] == "done").all()

    # the model's own per-class accuracy is what the derived table computes from the predictions
    from_models = store.read_table("class_accuracy").sort_values(["trial_id", "label"]).reset_index(drop=True)
    derived = SweepStore(str(small_sweep)).read_table("class_accuracy").sort_values(["trial_id", "label"])
    pd.testing.assert_frame_equal(from_models, derived.reset_index(drop=True))

    # and a third comparison has nothing to do and writes nothing
    everything = _mtimes(sweep / "tables")
    compare(spec, store, progress=progress, steps=(Step((_per_class_from_the_model(),), (_derived("class_accuracy"), _derived("disagreement"))),))
    assert plans[-1][1] == 0 and _mtimes(sweep / "tables") == everything


def _derived(table: str) -> DerivedTable:
    """The comparison's derived table of that name (analyses.STEPS)."""
    (found,) = [d for step in STEPS for d in step.derived if d.table == table]
    return found


def test_a_derived_table_that_fails_is_recorded_and_the_next_one_is_still_computed(small_sweep, tmp_path):
    # derived tables run in the driver, one after another: no actor, no Ray needed here
    sweep = copy_sweep(small_sweep, tmp_path)
    for p in (sweep / "tables" / "class_accuracy").glob("*.parquet"):
        p.unlink()
    spec, store = load_sweep(str(sweep))
    class_accuracy = _derived("class_accuracy")

    def broken(store, plan, spec):
        raise ValueError("planted failure")

    out = compare(spec, store, steps=(Step(derived=(DerivedTable("disagreement", broken), class_accuracy)),))
    assert out["failed"] == {"disagreement all": "ValueError: planted failure"}
    runs = store.read_table("stage_runs").set_index("stage")
    assert runs.loc["disagreement", "status"] == "failed" and runs.loc["class_accuracy", "status"] == "done"
    assert sorted(store.part_keys("class_accuracy")) == sorted(store.read_table("trials")["trial_id"])
    # fixed, the next comparison computes it, changes nothing else, and records that it is done
    disagreement = _derived("disagreement")
    assert compare(spec, store, steps=(Step(derived=(disagreement, class_accuracy)),))["failed"] == {}
    runs = store.read_table("stage_runs").set_index("stage")
    assert runs.loc["disagreement", "status"] == "done"
