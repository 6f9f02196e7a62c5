"""Block structure: the run of layers a model's within-model CKA heatmap shows as one square.

Nguyen, Raghu & Kornblith (ICLR 2021), sec. 3: wide or deep networks trained on little data
show a "block structure", a large set of contiguous hidden layers with highly similar
representations, unlike the layers before them and carried by a dominant first principal
component (sec. 4). `find_blocks` finds it in one model's (L, L) linear-CKA matrix, at a few
CKA thresholds so its stability shows; pure numpy and pandas, no Ray, no storage.

The rule. At threshold t, a block is a run of consecutive layers (the logits excluded) that is

1. alike: every pair of its layers has CKA >= t (a NaN pair is not alike);
2. large: at least MIN_SIZE layers;
3. unlike the layers before it: its mean CKA with the layers just before it, as many as it
   has (all of them if fewer), before_near, is at least 1 - t below its own mean CKA,
   `inside`: the layers before differ from it by more than the threshold lets two of its own
   layers differ. A run with no layer before it has nothing to be unlike and is no block.

The reported block is the largest such run (ties: the larger inside - before_near).
before_near is the rule's test, not a column; the `before` column is the mean over all
earlier layers, `after` over the later ones (the logits left out), and `contrast`, the block's
distinctness, is inside minus the mean over every pair of a block layer and a layer outside it
(`span_contrast`): the statistic the findings follow when the first PC or the dominant
datapoints are removed (analysis/study/findings.py). A run whose layers do not carry a dominant
first PC is a run of alike layers, not the paper's block: `carried_by_pc1` in the `blocks`
table says which (pc1_inside >= findings.dominant_pc1). Monotonicity: a run alike at a higher threshold is alike at a lower one, but
rule 3's floor 1 - t relaxes as t rises, so a larger threshold gives no larger block only
where that block is also 1 - t_lower below its inside (always so for a sharp block).

Why not simpler rules. A bare longest run of CKA >= 0.9 is there in every model of depth
>= 20: residual paths give runs of 3-6 such layers (DESIGN.md), hence MIN_SIZE = 7. The
`before` column (mean CKA with *all* earlier layers) cannot be the test either: in a residual
chain, whose CKA only decays with distance (rho^|i-j|), a late run is unlike the far layers
for no reason but their distance (rho = 0.95, 30 layers: inside - before = 0.37 at t = 0.7), and
more so the deeper the model. Against the equally many layers just before it, such a run's
inside - before_near is 0.62-0.71 (1 - t) (geometric decay, runs of 7-30 layers, any depth),
so rule 3 rejects it at every threshold and depth. For a uniformly high matrix the near
contrast is 0: alike layers with nothing unlike them are a level, not a structure.
Limitation: a decay that is flat at short range, e.g. CKA = exp(-(|i-j|/20)^2), keeps 7-9
layers above 0.85-0.9 and passes rule 3 there by 0.005-0.013 (about 1.05 (1 - t)).

On the demo (examples/demo.yaml: ResNets on 8x8 digits, 40 epochs, seeds 0 and 1; the run of
2026-12-01), models with a block, of the two seeds of each configuration, per threshold:

    depth  width  fraction   0.8  0.9  0.95
    8      1, 2   1.0, 0.5    0    0    0     5 hidden layers: none can hold 7
    20     1, 2   1.0, 0.5    0    0    0     runs >= 0.9 of at most 5 layers
    56     1      1.0         2    2    1     s0: no 7 layers >= 0.95 (at most 6)
    56     1      0.5         2    2    2
    56     2      1.0         2    2    1     s0, the unstable run (test acc. 0.94): at most 6 >= 0.95
    56     2      0.5         2    2    2

At 0.9 the depth-56 blocks have 7-11 of the 30 layers, inside - before_near 0.13-0.33 (floor
0.10) and pc1_inside 0.30-0.91 against pc1_outside 0.20-0.67; six run from layer 18-20 to
27-28 (the pool is 28), and in d56-w1-f1-s0 and -s1 the largest run is stage 2 (layers
12-18, 10-18), larger than their stage-3 runs; in -s1 it is not carried by the first PC (0.30
inside, 0.33 outside). 0.8 is the rule's edge: the 7-layer runs of 6 of the 8 depth-20
models come within 0.01-0.04 of the 0.2 floor, and d56-w1-f1-s1's block passes it by 0.004.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

logger = logging.getLogger(__name__)

# CKA levels; the central one is where DESIGN.md measured the residual runs (3-6 layers >= 0.9)
THRESHOLDS = (0.8, 0.9, 0.95)
CENTRAL_THRESHOLD = 0.9  # the level later analyses read the block at (dominant datapoints, findings)
# layers; one more than the longest run residual paths alone gave at CKA >= 0.9 on the digits
# (3-6 layers at every depth >= 20, DESIGN.md "Where things run")
MIN_SIZE = 7
BLOCK_COLUMNS = ["threshold", "found", "start", "end", "size", "fraction", "inside", "before", "after",
                 "contrast", "pc1_inside", "pc1_outside"]  # the `blocks` table less trial_id and carried_by_pc1


def find_blocks(
    cka: np.ndarray,
    pc1: np.ndarray,
    *,
    thresholds: Sequence[float] = THRESHOLDS,
    min_size: int = MIN_SIZE,
    exclude: Sequence[int] = (-1,),
) -> pd.DataFrame:
    """Block structure of one model from its within-model CKA matrix (the rule: module docstring).

    Parameters
    ----------
    cka
        (L, L) symmetric linear CKA between the model's layers (layer 0 = the stem, the last =
        the logits); NaN where undefined (a constant layer).
    pc1
        (L,) each layer's first-principal-component share of variance, 0..1.
    thresholds
        CKA levels at which every pair of a block's layers must be alike; one row each.
    min_size
        Fewest layers a block may have (MIN_SIZE: longer than residual paths' runs).
    exclude
        Layer indices (negative ones count from the end) never in a block, never "before" one and left
        out of pc1_outside; default the logits, the class scores rather than a hidden
        representation.

    Returns
    -------
    pd.DataFrame
        One row per threshold, columns BLOCK_COLUMNS: found; start, end (inclusive layer
        indices, <NA> when not found); size (layers, 0 when not found) and fraction (size / L);
        inside (mean CKA over the block's off-diagonal pairs), before and after (mean CKA
        between its layers and all kept layers before it, after it; after is NaN when none
        is kept), contrast (`span_contrast`: inside minus the mean over the pairs of a block
        layer and a kept layer outside it, before and after pooled), pc1_inside (mean pc1
        of its layers), pc1_outside (mean pc1 of the other layers, excluded ones left out);
        the statistics are NaN when not found.
    """
    cka, pc1, kept = _check(cka, pc1, thresholds, min_size, exclude)
    n_layers = len(cka)
    finite = np.isfinite(cka) & kept[:, None] & kept[None, :]
    finite[np.diag_indices(n_layers)] = False  # means over pairs leave out the diagonal
    sums = _prefix(np.where(finite, cka, 0.0))  # (L+1, L+1): sums[i, j] = sum of cka[:i, :j]
    counts = _prefix(finite.astype(float))
    kept_at = np.flatnonzero(kept)  # positions of the kept layers, ascending

    def mean(r0: int, r1: int, c0: int, c1: int, skip: tuple[int, int] = (0, 0)) -> float:
        """Mean of the finite, kept, off-diagonal cka[r0:r1, c0:c1], rows skip[0]:skip[1] left out; NaN if none."""
        k0, k1 = skip
        n = _rect(counts, r0, r1, c0, c1) - _rect(counts, k0, k1, c0, c1)
        return (_rect(sums, r0, r1, c0, c1) - _rect(sums, k0, k1, c0, c1)) / n if n > 0 else float("nan")

    rows = []
    for t in thresholds:
        best = None  # (size, inside - before_near, start, end) of the best run so far
        ends = _alike_ends(cka, kept, t)
        for s in kept_at[1:]:  # a block needs at least one kept layer before it
            before_at = kept_at[kept_at < s]
            for e in range(s + min_size - 1, ends[s] + 1):
                size = e - s + 1
                near_from = before_at[-min(size, len(before_at))]
                gap = mean(s, e + 1, s, e + 1) - mean(near_from, s, s, e + 1)
                if gap >= 1 - t and (best is None or (size, gap) > best[:2]):
                    best = (size, gap, s, e)
        rows.append(_row(t, best, n_layers, mean, pc1, kept))
        logger.debug("CKA >= %.2f: %s", t, f"block {best[2]}-{best[3]}" if best else "no block")
    out = pd.DataFrame(rows, columns=BLOCK_COLUMNS)
    return out.astype({"start": "Int64", "end": "Int64", "size": int, "found": bool})


def _check(cka, pc1, thresholds, min_size, exclude) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Validate the inputs; return cka (L, L) and pc1 (L,) as float64 and the kept-layer mask."""
    cka, pc1 = np.asarray(cka, dtype=float), np.asarray(pc1, dtype=float)
    if cka.ndim != 2 or cka.shape[0] != cka.shape[1]:
        raise ValueError(f"cka: expected a square (L, L) matrix, got shape {cka.shape}")
    n_layers = cka.shape[0]
    if pc1.shape != (n_layers,):
        raise ValueError(f"pc1: expected shape ({n_layers},) to match cka, got {pc1.shape}")
    bad = [t for t in thresholds if not 0 < t <= 1]
    if bad or len(thresholds) == 0:
        raise ValueError(f"thresholds: expected CKA levels in (0, 1], got {list(thresholds)}")
    if min_size < 2:
        raise ValueError(f"min_size: expected at least 2 layers, got {min_size}")
    out_of_range = [i for i in exclude if not -n_layers <= i < n_layers]
    if out_of_range:
        raise ValueError(f"exclude: layers {out_of_range} are outside 0..{n_layers - 1}")
    kept = np.ones(n_layers, dtype=bool)
    kept[list(exclude)] = False
    return cka, pc1, kept


def _prefix(x: np.ndarray) -> np.ndarray:
    """(L+1, L+1) zero-padded 2-D cumulative sum: out[i, j] = x[:i, :j].sum()."""
    out = np.zeros((x.shape[0] + 1, x.shape[1] + 1))
    out[1:, 1:] = x.cumsum(axis=0).cumsum(axis=1)
    return out


def _rect(prefix: np.ndarray, r0: int, r1: int, c0: int, c1: int) -> float:
    """Sum of x[r0:r1, c0:c1] from its prefix sums (inclusion-exclusion)."""
    return float(prefix[r1, c1] - prefix[r0, c1] - prefix[r1, c0] + prefix[r0, c0])


def _alike_ends(cka: np.ndarray, kept: np.ndarray, t: float) -> np.ndarray:
    """(L,) for each start s, the last e such that every pair in s..e is kept and CKA >= t.

    A run inside an alike run is alike, so the end never moves back as s advances (two
    pointers); ends[s] < s where layer s itself is excluded.
    """
    with np.errstate(invalid="ignore"):
        alike = cka >= t  # (L, L); NaN compares False
    alike = alike & alike.T & kept[:, None] & kept[None, :]  # both triangles; excluded: alike to none
    n_layers = len(cka)
    ends = np.full(n_layers, -1)
    e = -1
    for s in np.flatnonzero(kept):
        e = max(e, s)
        while e + 1 < n_layers and alike[s:e + 1, e + 1].all():  # layer e + 1 joins s..e
            e += 1
        ends[s] = e
    return ends


def _row(t: float, best: tuple[int, float, int, int] | None, n_layers: int,
         mean: Callable[..., float], pc1: np.ndarray, kept: np.ndarray) -> dict:
    """One output row: the statistics of the block `best` (size, gap, s, e), or NaN if None."""
    if best is None:
        nan = float("nan")
        return dict(threshold=t, found=False, start=pd.NA, end=pd.NA, size=0, fraction=0.0,
                    inside=nan, before=nan, after=nan, contrast=nan, pc1_inside=nan, pc1_outside=nan)
    size, _, s, e = best
    in_block = np.zeros(n_layers, dtype=bool)
    in_block[s:e + 1] = True
    return dict(threshold=t, found=True, start=int(s), end=int(e), size=int(size),
                fraction=size / n_layers, inside=mean(s, e + 1, s, e + 1), before=mean(0, s, s, e + 1),
                after=mean(e + 1, n_layers, s, e + 1), contrast=_contrast(mean, s, e, n_layers),
                pc1_inside=_nanmean(pc1[in_block]), pc1_outside=_nanmean(pc1[kept & ~in_block]))


def _contrast(mean: Callable[..., float], s: int, e: int, n_layers: int) -> float:
    """inside - outside for layers s..e, outside pooling the pairs before and after (means by pair count)."""
    return mean(s, e + 1, s, e + 1) - mean(0, n_layers, s, e + 1, skip=(s, e + 1))


def span_contrast(cka: np.ndarray, start: int, end: int, *, exclude: Sequence[int] = (-1,)) -> dict[str, float]:
    """How distinct layers start..end are from the rest of the model: a block's distinctness.

    inside: mean CKA over the span's off-diagonal pairs; outside: mean CKA between a span layer
    and a kept layer outside the span (before and after pooled, by pair); contrast: inside -
    outside. Layers joined by residual paths stay alike whatever is removed; what vanishes from
    the paper's heatmaps when a block's first PC is removed is this contrast (Nguyen, Raghu &
    Kornblith 2021, Figure 4). NaN pairs and `exclude`d layers (default the logits) are left out.
    """
    cka = np.asarray(cka, dtype=float)
    n_layers = len(cka)
    kept = np.ones(n_layers, dtype=bool)
    kept[list(exclude)] = False
    span = np.zeros(n_layers, dtype=bool)
    span[start:end + 1] = True
    pairs = cka[span & kept][:, kept]  # (span, kept) rows: span layers; columns: every kept layer
    in_cols = span[kept]
    inner = pairs[:, in_cols][~np.eye(int(in_cols.sum()), dtype=bool)]
    inside, outside = _nanmean(inner), _nanmean(pairs[:, ~in_cols].ravel())
    return {"inside": inside, "outside": outside, "contrast": inside - outside}


def _nanmean(x: np.ndarray) -> float:
    """Mean of the finite values; NaN (without a warning) when there are none."""
    x = x[np.isfinite(x)]
    return float(x.mean()) if len(x) else float("nan")


def pc1_spans(blocks: pd.DataFrame, n_layers: dict[str, int], *, threshold: float = CENTRAL_THRESHOLD
              ) -> dict[str, tuple[str, int, int]]:
    """Per trial, the layers whose contrast claim 3 follows: (role, start, end).

    'block': a trial whose block at `threshold` is carried by its first PC (`carried_by_pc1`),
    on that block. 'control': every other trial, on the layers at the blocks' median relative
    position (start / L and end / L, medians over the blocks, scaled to its L and kept off
    the stem and the logits), so that the same statistic is measured where blocks form in
    models that have none. No block at all: no spans (nothing to control for). A control
    model too shallow for a span of 2 layers is left out.
    """
    rows = blocks[blocks["threshold"] == threshold]
    rows = rows[rows["trial_id"].isin(n_layers)]
    carried = rows[rows["found"] & rows["carried_by_pc1"].fillna(False).astype(bool)]
    if carried.empty:
        return {}
    size = carried["trial_id"].map(n_layers).astype(float)
    rel_start, rel_end = float((carried["start"] / size).median()), float((carried["end"] / size).median())
    spans = {r.trial_id: ("block", int(r.start), int(r.end)) for r in carried.itertuples()}
    for tid in rows["trial_id"]:
        if tid in spans:
            continue
        n = n_layers[tid]
        start, end = max(1, round(rel_start * n)), min(n - 2, round(rel_end * n))
        if end > start:
            spans[tid] = ("control", start, end)
    return spans
