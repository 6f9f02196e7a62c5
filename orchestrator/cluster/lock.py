"""One driver per sweep: a claim in the sweep's storage while a driver trains or compares.

A driver writes `<sweep>/locks/<token>.json` (host, pid, command, start time, heartbeat, Ray
job id) and then lists the folder: the oldest live claim holds the sweep. A newer driver
deletes its own claim and refuses in one line naming the holder, before it trains or
compares anything.

A claim is live while its heartbeat, rewritten every HEARTBEAT_S, is younger than STALE_S,
and, seen from the host that wrote it, while that process lives. So a driver killed with
SIGKILL holds the sweep for at most STALE_S from another host and not at all from its own.
Two drivers started within the same instant both see each other's claim (object stores read
their own writes), and the older one wins; only a write slower than the other driver's
write and listing together could let both run.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from repsweep.analysis.tables.store import SweepStore
from repsweep.orchestrator.cluster.local_ray import process_start
from repsweep.orchestrator.space import reported
from repsweep.orchestrator.spec import SpecError

log = logging.getLogger(__name__)

HEARTBEAT_S = 10.0  # seconds between rewrites of a held claim
STALE_S = 60.0      # seconds without a heartbeat after which another host ignores a claim
FOLDER = "locks"
JOB_ENV = "REPSWEEP_JOB_ID"  # set by `repsweep submit` on its Ray job: the submission id


class SweepBusy(SpecError):
    """Another live driver holds the sweep."""


@dataclass(frozen=True)
class Claim:
    """Who drives a sweep."""

    token: str
    command: str      # run | resume | compare | demo
    host: str
    pid: int
    pid_start: str    # the process's start time on its host (/proc/<pid>/stat), against pid reuse
    started: float    # unix seconds
    heartbeat: float  # unix seconds
    job_id: str       # the Ray job's submission id, when the driver runs as a Ray job

    def describe(self) -> str:
        when = datetime.fromtimestamp(self.started, timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        job = f", Ray job {self.job_id}" if self.job_id else ""
        return f"'repsweep {self.command}' (pid {self.pid} on {self.host}{job}, since {when})"


def _alive_here(claim: Claim) -> bool:
    if claim.pid_start:  # Linux: the same pid and start time
        return process_start(claim.pid) == claim.pid_start
    try:
        os.kill(claim.pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process with that pid
        pass
    return True


def is_live(claim: Claim, now: float | None = None) -> bool:
    """Whether a claim still holds its sweep (see the module docstring)."""
    if now is None:
        now = time.time()
    if claim.host == socket.gethostname():
        return _alive_here(claim)
    return now - claim.heartbeat < STALE_S


def claims(store: SweepStore) -> list[Claim]:
    """Every readable claim in the sweep, oldest first (dead ones included)."""
    try:
        names = store.list_files(FOLDER)
    except OSError:  # no folder to list (storage that is a file, say): writing will say why
        return []
    out = []
    for name in names:
        if not name.endswith(".json"):
            continue
        try:
            out.append(Claim(**json.loads(store.read_bytes(FOLDER, name))))
        except (OSError, ValueError, TypeError):  # vanished or half-written: not a claim
            continue
    return sorted(out, key=lambda c: (c.started, c.token))


def holder(store: SweepStore) -> Claim | None:
    """The live driver that holds the sweep, if any."""
    live = [c for c in claims(store) if is_live(c)]
    return live[0] if live else None


def check_free(store: SweepStore, mine: Claim | None = None, first: Claim | None = None) -> None:
    """Raise SweepBusy naming the live driver that holds the sweep (`first`, default: read it),
    unless that is `mine` or none."""
    first = first or holder(store)
    if first is not None and (mine is None or first.token != mine.token):
        raise SweepBusy(f"sweep '{store.uri}' is already driven by {first.describe()}; wait for it to "
                        f"finish or stop it, then run this again (a driver that died is ignored "
                        f"at once on its own host, after {STALE_S:.0f} s elsewhere)")


def _write(store: SweepStore, claim: Claim) -> None:
    store.write_bytes(json.dumps(asdict(claim)).encode(), FOLDER, f"{claim.token}.json")


@contextmanager
def hold_sweep(store: SweepStore, command: str) -> Iterator[Claim]:
    """Hold the sweep for this driver while the block runs; refuse if another driver holds it."""
    now = time.time()
    mine = Claim(token=f"{int(now * 1000):013d}-{uuid.uuid4().hex[:8]}", command=command,
                 host=socket.gethostname(), pid=os.getpid(), pid_start=process_start(os.getpid()),
                 started=now, heartbeat=now, job_id=os.environ.get(JOB_ENV, ""))
    with reported(store, "the driver's claim on the sweep"):
        _write(store, mine)
    try:
        live = []
        for c in claims(store):  # one listing: clear the dead, then the oldest live claim holds
            if c.token == mine.token or is_live(c):
                live.append(c)
            else:  # a driver that died: its claim goes
                _delete(store, c)
        check_free(store, mine, live[0] if live else None)
        stop = threading.Event()
        beat = threading.Thread(target=_heartbeat, args=(store, mine, stop), daemon=True,
                                name="repsweep-lock")
        beat.start()
        try:
            yield mine
        finally:
            stop.set()
            beat.join(timeout=5)
    finally:
        _delete(store, mine)


def _delete(store: SweepStore, claim: Claim) -> None:
    try:
        store.fs.delete_file(store.path(FOLDER, f"{claim.token}.json"))
    except FileNotFoundError:  # another driver cleared it first
        pass


def _heartbeat(store: SweepStore, claim: Claim, stop: threading.Event) -> None:
    while not stop.wait(HEARTBEAT_S):
        try:
            _write(store, Claim(**{**asdict(claim), "heartbeat": time.time()}))
        except OSError as e:  # storage unreachable for a moment: the next beat tries again
            log.warning("could not renew the sweep's lock at %s: %s", store.uri, e)
