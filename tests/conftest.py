"""Shared fixtures: an isolated local Ray, tiny sweep specs, CIFAR-format files on disk."""

from __future__ import annotations

import logging
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import yaml

# Two test processes (pytest-xdist, pyproject.toml) share this machine's cores: torch's OpenMP
# threads, in them, their Ray workers and their subprocesses, sleep while they wait rather than spin.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")


def ray_processes(temp_dir: str) -> list[int]:
    """Pids of the processes whose command line or environment names `temp_dir`."""
    found = []
    for pid in os.listdir("/proc"):
        if pid.isdigit() and int(pid) != os.getpid():
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes() + Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
            if temp_dir.encode() in cmd:
                found.append(int(pid))
    return found


def _cmdline(pid: int) -> str:
    try:
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        token = [e.decode() for e in env if e.startswith(b"REPSWEEP_DRIVER_TOKEN=")]
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:100].strip()
        return f"{cmd} {token}"
    except OSError:
        return f"{pid} (ended)"


def kill_ray_processes(temp_dir: str) -> None:
    """End every process whose command line or environment names `temp_dir` (never `ray stop`).

    Ray's workers rename themselves (ray::PoolWorker...), but inherit RAY_TMPDIR.
    """
    for _ in range(3):  # a dying raylet may still start a worker: sweep until none is left
        pids = ray_processes(temp_dir)
        if not pids:
            return
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.5)


def free_port() -> int:
    """A TCP port on loopback that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_fake_autoscaling_config(path: Path, port: int) -> Path:
    """A cluster launcher config for Ray's fake multi-node provider: a head of 0 CPU and up to two
    worker nodes of 2 CPU and 1 (logical) GPU, launched as processes on this machine."""
    config = {
        "cluster_name": "fake", "max_workers": 2, "upscaling_speed": 1.0, "idle_timeout_minutes": 0.1,
        "provider": {"type": "fake_multinode", "gcs_address": f"127.0.0.1:{port}",
                     "disable_node_updaters": True, "disable_launch_config_check": True,  # no SSH setup to run
                     "use_node_id_as_ip": True},  # all nodes share 127.0.0.1: tell idle ones apart by id
        "auth": {"ssh_user": "ubuntu"}, "head_node_type": "ray.head.default",
        "available_node_types": {
            "ray.head.default": {"resources": {"CPU": 0}, "node_config": {}, "max_workers": 0},
            "gpu_worker": {"resources": {"CPU": 2, "GPU": 1}, "node_config": {}, "min_workers": 0, "max_workers": 2},
        },
        # the launcher's fields the autoscaler reads, empty for processes on this machine
        "file_mounts": {}, "cluster_synced_files": [], "file_mounts_sync_continuously": False,
        "rsync_exclude": [], "rsync_filter": [], "initialization_commands": [], "setup_commands": [],
        "head_setup_commands": [], "worker_setup_commands": [], "head_start_ray_commands": [],
        "worker_start_ray_commands": [],
    }
    path.write_text(yaml.safe_dump(config))
    return path


def head_env(temp: str) -> dict[str, str]:
    """Environment for a loopback head started with `ray start` (temp dir of its own, a fresh token)
    and for the drivers that join it."""
    import secrets

    return {**os.environ, "RAY_TMPDIR": temp, "RAY_FAKE_CLUSTER": "1", "RAY_AUTH_MODE": "token",
            "RAY_AUTH_TOKEN": secrets.token_hex(16),
            "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def start_head(port: int, temp: str, env: dict[str, str], autoscaling_config: Path | None = None) -> str:
    """`ray start --head` on loopback with 0 CPUs (and an autoscaler where a config is given); its address."""
    config = [f"--autoscaling-config={autoscaling_config}"] if autoscaling_config else []
    subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", f"--port={port}", "--num-cpus=0",
                    f"--temp-dir={temp}", *config, "--include-dashboard=false", "--disable-usage-stats"],
                   env=env, check=True, capture_output=True, timeout=120)
    return f"127.0.0.1:{port}"


@contextmanager
def local_cluster(monkeypatch, prefix: str, *, head_cpus: int) -> Iterator:
    """A `ray.cluster_utils.Cluster` with a temp dir of its own; its processes ended by pid after."""
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    temp = tempfile.mkdtemp(prefix=prefix, dir="/tmp")
    monkeypatch.setenv("RAY_TMPDIR", temp)  # the cluster notes its address in <it>/ray, not /tmp/ray
    os.makedirs(os.path.join(temp, "ray"))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": head_cpus, "temp_dir": temp,
                                                            "include_dashboard": False})
    try:
        yield cluster
    finally:
        ray.shutdown()
        cluster.shutdown()
        kill_ray_processes(temp)


def cli_env(prefix: str) -> dict[str, str]:
    """Environment for a `repsweep` subprocess with a Ray temp dir of its own (RAY_TMPDIR)."""
    return {**os.environ, "RAY_TMPDIR": tempfile.mkdtemp(prefix=prefix, dir="/tmp")}


@dataclass
class Killed:
    """What kill_cli_when saw: whether ready() held, and how long the driver's Ray outlived it."""

    ready: bool
    rc: int                   # the driver's exit code (130: it took the signal as Ctrl-C; -9: kill -9)
    ray_gone_s: float | None  # seconds from the signal until no Ray process was left (None: never, in 20 s)
    left: list[str]           # command lines of the processes left after 20 s


