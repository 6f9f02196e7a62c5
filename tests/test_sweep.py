"""The training stage on a real local Ray: tables, idempotent re-runs, NaN trials, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from repsweep.analysis.tables.store import SweepStore
from repsweep.orchestrator.cli import main
from repsweep.orchestrator.grid import expand_grid
from repsweep.orchestrator.spec import load_spec
from repsweep.orchestrator.training.trainable import META_FILE, STATE_FILE
from tests.conftest import (cli_env, copy_sweep, kill_cli_when, kill_ray_processes, ray_processes, run_cli,
                            table_rows)

pytestmark = pytest.mark.timeout(300)


def _tables(sweep: Path) -> dict:
    store = SweepStore(str(sweep))
    return {t: store.read_table(t) for t in ("trials", "predictions", "layers", "train_subset")}


def test_tiny_grid_trains_on_tune_writes_its_tables_and_runs_again_idempotently(ray_local, tiny_spec, tmp_path,
                                                                                capsys):
    uri = f"file://{tmp_path}/remote/tiny"  # a storage URI (the other tests use plain paths)
    path = tiny_spec(storage=f"file://{tmp_path}/remote")
    assert main(["run", str(path)]) == 0
    sweep = tmp_path / "remote" / "tiny"
    t = _tables(sweep)
    ids = {tr.trial_id for tr in expand_grid(load_spec(path))}
    assert set(t["trials"]["trial_id"]) == ids and (t["trials"]["status"] == "done").all()
    assert len(t["predictions"]) == 2 * 360 and t["predictions"].groupby("trial_id").size().eq(360).all()
    assert (t["predictions"]["correct"] == (t["predictions"]["label"] == t["predictions"]["prediction"])).all()
    assert len(t["layers"]) == 2 * 6  # depth 8: stem, 3 blocks, pool, logits
    assert sorted(t["train_subset"].groupby("trial_id").size().tolist()) == [718, 1437]
    assert len(SweepStore(uri).read_table("cka")) == 2 * 36  # each model with itself (no cross-fraction pairs)
    row = t["trials"].set_index("trial_id").loc[next(iter(ids))]
    assert row["params"] == 77_754 and row["epochs_done"] == 2 and row["test_acc"] > 0.1
    assert row["checkpoint_uri"].startswith(f"{sweep}/checkpoints/")  # file:// is this machine's path
    model_file = Path(row["checkpoint_uri"])
    assert model_file.is_file()
    # the whole configuration is recorded, dataset and model sections included
    assert (row["dataset"], row["dataset_augment"], row["dataset_image_size"]) == ("digits", True, 32)
    assert (row["model_family"], row["arch"], row["epochs"], row["lr"]) == ("cifar_resnet", "d8-w1", 2, 0.1)
    # a second run trains nothing and adds no rows
    before = {k: len(v) for k, v in t.items()}
    mtimes = {p: p.stat().st_mtime_ns for p in (sweep / "tables").rglob("*.parquet")}
    assert main(["run", str(path)]) == 0
    assert {k: len(v) for k, v in _tables(sweep).items()} == before
    assert {p: p.stat().st_mtime_ns for p in (sweep / "tables").rglob("*.parquet")} == mtimes
    assert main(["status", uri]) == 0
    assert "2 done" in capsys.readouterr().out
    # a deleted model file is written again from the trial's last epoch checkpoint, not retrained
    model_file.unlink()
    assert main(["run", str(path)]) == 0
    assert model_file.is_file() and len(_tables(sweep)["predictions"]) == 2 * 360


def test_nan_diverging_trials_are_recorded_failed_and_the_sweep_goes_on(ray_local, tiny_spec, tmp_path, capsys):
    # lr 1e30: the first SGD step overflows float32 on any machine, so the loss of the next step
    # is not finite (a milder lr such as 200 diverges or not depending on the torch build).
    # One trial at a time (2 CPUs each): the second trains after the first has failed.
    path = tiny_spec(grid={"depth": [8], "width": [1, 2], "data_fraction": [1.0]},
                     training={"epochs": 2, "warmup_epochs": 0, "lr": 1e30}, resources={"cpu": 2})
    assert main(["run", str(path)]) == 1  # every trial failed: nothing to compare, and the exit code says so
    assert "every trial failed, nothing to compare" in capsys.readouterr().out
    trials = _tables(tmp_path / "results" / "tiny")["trials"]
    assert len(trials) == 2 and (trials["status"] == "failed").all()
    assert trials["error"].str.match(r"diverged: training loss became (nan|inf) in epoch 1; lower training.lr").all()


def test_a_sweep_killed_then_interrupted_resumes_without_rerunning_finished_trials(tiny_spec, tmp_path, ray_local,
                                                                                   capsys):
    # two trials of 15 epochs, one on a tenth of the data (2 steps an epoch, the other 12): kill -9 the
    # driver as soon as the short one is done, while the long one is mid-way; then SIGTERM (what Ray
    # Jobs and schedulers send; the driver takes it as Ctrl-C) the `repsweep resume` that follows
    # once it has saved an epoch of its own; a last resume finishes
    epochs = 15
    path = tiny_spec(grid={"depth": [8], "width": [1], "data_fraction": [1.0, 0.1]},
                     training={"epochs": epochs, "warmup_epochs": 1})
    sweep = tmp_path / "results" / "tiny"
    long_id = next(tr.trial_id for tr in expand_grid(load_spec(path)) if tr.data_fraction == 1.0)
    store = SweepStore(str(sweep))

    def a_trial_is_done() -> bool:
        return store.exists("tables", "trials") and (store.read_table("trials")["status"] == "done").any()

    def epoch_of(checkpoint: Path) -> int | None:
        """The epoch a checkpoint folder holds, if it was written out whole: a kill -9 can land while
        Tune copies one into the sweep (seen: meta.json without state.pt), and a trial goes on only
        from a whole one."""
        try:
            torch.load(checkpoint / STATE_FILE, weights_only=True)
            return json.loads((checkpoint / META_FILE).read_text())["epoch"]
        except Exception:  # noqa: BLE001 - missing, or cut off mid-write (torch raises many types)
            return None

    def saved(run: int) -> tuple[int, int] | None:
        """(checkpoint number, epoch) of the long trial's newest whole checkpoint in the sweep's run-th
        Tune experiment (0 first): the number counts that experiment's epochs, the epoch is the trial's."""
        runs = sorted((sweep / "tune").glob("run-*"))
        if len(runs) <= run:
            return None
        found = [(int(c.name.split("_")[1]), epoch) for c in (runs[run] / long_id).glob("checkpoint_*")
                 if (epoch := epoch_of(c)) is not None]
        return max(found, default=None)

    figures = []
    # the long trial must have saved an epoch by then, or status calls it pending, not interrupted
    for sig, args, ready in ((signal.SIGKILL, ["run", str(path)], lambda: a_trial_is_done() and saved(0) is not None),
                             (signal.SIGTERM, ["resume", str(sweep)], lambda: saved(1) is not None)):
        killed = kill_cli_when(args, cli_env("rs-kill-"), ready, timeout=200, sig=sig)
        assert killed.ready, f"{args[0]}: nothing to wait for happened within 200 s"
        assert killed.rc == (-9 if sig == signal.SIGKILL else 130)  # SIGTERM: ended as Ctrl-C ends it
        assert killed.ray_gone_s is not None and killed.ray_gone_s < 10, killed.left  # the reaper ended Ray
        done = store.read_table("trials").query("status == 'done'")
        assert len(done) == 1, "the long trial finished before the signal; lengthen it"
        figures.append(f"{signal.Signals(sig).name} during {args[0]}: Ray gone {killed.ray_gone_s:.1f} s after, "
                       f"rows then { {name: len(rows) for name, rows in _tables(sweep).items()} }")
        if sig == signal.SIGKILL:
            finished = sweep / "tables" / "trials" / f"{done['trial_id'].iloc[0]}.parquet"
            mtime = finished.stat().st_mtime_ns
        # as the user would, status (in this process, on the tests' own Ray)
        assert main(["status", str(sweep)]) == 0
        status = capsys.readouterr().out
        assert "1 done, 1 interrupted" in status and f"finish with: repsweep resume {sweep}" in status
    t0 = time.time()
    assert main(["resume", str(sweep)]) == 0
    t = _tables(sweep)
    print("; ".join(figures) + f"; the last resume finished in {time.time() - t0:.0f} s, rows after "
          f"{ {name: len(rows) for name, rows in t.items()} }")
    assert len(t["trials"]) == 2 and (t["trials"]["status"] == "done").all()
    assert all(dups == 0 for _, dups in table_rows(sweep).values()), table_rows(sweep)  # no row twice, any table
    assert len(t["predictions"]) == 2 * 360 and not t["predictions"].duplicated(["trial_id", "example"]).any()
    assert finished.stat().st_mtime_ns == mtime  # the finished trial was not re-run
    # each resume went on from the newest epoch the experiment before it saved, not from epoch 0
    assert len(list((sweep / "tune").iterdir())) == 3
    (_, first), (n_second, second), (n_third, third) = saved(0), saved(1), saved(2)
    assert second - n_second == first + 1 and third - n_third == second + 1 and third == epochs - 1


def test_a_driver_stopped_while_it_writes_the_report_leaves_no_part_of_one_and_resume_writes_it(small_sweep,
                                                                                              tmp_path):
    # SIGTERM the `resume` of a trained and compared sweep once it says the comparison is done: it
    # then prints the findings and draws the report (seconds of Altair and vl-convert)
    sweep = copy_sweep(small_sweep, tmp_path)
    (sweep / "report.html").unlink()
    before = table_rows(sweep)
    env = cli_env("rs-rep-")
    proc = subprocess.Popen([sys.executable, "-m", "repsweep.orchestrator.cli", "resume", str(sweep)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in proc.stdout:
            if line.startswith("comparison:"):
                t0 = time.time()
                proc.send_signal(signal.SIGTERM)
                break
        _, err = proc.communicate(timeout=120)
        while ray_processes(env["RAY_TMPDIR"]) and time.time() - t0 < 20:
            time.sleep(0.2)
        gone_s, left = time.time() - t0, ray_processes(env["RAY_TMPDIR"])
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        kill_ray_processes(env["RAY_TMPDIR"])
    assert proc.returncode == 130 and "interrupted; finish with 'repsweep resume" in err, err[-2000:]
    assert not (sweep / "report.html").exists(), "the report was written before the signal came"
    assert list(sweep.rglob("*.tmp-*")) == [] and left == []  # no half-written file, no process left
    assert table_rows(sweep) == before
    t1 = time.time()
    out = run_cli(["resume", str(sweep)], cli_env("rs-rep-"))
    assert out.returncode == 0, out.stderr[-2000:]
    html = (sweep / "report.html").read_text()
    assert html.rstrip().endswith("</html>") and table_rows(sweep) == before
    print(f"SIGTERM while the report was drawn: exit 130, Ray gone {gone_s:.1f} s after, no report, no temp "
          f"file, rows unchanged; resume wrote it in {time.time() - t1:.0f} s; rows {before}")
