"""The probe stream: which examples of the probe set each CKA minibatch holds (`stream_batches`),
and how any batch of examples is read (`batches`: from memory, or decoded from disk).

Every model in a comparison must see the same minibatches (DESIGN.md, "The CKA engine"):
one seeded permutation of the probe set per pass, cut into batches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch


def stream_batches(
    n_examples: int, *, batch_size: int = 256, passes: int = 10, seed: int = 0
) -> Iterator[torch.Tensor]:
    """Indices of the probe stream: per pass one seeded permutation, cut into equal batches.

    Pass p's permutation depends only on (seed, p) (NumPy's SeedSequence), so every model,
    tile and re-run sees the same batches. A pass is cut into the fewest batches of at most
    `batch_size` examples, their sizes differing by at most one (`batch_sizes`: 360 examples
    at 256 are two batches of 180, not 256 + 104), so that per-example first-PC shares, which
    sum to 1 within a batch, are alike in scale in every batch. Defaults follow Nguyen et al.
    2021 (batch 256, 10 passes).

    Yields
    ------
    torch.Tensor
        (batch,) int64 indices into the probe set.
    """
    for field, value, low in (("n_examples", n_examples, 1), ("batch_size", batch_size, 1),
                              ("passes", passes, 1), ("seed", seed, 0)):
        if not isinstance(value, int) or value < low:
            raise ValueError(f"{field} must be an integer >= {low}, got {value!r}")
    for p in range(passes):
        perm = np.random.default_rng([seed, p]).permutation(n_examples)  # (n_examples,)
        yield from torch.from_numpy(perm).split(batch_sizes(n_examples, batch_size))


def batch_sizes(n_examples: int, batch_size: int) -> list[int]:
    """The fewest batches of at most `batch_size` that hold `n_examples`, sizes differing by at most one."""
    k = -(-n_examples // batch_size)  # ceil
    small, extra = divmod(n_examples, k)
    return [small + 1] * extra + [small] * (k - extra)


def batches(x: torch.Tensor | Any, index_batches: Iterable[torch.Tensor],
            device: torch.device | str | None = None) -> Iterator[torch.Tensor]:
    """x's examples for each batch of indices, on `device` (x's own by default).

    x is a tensor held in memory (its rows are indexed), or images on disk
    (`orchestrator.training.imagefolder.ImageFiles`: decoded by worker processes as they are needed).
    """
    if not isinstance(x, torch.Tensor):
        yield from x.stream(index_batches, device)
        return
    for idx in index_batches:
        yield x[idx.to(x.device)].to(device if device is not None else x.device)


def in_order(n_examples: int, batch_size: int) -> list[torch.Tensor]:
    """Indices 0..n-1 in batches of `batch_size`: a set read once, in order."""
    return list(torch.arange(n_examples).split(batch_size))
