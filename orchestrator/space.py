"""Room in a sweep's storage: what training will write, what is free, and one line when it runs out.

A local storage root that fills up (a disk, a quota, a tmpfs) ends the command with one line
naming the sweep's path, the space free there and the space needed (exit 2), not with the
traceback of whichever library was writing. Nothing already written is damaged: every file of
the store is written under a temporary name and renamed (analysis/tables/store.py), and a trial or tile
that could not be written is simply not done, so `repsweep resume` after space is freed finishes.
Object stores report no free space: they are not checked.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import pyarrow.fs as pafs

from repsweep.analysis.tables.schemas import TableError
from repsweep.analysis.tables.store import SweepStore
from repsweep.orchestrator.grid import TrialConfig

# per trial, beside its model: predictions, layers, train subset, trials rows and Tune's own files
TABLE_BYTES_PER_TRIAL = 256 << 10
# copies of a trial's training state at the peak: Tune keeps 1 checkpoint (num_to_keep), but writes
# the next before it deletes the last; a checkpoint is the model and SGD's momentum (2 x weights)
CHECKPOINT_COPIES = 2 * 2


class StorageFull(TableError):
    """The sweep's storage has no room for what a command must write."""


def free_bytes(store: SweepStore) -> int | None:
    """Bytes free to this user on the file system of a local store (None for object stores)."""
    if not isinstance(store.fs, pafs.LocalFileSystem):
        return None
    path = store.root
    while not os.path.exists(path) and os.path.dirname(path) != path:
        path = os.path.dirname(path)
    return shutil.disk_usage(path).free


def training_bytes(trials: Sequence[TrialConfig]) -> int:
    """About what training `trials` writes to storage: per trial its final model, its checkpoints
    at their peak, and its table rows (weights counted in float32 on 3-channel, 10-class data)."""
    from repsweep.models.counting import count_params
    from repsweep.models.registry import get_family

    weights: dict[tuple, int] = {}
    total = 0
    for t in trials:
        arch = (t.model.family, t.depth, t.width)
        if arch not in weights:
            weights[arch] = 4 * count_params(get_family(t.model.family).build(t.model_config(3, 10)))
        total += weights[arch] * (1 + CHECKPOINT_COPIES) + TABLE_BYTES_PER_TRIAL
    return total


def _mb(n: int) -> str:
    return f"{n / 1e6:,.1f} MB"


def full(store: SweepStore, needed: int | None, what: str) -> StorageFull:
    """The one line for storage without room for `what` (`needed` bytes, when known)."""
    free = free_bytes(store)
    known = ([f"{_mb(free)} free there"] if free is not None else []) + \
        ([f"it needs about {_mb(needed)}"] if needed else [])
    detail = f" ({'; '.join(known)})" if known else ""
    return StorageFull(f"no space left in '{store.uri}' for {what}{detail}; free space there "
                       f"(nothing written so far is lost), then: repsweep resume {store.uri}")


def check_room(store: SweepStore, needed: int, what: str) -> None:
    """StorageFull, before anything is written, if a local store has less than `needed` bytes free."""
    free = free_bytes(store)
    if free is not None and free < needed:
        raise full(store, needed, what)


def no_space(e: BaseException | None) -> bool:
    """Whether `e`, or an exception it was raised from, is a full disk (ENOSPC, or a quota: EDQUOT)."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if getattr(e, "errno", None) in (errno.ENOSPC, errno.EDQUOT) or "No space left on device" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


@contextmanager
def reported(store: SweepStore, what: str, needed: int | None = None) -> Iterator[None]:
    """Turn a full disk met while doing `what` (in any library, on any worker) into StorageFull."""
    try:
        yield
    except StorageFull:
        raise
    except Exception as e:
        if no_space(e):
            raise full(store, needed, what) from e
        raise
