"""The probe stream: which examples of the probe set each CKA minibatch holds (`stream_batches`).

Every model in a comparison must see the same minibatches (DESIGN.md, "The CKA engine"):
one seeded permutation of the probe set per pass, cut into batches.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch


def stream_batches(
    n_examples: int, *, batch_size: int = 256, passes: int = 10, seed: int = 0
) -> Iterator[torch.Tensor]:
    """Indices of the probe stream: per pass one seeded permutation, cut into batches.

    Pass p's permutation depends only on (seed, p) (NumPy's SeedSequence), so every model,
    tile and re-run sees the same batches. The last batch of a pass may be short; the CKA
    accumulator skips batches of fewer than 4 examples (analysis.cka.MIN_BATCH) and counts
    them. Defaults follow Nguyen et al. 2021 (batch 256, 10 passes).

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
        yield from torch.from_numpy(perm).split(batch_size)
