"""The actor pool every comparison job runs on: tiles, per-trial stages, derived tables.

    run_jobs(jobs, cpu=1, gpu=0.25, max_actors=16, on_done=..., on_failed=...)

The pool is sized by the work, not by the cluster it happens to see: it asks Ray for
min(jobs, max_actors) actors of `cpu` CPUs and `gpu` GPUs each, and lets Ray's scheduler
place them. Actors that fit start at once; the others wait in Ray's queue, which is what
tells an autoscaler (cluster.yaml: GPU workers from zero) to add nodes, and they join the
pool as soon as they start. A job goes only to an actor that has started. Once no job is
left to hand out, each actor that finishes is released, so its resources go to the actors
still waiting and the cluster can scale down.

A job that fails (an exception, or its actor dying) is tried again, up to `attempts` times
in all, then reported to `on_failed` with the last line of its error while the rest go on.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

ATTEMPTS = 2  # a failed job is tried this many times, then recorded as failed


@dataclass(frozen=True)
class Job:
    """One unit of work for the pool; `fn(*args)` runs on an actor and returns a dict of facts."""

    stage: str  # "tile", or the name of a per-trial stage or derived table
    key: str  # what it is within its stage: a tile key, a trial id, a table part
    fn: Callable[..., dict[str, Any]] = field(compare=False)
    args: tuple = field(default=(), compare=False)


class PoolWorker:
    """A Ray actor that holds its CPUs (and GPU share) and runs jobs, one at a time."""

    def __init__(self, threads: int) -> None:
        import torch
        from threadpoolctl import threadpool_limits

        torch.set_num_threads(max(1, threads))
        self._blas = threadpool_limits(max(1, threads))  # numpy's and scikit-learn's BLAS: as many threads

    def ready(self) -> bool:
        return True

    def run(self, fn: Callable[..., dict[str, Any]], *args: Any) -> dict[str, Any]:
        import ray

        out = dict(fn(*args))
        out["node"] = ray.get_runtime_context().get_node_id()
        return out


def run_jobs(jobs: list[Job], *, cpu: float, gpu: float, max_actors: int,
             on_done: Callable[[Job, dict[str, Any]], None], on_failed: Callable[[Job, str], None],
             attempts: int = ATTEMPTS) -> None:
    """Run every job on a pool of min(len(jobs), max_actors) actors (see the module docstring)."""
    import ray

    if not jobs:
        return
    worker = ray.remote(PoolWorker).options(num_cpus=cpu, num_gpus=gpu, max_restarts=0)
    starting: dict[Any, Any] = {}  # ready() ref -> actor not yet started

    def start() -> None:
        actor = worker.remote(int(cpu))
        starting[actor.ready.remote()] = actor

    for _ in range(min(len(jobs), max_actors)):
        start()
    todo, idle, inflight = deque(jobs), [], {}
    tries: dict[Job, int] = {}
    failed_starts = 0
    try:
        while todo or inflight:
            while idle and todo:
                job, actor = todo.popleft(), idle.pop()
                inflight[actor.run.remote(job.fn, *job.args)] = (job, actor)
            if not (starting or inflight):  # every actor failed to start and work is left
                start()
            (ref,), _ = ray.wait([*inflight, *starting], num_returns=1)
            if ref in starting:
                actor = starting.pop(ref)
                try:
                    ray.get(ref)
                except ray.exceptions.RayActorError as e:
                    failed_starts += 1
                    if failed_starts > attempts * max(1, max_actors):
                        raise RuntimeError(f"comparison actors fail to start: {last_line(e)}") from e
                    log.warning("an actor failed to start, starting another: %s", last_line(e))
                    continue
                idle.append(actor)
                continue
            job, actor = inflight.pop(ref)
            try:
                out = ray.get(ref)
            except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as e:
                tries[job] = tries.get(job, 0) + 1
                if isinstance(e, ray.exceptions.RayActorError):
                    actor = None  # it died with the job; another one is started if work is left
                if tries[job] < attempts:
                    log.warning("%s %s failed, retrying: %s", job.stage, job.key, last_line(e))
                    todo.append(job)
                else:
                    on_failed(job, last_line(e))
            else:
                on_done(job, out)
            if actor is None:
                if todo:
                    start()
            elif todo:
                idle.append(actor)
            else:  # nothing left to hand out: free its resources for the actors still waiting
                ray.kill(actor)
    finally:
        for actor in [*idle, *starting.values(), *(a for _, a in inflight.values())]:
            ray.kill(actor)


def last_line(e: BaseException) -> str:
    """The last non-empty line of an error (a remote traceback's own message), at most 500 characters."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else repr(e))[:500]
