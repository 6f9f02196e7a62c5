"""Faults: a worker node lost mid-trial, a GPU pool that autoscales from zero, a storage root that fills up.

Each test prints its figures (time to recover, rows); benchmarks/RESULTS.md keeps them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from repsweep.analysis.tables.store import SweepStore
from tests.conftest import (free_port, head_env, kill_ray_processes, local_cluster, start_head,
                            write_fake_autoscaling_config)

pytestmark = pytest.mark.timeout(400)

RAY = str(Path(sys.executable).parent / "ray")
NO_EXTRAS = {"passes": 1, "probes": False, "deletion": False}


def _cli(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "repsweep.orchestrator.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _saved_epochs(sweep: Path) -> int:
    """Epochs saved in the trial's newest Tune checkpoint (checkpoint_000000 holds epoch 1)."""
    return max((int(p.name.split("_")[1]) + 1 for p in sweep.glob("tune/*/*/checkpoint_*")), default=0)


def test_a_trial_on_a_lost_node_resumes_from_its_checkpoint_on_another(tiny_spec, tmp_path, monkeypatch):
    # this test's driver is a `repsweep run --address` process of its own
    spec = tiny_spec(grid={"depth": [8], "data_fraction": [1.0]}, training={"epochs": 15, "warmup_epochs": 1},
                     compare=NO_EXTRAS)
    sweep = tmp_path / "results" / "tiny"
    with local_cluster(monkeypatch, "rs-loss-", head_cpus=0) as cluster:
        node_a = cluster.add_node(num_cpus=1)
        driver = _cli(["run", str(spec), "--address", cluster.address], dict(os.environ))
        deadline = time.time() + 180
        while _saved_epochs(sweep) < 1 and time.time() < deadline:  # the trial runs on node A
            time.sleep(0.1)
        cluster.add_node(num_cpus=1)  # node B joins (it takes seconds) while A trains, not after
        while _saved_epochs(sweep) < 3 and time.time() < deadline:  # 3 epochs saved on node A
            time.sleep(0.1)
        assert _saved_epochs(sweep) >= 3, "the trial saved no 3rd epoch in 180 s"
        cluster.remove_node(node_a, allow_graceful=False)
        lost = time.time()
        saved = _saved_epochs(sweep)
        store = SweepStore(str(sweep))
        while driver.poll() is None and "restarted" not in str(store.read_table("trials").error.iloc[0]):
            time.sleep(0.2)  # Tune starts the trial again on node B, from a checkpoint
        recovered_s = time.time() - lost
        out, err = driver.communicate(timeout=240)
        finished_s = time.time() - lost
    assert driver.returncode == 0, err[-2000:]
    trials = SweepStore(str(sweep)).read_table("trials")
    assert len(trials) == 1 and trials.status.iloc[0] == "done" and trials.epochs_done.iloc[0] == 15
    went_on = int(re.search(r"restarted; went on after epoch (\d+)", trials.error.iloc[0]).group(1))
    assert 3 <= went_on < 15  # from a checkpoint node A saved, not from scratch
    predictions = SweepStore(str(sweep)).read_table("predictions")
    assert len(predictions) == 360 and not predictions.duplicated(["trial_id", "example"]).any()
    print(f"node lost after epoch {saved} was saved; the trial started again on the other node "
          f"{recovered_s:.1f} s later, going on after epoch {went_on}, and the sweep finished "
          f"{finished_s:.0f} s after the loss; 1 trial, 360 predictions, no duplicates")


def _ray_status(address: str, env: dict[str, str]) -> str:
    return subprocess.run([RAY, "status", "--address", address], env=env, capture_output=True, text=True,
                          timeout=60).stdout


WATCH = ("import sys, time, ray\n"
         "ray.init(address=sys.argv[1], logging_level='ERROR', log_to_driver=False)\n"
         "while True:\n"
         "    print(time.time(), ray.cluster_resources().get('GPU', 0.0), flush=True)\n"
         "    time.sleep(1)\n")


