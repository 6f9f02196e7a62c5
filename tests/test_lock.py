"""One driver per sweep: a live claim refuses a second driver; a dead or stale one does not."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, replace

import pytest

from repsweep.analysis.tables.store import SweepStore
from repsweep.orchestrator.cluster import lock
from repsweep.orchestrator.cluster.local_ray import process_start
from repsweep.orchestrator.cluster.lock import Claim, SweepBusy, claims, hold_sweep, holder
from tests.conftest import cli_env, copy_sweep, kill_ray_processes, run_cli


def _plant(store: SweepStore, claim: Claim) -> None:
    store.write_bytes(json.dumps(asdict(claim)).encode(), "locks", f"{claim.token}.json")


def _claim(**fields) -> Claim:
    now = time.time()
    base = Claim(token="0000000000001-deadbeef", command="run", host=socket.gethostname(), pid=1,
                 pid_start=process_start(1), started=now - 100, heartbeat=now, job_id="")
    return replace(base, **fields)


def _dead_pid() -> tuple[int, str]:
    p = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(0.5)"])
    start = process_start(p.pid)
    p.wait()
    return p.pid, start


def test_a_held_sweep_refuses_a_second_driver_naming_the_first(tmp_path):
    store = SweepStore(str(tmp_path))
    with hold_sweep(store, "run") as mine:
        assert holder(store) == mine
        with pytest.raises(SweepBusy, match=rf"already driven by 'repsweep run' \(pid {mine.pid} on "):
            with hold_sweep(store, "compare"):
                pass
        assert [c.token for c in claims(store)] == [mine.token]  # the refused claim is gone
    assert claims(store) == [] and holder(store) is None  # released at the end


def test_the_claim_is_released_when_the_driver_fails(tmp_path):
    store = SweepStore(str(tmp_path))
    with pytest.raises(RuntimeError):
        with hold_sweep(store, "run"):
            raise RuntimeError("a stage failed")
    assert claims(store) == []


def test_a_dead_drivers_claim_on_this_host_is_ignored_and_cleared(tmp_path):
    store = SweepStore(str(tmp_path))
    pid, start = _dead_pid()
    _plant(store, _claim(pid=pid, pid_start=start))
    assert holder(store) is None
    with hold_sweep(store, "resume") as mine:
        assert [c.token for c in claims(store)] == [mine.token]


def test_a_reused_pid_does_not_keep_a_claim_alive(tmp_path):
    store = SweepStore(str(tmp_path))
    _plant(store, _claim(pid=1, pid_start="1"))  # pid 1 lives, but started at another time
    assert holder(store) is None


def test_another_hosts_claim_holds_until_its_heartbeat_is_stale(tmp_path):
    store = SweepStore(str(tmp_path))
    now = time.time()
    fresh = _claim(host="head-node", heartbeat=now - 5, job_id="raysubmit_abc")
    _plant(store, fresh)
    with pytest.raises(SweepBusy, match=r"pid 1 on head-node, Ray job raysubmit_abc"):
        with hold_sweep(store, "run"):
            pass
    _plant(store, replace(fresh, heartbeat=now - lock.STALE_S - 1))
    with hold_sweep(store, "run") as mine:
        assert holder(store) == mine


def test_the_heartbeat_renews_a_held_claim(tmp_path, monkeypatch):
    monkeypatch.setattr(lock, "HEARTBEAT_S", 0.1)
    store = SweepStore(str(tmp_path))
    with hold_sweep(store, "run") as mine:
        deadline = time.time() + 30  # a few beats, even on a loaded machine
        while claims(store)[0].heartbeat <= mine.heartbeat and time.time() < deadline:
            time.sleep(0.05)
        assert claims(store)[0].heartbeat > mine.heartbeat, "no heartbeat in 30 s of beats every 0.1 s"


def test_two_drivers_on_one_sweep_the_second_refuses_and_nothing_is_duplicated(small_sweep, tmp_path):
    sweep = copy_sweep(small_sweep, tmp_path)
    for p in (sweep / "tables" / "cka").glob("*.parquet"):
        p.unlink()
    store = SweepStore(str(sweep))
    env = cli_env("rs-lock-")
    first = subprocess.Popen([sys.executable, "-m", "repsweep.orchestrator.cli", "compare", str(sweep)],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 60
        while holder(store) is None and time.time() < deadline:
            time.sleep(0.1)
        assert holder(store) is not None, "the first driver never claimed the sweep"
        t0 = time.time()
        second = run_cli(["compare", str(sweep)], {**env, "RAY_TMPDIR": cli_env("rs-lock2-")["RAY_TMPDIR"]})
        refused_s = time.time() - t0
        out, err = first.communicate(timeout=240)
    finally:
        if first.poll() is None:
            first.send_signal(signal.SIGKILL)
        kill_ray_processes(env["RAY_TMPDIR"])
    assert second.returncode == 2 and second.stdout == ""
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"already driven by 'repsweep compare' (pid {first.pid} " in lines[0], second.stderr
    assert first.returncode == 0, err[-2000:]
    cka = store.read_table("cka")
    assert len(cka) == len(SweepStore(str(small_sweep)).read_table("cka"))
    assert not cka.duplicated(["trial_a", "layer_a", "trial_b", "layer_b"]).any()
    assert claims(store) == []
    print(f"second driver refused in {refused_s:.1f} s")
