"""The actor pool the comparison's heavy jobs run on: tiles and per-trial stages.

    with Pool(cpu=1, gpu=0.25, max_actors=16) as pool:
        pool.run(tile_jobs, on_done=..., on_failed=...)
        pool.run(dominant_removal_jobs, on_done=..., on_failed=...)  # on the actors the tiles started

A batch's pool is sized by its work, not by the cluster it happens to see: it asks Ray for
min(jobs, max_actors) actors of `cpu` CPUs and `gpu` GPUs each, counting the idle ones a
batch before left, and lets Ray's scheduler place them. Actors that fit start at once; the
others wait in Ray's queue, which is what tells an autoscaler (cluster.yaml: GPU workers from
zero) to add nodes, and they join the pool as soon as they start. A job goes only to an actor
that has started. When a batch ends, the actors still waiting are withdrawn and the started
ones stay for the next batch (an actor costs seconds to start: a new process importing torch);
leaving the `with` block releases them, so the cluster can scale down.

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

    stage: str  # "tile", or the name of a per-trial stage or derived table (those run in the driver)
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


class Pool:
    """The comparison stage's actors, kept from one batch of jobs to the next (see the module docstring)."""

    def __init__(self, *, cpu: float, gpu: float, max_actors: int, attempts: int = ATTEMPTS) -> None:
        self.cpu, self.gpu, self.max_actors, self.attempts = cpu, gpu, max_actors, attempts
        self.idle: list[Any] = []  # started actors with no job

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        """Release every actor (their resources go back to the cluster)."""
        import ray

        for actor in self.idle:
            ray.kill(actor)
        self.idle = []

    def run(self, jobs: list[Job], *, on_done: Callable[[Job, dict[str, Any]], None],
            on_failed: Callable[[Job, str], None]) -> None:
        """Run every job on min(len(jobs), max_actors) actors, the idle ones first."""
        import ray

        if not jobs:
            return
        worker = ray.remote(PoolWorker).options(num_cpus=self.cpu, num_gpus=self.gpu, max_restarts=0)
        starting: dict[Any, Any] = {}  # ready() ref -> actor not yet started

        def start() -> None:
            actor = worker.remote(int(self.cpu))
            starting[actor.ready.remote()] = actor

        for _ in range(min(len(jobs), self.max_actors) - len(self.idle)):
            start()
        todo, idle, inflight = deque(jobs), self.idle, {}
        tries: dict[Job, int] = {}
        failed_starts = 0
        try:  # on an error, leaving the `with` block releases the idle actors
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
                        if failed_starts > self.attempts * max(1, self.max_actors):
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
                    if tries[job] < self.attempts:
                        log.warning("%s %s failed, retrying: %s", job.stage, job.key, last_line(e))
                        todo.append(job)
                    else:
                        on_failed(job, last_line(e))
                else:
                    on_done(job, out)
                if actor is None:
                    if todo:
                        start()
                else:
                    idle.append(actor)  # kept for this batch's next job or the next batch
        finally:  # still waiting: not needed, free their place in the queue; in flight: only on an error
            for actor in [*starting.values(), *(a for _, a in inflight.values())]:
                ray.kill(actor)


def last_line(e: BaseException) -> str:
    """The last non-empty line of an error (a remote traceback's own message), at most 500 characters."""
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else repr(e))[:500]