class GpuWatch:
    """The cluster's GPUs in all, read once a second by one watching driver (not a `ray status` a second)."""

    def __init__(self, address: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", WATCH, address], env=env, stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
        self.seen: list[tuple[float, float]] = []  # (time, GPUs)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            t, gpus = line.split()
            self.seen.append((float(t), float(gpus)))

    def first(self, holds: Callable[[float], bool], after: float, timeout: float) -> float | None:
        """When the first reading after `after` for which holds(GPUs) was taken (waits up to timeout s)."""
        deadline = time.time() + timeout
        while True:
            found = next((t for t, gpus in list(self.seen) if t > after and holds(gpus)), None)
            if found is not None or time.time() > deadline:
                return found
            time.sleep(0.2)

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


def test_a_gpu_pool_scales_up_from_zero_for_a_sweep_and_back_down_after(tiny_spec, tmp_path):
    port = free_port()
    write_fake_autoscaling_config(tmp_path / "fake.yaml", port)
    temp = tempfile.mkdtemp(prefix="rs-auto-", dir="/tmp")
    env = head_env(temp)
    spec = tiny_spec(grid={"depth": [8], "data_fraction": [1.0], "seed": [0, 1]},
                     training={"epochs": 1, "warmup_epochs": 0}, resources={"cpu": 1, "gpu": 0.5},
                     compare=NO_EXTRAS)
    try:
        address = start_head(port, temp, env, tmp_path / "fake.yaml")
        started = time.time()
        watch = GpuWatch(address, env)
        assert watch.first(lambda gpus: True, 0, 60) is not None and watch.seen[0][1] == 0  # none at the start
        t0 = time.time()
        driver = _cli(["run", str(spec), "--address", address], env)
        out, err = driver.communicate(timeout=300)
        ended = time.time()
        assert driver.returncode == 0, err[-2000:]
        assert "waiting for the autoscaler to add a node" in out, (out[:2000], err[-2000:])
        up, peak = watch.first(lambda gpus: gpus > 0, t0, 0), max(gpus for _, gpus in watch.seen)
        down = watch.first(lambda gpus: gpus == 0, ended, 120)  # idle timeout 6 s
        assert down is not None, f"no scale-down within 120 s:\n{_ray_status(address, env)}"
        watch.stop()
    finally:
        kill_ray_processes(temp)
    assert up is not None and peak >= 1
    trials = SweepStore(str(tmp_path / "results" / "tiny")).read_table("trials")
    assert len(trials) == 2 and (trials.status == "done").all()
    waited = "first waited for the autoscaler's report; " if "for the cluster's autoscaler to report" in out else ""
    print(f"GPU pool 0 -> {peak:.0f} GPUs {up - t0:.0f} s after the sweep started ({waited}the driver joined "
          f"{t0 - started:.1f} s after `ray start` returned); 2 trials of 0.5 GPU done; "
          f"back to 0 GPUs {down - ended:.0f} s after the sweep ended")


# Runs inside a mount namespace of its own (unshare -m): a 64 MB tmpfs is the storage root, a
# filler file takes its space; every check is made in here, since the tmpfs goes with the namespace.
FULL_DISK = r"""
import json, os, shutil, subprocess, sys, time
from pathlib import Path
from repsweep.analysis.tables.store import SweepStore
root, spec, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(root)], check=True)
sweep = root / "results" / "tiny"
filler = root / "filler"

def cli(*args):
    t0 = time.time()
    p = subprocess.run([sys.executable, "-m", "repsweep.orchestrator.cli", *args], capture_output=True,
                       text=True, timeout=300)
    said = [ln for ln in p.stderr.splitlines() if ln.strip() and not ln.startswith(("training:", "comparing:"))]
    return {"rc": p.returncode, "err": said[-3:], "lines": len(said), "s": round(time.time() - t0, 1)}

def fill(leave: int):
    subprocess.run(["fallocate", "-l", str(max(shutil.disk_usage(root).free - leave, 4096)), str(filler)], check=True)

def files():
    return {str(p.relative_to(sweep)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sweep.rglob("*") if p.is_file() and "tune" not in p.parts and "locks" not in p.parts}

def tables():
    store = SweepStore(str(sweep))
    counts, dups = {}, {}
    for name in sorted(os.listdir(sweep / "tables")):
        t = store.read_table(name)
        counts[name] = len(t)
        dups[name] = int(t.astype(str).duplicated().sum())
    return counts, dups

r = {}
fill(1 << 20)  # 1 MB left: less than training two trials needs
r["run_full"] = cli("run", spec)
r["written_when_full"] = sorted(files())
filler.unlink()
r["resume"] = cli("resume", str(sweep))
r["tables_trained"], r["dups_trained"] = tables()
for table in ("cka", "pca", "tiles", "pc1_pairs", "dominant", "disagreement", "class_accuracy"):
    shutil.rmtree(sweep / "tables" / table)
kept = files()
fill(0)  # no room at all: not even for the driver's claim on the sweep
r["compare_no_room"] = cli("compare", str(sweep))
filler.unlink()
fill(16 << 10)  # room for the claim, not for the comparison's parts: it fills up mid-way
r["compare_full"] = cli("compare", str(sweep))
r["kept_unchanged"] = {k: v for k, v in files().items() if k in kept} == kept
r["temp_left"] = [str(p) for p in sweep.rglob("*.tmp-*")]
filler.unlink()
r["compare"] = cli("compare", str(sweep))
r["tables_after"], r["dups_after"] = tables()
subprocess.run(["umount", str(root)])
Path(out).write_text(json.dumps(r))
"""


def _namespace() -> list[str] | None:
    """An `unshare` command that may mount a tmpfs here (root: -m; others: -rm, where allowed)."""
    for args in (["unshare", "-m"], ["unshare", "-rm"]):
        try:
            if subprocess.run([*args, "sh", "-c", "mount -t tmpfs -o size=1m tmpfs /mnt"], capture_output=True,
                              timeout=30).returncode == 0:
                return args
        except (OSError, subprocess.SubprocessError):
            pass
    return None


def test_a_storage_root_that_fills_up_is_one_line_nothing_is_damaged_and_resume_finishes(tiny_spec, tmp_path):
    unshare = _namespace()
    if unshare is None:
        pytest.skip("no mount namespace here (unshare -m / -rm not permitted): cannot make a small disk")
    root = tmp_path / "disk"
    root.mkdir()
    spec = tiny_spec(storage=str(root / "results"), compare=NO_EXTRAS)
    env = {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix="rs-full-", dir="/tmp")}  # Ray's files off the tmpfs
    try:
        subprocess.run([*unshare, sys.executable, "-c", FULL_DISK, str(root), str(spec), str(tmp_path / "out.json")],
                       env=env, check=True, timeout=600, cwd=tmp_path)
    finally:
        kill_ray_processes(env["RAY_TMPDIR"])
    r = json.loads((tmp_path / "out.json").read_text())
    sweep = str(root / "results" / "tiny")
    for step, what in (("run_full", "training 2 trials"), ("compare_no_room", "the driver's claim on the sweep"),
                       ("compare_full", "the comparison")):
        run = r[step]
        assert run["rc"] == 2 and run["lines"] == 1, run  # one line (beside progress bars), no library's traceback
        line = run["err"][-1]
        assert line.startswith(f"repsweep: error: no space left in '{sweep}' for {what} ("), line
        assert " MB free there" in line and f"then: repsweep resume {sweep}" in line, line
    assert "it needs about " in r["run_full"]["err"][-1]  # training says how much it needs, before it starts
    assert r["written_when_full"] == ["spec.started.yaml", "spec.yaml"]  # nothing trained into a full disk
    assert r["resume"]["rc"] == 0 and r["compare"]["rc"] == 0, r
    assert r["kept_unchanged"] and r["temp_left"] == []  # what the full disk met was left as it was
    assert r["tables_after"] == r["tables_trained"] and r["tables_after"]["cka"] > 0  # every row back, once
    assert not any(r["dups_trained"].values()) and not any(r["dups_after"].values())
    print(f"full disk: training refused in {r['run_full']['s']} s, resumed in {r['resume']['s']} s; no room for "
          f"the claim: refused in {r['compare_no_room']['s']} s; comparison filled it up, refused in "
          f"{r['compare_full']['s']} s, finished in {r['compare']['s']} s once freed; "
          f"rows {r['tables_after']}")