def kill_cli_when(args: list[str], env: dict[str, str], ready: Callable[[], bool], *,
                  timeout: float, sig: int = signal.SIGKILL) -> Killed:
    """Start `repsweep ARGS`; send `sig` to the driver alone (as `kill -9 PID` or Ctrl-C would)
    as soon as ready() holds, or after timeout seconds. Then wait for its Ray to end."""
    proc = subprocess.Popen([sys.executable, "-m", "repsweep.orchestrator.cli", *args], env=env,
                            start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    held = False
    try:
        deadline = time.time() + timeout
        while time.time() < deadline and not (held := ready()):
            time.sleep(0.2)
        t0 = time.time()
        proc.send_signal(sig)
        proc.wait(timeout=120)
        while ray_processes(env["RAY_TMPDIR"]) and time.time() - t0 < 20:
            time.sleep(0.2)
        left = [_cmdline(pid) for pid in ray_processes(env["RAY_TMPDIR"])]
        return Killed(held, proc.returncode, None if left else time.time() - t0, left)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        kill_ray_processes(env["RAY_TMPDIR"])


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    """Run `repsweep ARGS` to the end (4 minutes at most), then end its Ray's processes."""
    try:
        return subprocess.run([sys.executable, "-m", "repsweep.orchestrator.cli", *args], env=env,
                              capture_output=True, text=True, timeout=240)
    finally:
        kill_ray_processes(env["RAY_TMPDIR"])


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which reads the marks
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Under pytest-xdist, tests of one shared sweep run in one worker, so each is built once."""
    for item in items:
        shared = [name for name in ("results_sweep", "small_sweep") if name in getattr(item, "fixturenames", ())]
        if shared:
            item.add_marker(pytest.mark.xdist_group(shared[0]))


@pytest.fixture(scope="session")
def ray_temp_dir():
    """Temp dir of the tests' local Ray; at the end Ray is stopped and its processes ended by pid."""
    import ray

    temp_dir = tempfile.mkdtemp(prefix="rs-ray-", dir="/tmp")  # short: Ray's socket paths
    yield temp_dir
    ray.shutdown()
    kill_ray_processes(temp_dir)
    shutil.rmtree(temp_dir, ignore_errors=True)


def ensure_ray(temp_dir: str):
    """Connect to the tests' local Ray (2 CPUs, own temp dir), starting it if needed."""
    import ray

    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    os.environ["RAY_AIR_NEW_OUTPUT"] = "0"
    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, _temp_dir=temp_dir,
                 logging_level=logging.ERROR, log_to_driver=False)
    return ray


@pytest.fixture
def ray_local(ray_temp_dir):
    """A local Ray for in-process tests (a test may shut it down; the next one restarts it)."""
    return ensure_ray(ray_temp_dir)


def _build_sweep(fields: dict, ray_temp_dir: str, tmp_path_factory) -> Path:
    """Train and compare a sweep with `repsweep run`, as a user would; returns its folder."""
    from repsweep.orchestrator.cli import main

    ensure_ray(ray_temp_dir)
    root = tmp_path_factory.mktemp(fields["name"])
    spec = write_spec(root / "spec.yaml", **fields, storage=str(root / "results"))
    assert main(["run", str(spec)]) == 0
    return root / "results" / fields["name"]


SMALL_SWEEP = {
    "name": "small", "dataset": {"name": "digits"},
    "grid": {"depth": [8, 14], "width": [1], "data_fraction": [1.0], "seed": [0, 1]},
    "training": {"epochs": 2, "warmup_epochs": 1},
    "compare": {"passes": 2, "group_size": 2, "probes": False, "deletion": False},
}

