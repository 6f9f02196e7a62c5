"""The driver's Ray: join a cluster, or start an embedded one that never outlives the driver.

An embedded Ray's processes (GCS, raylet, dashboard and runtime-env agents, workers, the
comparison's actors) are the driver's to end. Ray ends most of them when the driver exits,
but after `kill -9` of the driver its agents stay forever and busy actors finish (and write)
their current job. So before Ray starts, the driver marks its environment with a token that
every Ray process inherits, and starts a reaper: a small process in a session of its own that
notes the driver's descendants while it lives, waits for it to end, however it ends, then
kills every one of them still alive and every process carrying the token.

    python -m repsweep.orchestrator.cluster.local_ray PID PID_START TOKEN   (started by start_ray)
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
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
    on_term = signal.getsignal(signal.SIGTERM)
    if joins_cluster(address):
        ray.init(address=address, **kwargs)
    else:
        if process_start(os.getpid()):  # Linux: /proc tells who carries the token
            _start_reaper()  # a token of its own, even where one was inherited from a parent driver
        ray.init(include_dashboard=False, **kwargs)
    if callable(on_term) and threading.current_thread() is threading.main_thread():
        # ray.init puts its own handler on SIGTERM (a stack dump, then abort): the driver's goes back
        signal.signal(signal.SIGTERM, on_term)


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
    subprocess.Popen([sys.executable, "-m", "repsweep.orchestrator.cluster.local_ray", str(os.getpid()),
                      process_start(os.getpid()), token], env=env, start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _processes() -> dict[int, tuple[int, str]]:
    """Every process: pid -> (parent pid, start time)."""
    out = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                with open(f"/proc/{name}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()  # proc(5) fields 3 onwards
                out[int(name)] = (int(fields[1]), fields[19])
            except (OSError, IndexError, ValueError):  # gone meanwhile
                continue
    return out


def _descendants(roots: set[int], procs: dict[int, tuple[int, str]]) -> set[int]:
    """The pids below `roots` in the process tree (roots excluded)."""
    found, frontier = set(), set(roots)
    while frontier:
        frontier = {p for p, (ppid, _) in procs.items() if ppid in frontier and p not in found}
        found |= frontier
    return found


def _carriers(marker: bytes) -> set[int]:
    """Pids of the processes whose environment holds `marker` (a renamed process may have lost it)."""
    found = set()
    for name in os.listdir("/proc"):
        if name.isdigit() and int(name) != os.getpid():
            try:
                with open(f"/proc/{name}/environ", "rb") as f:
                    if marker in f.read().split(b"\0"):
                        found.add(int(name))
            except OSError:  # gone, or not ours
                continue
    return found


def reap(pid: int, pid_start: str, token: str) -> int:
    """Wait for the driver to end, then kill its Ray's processes; returns how many were killed.

    While the driver lives, the reaper notes its descendants (Ray renames its processes, and a
    renamed process's environment can be overwritten, so the token alone does not find them
    all). Once it has ended, each sweep stops (SIGSTOP) every noted process still alive, every
    token carrier and everything below them, so that no raylet can start an agent or worker in
    place of one just killed, then kills them all; it ends after three empty sweeps.
    """
    seen: dict[int, str] = {}
    while process_start(pid) == pid_start:
        procs = _processes()
        seen.update({p: procs[p][1] for p in _descendants({pid}, procs)})
        time.sleep(POLL_S)
    marker, killed, empty = f"{MARKER}={token}".encode(), set(), 0
    while empty < 3:
        procs = _processes()
        alive = {p for p, start in seen.items() if procs.get(p, (0, ""))[1] == start}
        targets = (alive | _carriers(marker)) - {os.getpid()}
        for p in targets:
            _signal(p, signal.SIGSTOP)
        targets |= _descendants(targets, _processes()) - {os.getpid()}
        for sig in (signal.SIGSTOP, signal.SIGKILL):
            for p in targets:
                _signal(p, sig)
        killed |= targets
        empty = 0 if targets else empty + 1
        time.sleep(POLL_S)
    return len(killed)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except OSError:  # already gone
        pass


if __name__ == "__main__":
    reap(int(sys.argv[1]), sys.argv[2], sys.argv[3])
