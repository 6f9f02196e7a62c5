"""The driver's Ray: join a cluster, or start an embedded one that never outlives the driver.

An embedded Ray's processes (GCS, raylet, dashboard and runtime-env agents, workers, the
comparison's actors) are the driver's to end. Ray ends most of them when the driver exits,
but after `kill -9` of the driver its agents stay forever and busy actors finish (and write)
their current job. So before Ray starts, the driver marks its environment with a token that
every Ray process inherits, and starts a reaper: a small process in a session of its own that
waits for the driver to end, however it ends, then kills every process carrying the token.

    python -m repsweep.orchestrator.local_ray PID PID_START TOKEN   (started by start_ray)
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
import uuid
from typing import Any

MARKER = "REPSWEEP_DRIVER_TOKEN"  # environment variable every process of an embedded Ray inherits
POLL_S = 0.5                      # seconds between the reaper's checks of the driver


def start_ray(address: str | None) -> None:
    """Join `address` (or $RAY_ADDRESS) or start an embedded local Ray with a reaper."""
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")  # no CSV/TensorBoard files per trial
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")  # the legacy reporter honours verbose=0
    import ray

    if ray.is_initialized():
        return
    kwargs: dict[str, Any] = {"logging_level": logging.ERROR, "log_to_driver": False}
    if joins_cluster(address):
        ray.init(address=address, **kwargs)
        return
    if MARKER not in os.environ and process_start(os.getpid()):  # Linux: /proc tells who carries it
        _start_reaper()
    ray.init(include_dashboard=False, **kwargs)


def joins_cluster(address: str | None) -> bool:
    """Whether the driver joins a running cluster (`--address`, or $RAY_ADDRESS as in a Ray job)."""
    return bool(address or os.environ.get("RAY_ADDRESS"))


def process_start(pid: int) -> str:
    """When process `pid` started, in clock ticks since boot ('' if it has ended or there is no /proc).

    A pid with the same start time is the same process, not a later one given a reused pid.
    """
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()  # proc(5) fields 3 onwards
    except OSError:
        return ""
    if len(fields) < 20 or fields[0] in ("Z", "X"):  # a zombie has ended; only its exit status is left
        return ""
    return fields[19]  # field 22: starttime


def _start_reaper() -> None:
    token = uuid.uuid4().hex
    env = dict(os.environ)  # the reaper itself does not carry the token
    os.environ[MARKER] = token
    subprocess.Popen([sys.executable, "-m", "repsweep.orchestrator.local_ray", str(os.getpid()),
                      process_start(os.getpid()), token], env=env, start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _carriers(marker: bytes) -> list[int]:
    """Pids of the processes whose environment holds `marker`."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        found.append(int(name))
            except OSError:  # gone, or not ours
                continue
    return found


def reap(pid: int, pid_start: str, token: str) -> int:
    """Wait for the driver to end, then kill its Ray's processes; returns how many were killed."""
    while process_start(pid) == pid_start:
        time.sleep(POLL_S)
    marker, killed = f"{MARKER}={token}".encode(), set()
    for _ in range(10):  # a dying raylet may still start a worker: sweep until none is left
        pids = _carriers(marker)
        if not pids:
            break
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
                killed.add(p)
            except OSError:
                pass
        time.sleep(POLL_S)
    return len(killed)


if __name__ == "__main__":
    reap(int(sys.argv[1]), sys.argv[2], sys.argv[3])
