"""`repsweep submit` end to end: a Ray head on loopback with token authentication, a sweep
submitted as a Ray Job, followed with `repsweep status`; refusals in one line."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from repsweep.analysis.tables.store import SweepStore
from tests.conftest import free_port, kill_ray_processes, write_spec

pytestmark = pytest.mark.timeout(400)


@dataclass
class Head:
    address: str          # the job API, http://127.0.0.1:PORT
    env: dict[str, str]   # a client's environment: token authentication on, the head's token


@pytest.fixture(scope="module")
def ray_head():
    """`ray start --head` on loopback, its own temp dir and ports, token auth; stopped by pid."""
    temp = tempfile.mkdtemp(prefix="rs-head-", dir="/tmp")
    dash = free_port()
    env = {**os.environ, "RAY_TMPDIR": temp, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}  # as on a node: the venv active
    ray = str(Path(sys.executable).parent / "ray")
    t0 = time.time()
    try:
        subprocess.run([ray, "start", "--head", "--node-ip-address=127.0.0.1", f"--port={free_port()}",
                        "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
                        f"--dashboard-agent-listen-port={free_port()}", f"--temp-dir={temp}", "--num-cpus=2",
                        "--disable-usage-stats"], env=env, check=True, capture_output=True, timeout=120)
        print(f"head started in {time.time() - t0:.1f} s")
        yield Head(f"http://127.0.0.1:{dash}", env)
    finally:
        kill_ray_processes(temp)


def _repsweep(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "repsweep.orchestrator.cli", *args], env=env,
                          capture_output=True, text=True, timeout=120)


def _spec(tmp_path: Path, storage: str) -> Path:
    return write_spec(tmp_path / "spec.yaml", name="job", dataset={"name": "digits"},
                      grid={"depth": [8], "width": [1], "data_fraction": [1.0], "seed": [0, 1]},
                      training={"epochs": 1, "warmup_epochs": 0},
                      compare={"passes": 1, "probes": False, "deletion": False}, storage=storage)


def test_a_submitted_sweep_runs_as_a_ray_job_and_status_follows_it(ray_head, tmp_path):
    spec = _spec(tmp_path, str(tmp_path / "results"))
    t0 = time.time()
    out = _repsweep(["submit", str(spec), "--address", ray_head.address], ray_head.env)
    assert out.returncode == 0, out.stderr
    job_id = out.stdout.split("as Ray job ")[1].split()[0]
    sweep = tmp_path / "results" / "job"
    assert f"results: {sweep}" in out.stdout and f"repsweep status {sweep}" in out.stdout
    assert f"ray job logs -f --address {ray_head.address} {job_id}" in out.stdout

    # one process follows the job to its end (not a fresh `import ray` every two seconds)
    follow = ("import sys, time; from ray.job_submission import JobSubmissionClient as C\n"
              "c, end = C(sys.argv[1]), time.time() + 300\n"
              "while c.get_job_status(sys.argv[2]).value not in ('SUCCEEDED', 'FAILED', 'STOPPED') "
              "and time.time() < end:\n"
              "    time.sleep(1)\n"
              "print(c.get_job_status(sys.argv[2]).value); print(c.get_job_logs(sys.argv[2])[-3000:])")
    answer = subprocess.run([sys.executable, "-c", follow, ray_head.address, job_id], env=ray_head.env,
                            capture_output=True, text=True, timeout=330)
    state, _, logs = answer.stdout.partition("\n")
    assert state == "SUCCEEDED", logs or answer.stderr[-2000:]
    print(f"submitted sweep finished in {time.time() - t0:.0f} s")
    status = _repsweep(["status", str(sweep)], ray_head.env).stdout
    assert f"Ray job {job_id}: SUCCEEDED" in status, status
    assert "2 done" in status
    store = SweepStore(str(sweep))
    assert len(store.read_table("trials")) == 2 and (store.read_table("trials").status == "done").all()
    assert len(store.read_table("cka")) == 3 * 6 ** 2  # two models with themselves, one cross-seed pair
    assert (sweep / "report.html").exists() and not list((sweep / "locks").iterdir())


def test_submit_without_the_heads_token_is_one_line(ray_head, tmp_path):
    env = {k: v for k, v in ray_head.env.items() if k != "RAY_AUTH_TOKEN"}
    env["HOME"] = str(tmp_path)  # no ~/.ray/auth_token either
    out = _repsweep(["submit", str(_spec(tmp_path, str(tmp_path / "r"))), "--address", ray_head.address], env)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, out.stderr
    assert ray_head.address in lines[0] and "RAY_AUTH_TOKEN" in lines[0]
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("storage, message", [
    ("relative/results", "a submitted sweep needs storage every node reaches"),
])
def test_submit_refuses_storage_the_cluster_cannot_reach(tmp_path, storage, message):
    out = _repsweep(["submit", str(_spec(tmp_path, storage)), "--address", "http://127.0.0.1:9"], dict(os.environ))
    assert out.returncode == 2 and message in out.stderr and len(out.stderr.strip().splitlines()) == 1


def test_submit_to_an_address_nobody_listens_on_is_one_line_within_seconds(tmp_path):
    t0 = time.time()
    out = _repsweep(["submit", str(_spec(tmp_path, str(tmp_path / "r"))), "--address",
                     f"http://127.0.0.1:{free_port()}"], dict(os.environ))
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr
    assert "cannot reach the Ray job API" in out.stderr and time.time() - t0 < 30