# every chart kind has data: cross-seed and cross-architecture pairs, two fractions
RESULTS_SWEEP = {
    "name": "results", "dataset": {"name": "digits"},
    "grid": {"depth": [8, 14], "width": [1, 2], "data_fraction": [1.0, 0.5], "seed": [0, 1]},
    "training": {"epochs": 1, "warmup_epochs": 0},
    "compare": {"passes": 1, "probe_examples": 128},
}
N_TRIALS = 16
LAYERS = {8: 6, 14: 9}  # captured layers by depth: stem, 3(depth - 2)/6 blocks, pool, logits


@pytest.fixture(scope="session")
def small_sweep(ray_temp_dir, tmp_path_factory) -> Path:
    """4 digits models (depth 8 and 14 x seed 0 and 1), trained and compared once (~20 s).

    Tests that change it must work on a copy (`copy_sweep`).
    """
    return _build_sweep(SMALL_SWEEP, ray_temp_dir, tmp_path_factory)


@pytest.fixture(scope="session")
def results_sweep(ray_temp_dir, tmp_path_factory) -> Path:
    """16 digits models (RESULTS_SWEEP), 1 epoch, one comparison pass over 128 test digits (~40 s)."""
    return _build_sweep(RESULTS_SWEEP, ray_temp_dir, tmp_path_factory)


def copy_sweep(sweep: Path, dest: Path) -> Path:
    shutil.copytree(sweep, dest / sweep.name, ignore=shutil.ignore_patterns("tune"))
    return dest / sweep.name


def table_rows(sweep: Path) -> dict[str, tuple[int, int]]:
    """(rows, rows that occur twice) of every table of the sweep: a part kept twice shows as the second."""
    from repsweep.analysis.tables.store import SweepStore

    store = SweepStore(str(sweep))
    out = {}
    for table in sorted(p.name for p in (sweep / "tables").iterdir()):
        rows = store.read_table(table)
        out[table] = (len(rows), int(rows.astype(str).duplicated().sum()))  # astype: lists compare as text
    return out


def write_spec(path: Path, **fields) -> Path:
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


@pytest.fixture
def tiny_spec(tmp_path: Path):
    """Write a spec for a tiny digits sweep (depth 8, few epochs) into tmp_path."""

    def make(name: str = "tiny", **overrides) -> Path:
        fields = {"name": name, "dataset": {"name": "digits"},
                  "grid": {"depth": [8], "width": [1], "data_fraction": [1.0, 0.5], "seed": [0]},
                  "training": {"epochs": 2, "warmup_epochs": 1},
                  # one pass; the per-trial analyses have tests of their own
                  "compare": {"passes": 1, "probes": False, "deletion": False},
                  "storage": str(tmp_path / "results")}
        for k, v in overrides.items():
            fields[k] = {**fields[k], **v} if isinstance(v, dict) and isinstance(fields.get(k), dict) else v
        return write_spec(tmp_path / "spec.yaml", **fields)

    return make


def write_cifar(root: Path, *, n_train_per_batch: int = 20, n_test: int = 30, classes: int = 10,
                hundred: bool = False, seed: int = 0) -> Path:
    """Write tiny CIFAR-10 (or -100) files in torchvision's on-disk pickle format under root."""
    rng = np.random.default_rng(seed)
    folder = root / ("cifar-100-python" if hundred else "cifar-10-batches-py")
    folder.mkdir(parents=True, exist_ok=True)
    label_key = "fine_labels" if hundred else "labels"

    def dump(name: str, n: int) -> None:
        entry = {"data": rng.integers(0, 256, size=(n, 3072), dtype=np.uint8),
                 label_key: [int(i % classes) for i in range(n)]}
        with open(folder / name, "wb") as f:
            pickle.dump(entry, f)

    if hundred:
        dump("train", 5 * n_train_per_batch)
        dump("test", n_test)
        meta = {"fine_label_names": [f"c{i}" for i in range(classes)]}
        meta_name = "meta"
    else:
        for i in range(1, 6):
            dump(f"data_batch_{i}", n_train_per_batch)
        dump("test_batch", n_test)
        meta = {"label_names": [f"c{i}" for i in range(classes)]}
        meta_name = "batches.meta"
    with open(folder / meta_name, "wb") as f:
        pickle.dump(meta, f)
    return root
