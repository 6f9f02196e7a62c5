"""Dominant datapoints and the block: which examples carry it, whether seeds agree, and the test.

Nguyen, Raghu & Kornblith, "On the Origins of the Block Structure Phenomenon in Neural Network
Representations" (TMLR 2022): the block structure of a wide or deep model is carried by a
small group of *dominant datapoints*, examples whose activations inside the block have very
large norms and so make up its first principal component; which examples they are differs
between seeds; and the block dissolves when they are left out of the probe set.

The per-layer candidates come from the comparison tiles (`dominant` table: each layer's
examples with the largest mean share of its first PC, `analysis/engine/pcview.py`). Here:
`block_dominant_set` ranks them over a block's layers, `dominant_overlap` compares the sets of
two seeds of one configuration (Jaccard), and `block_cka_without` recomputes the block's CKA
on the probe set with some examples left out: the dominant set, and a random set of the same
size as the control.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import torch

from repsweep.analysis.study.blocks import span_contrast
from repsweep.analysis.engine.cka import CKAAccumulator
from repsweep.analysis.engine.stream import batches, stream_batches
from repsweep.models.interface import RepresentationModel


def block_dominant_set(dominant: pd.DataFrame, layers: range, k: int) -> list[int]:
    """The k examples with the largest first-PC share summed over the block's layers.

    `dominant` holds one trial's rows (layer, example, pc1_share); an example absent from a
    layer's list counts as 0 there. Ties keep the lower example index.
    """
    rows = dominant[dominant["layer"].isin(list(layers))]
    total = rows.groupby("example")["pc1_share"].sum()
    order = sorted(total.index, key=lambda e: (-total[e], e))
    return [int(e) for e in order[:k]]


def jaccard(a: list[int], b: list[int]) -> float:
    """|a & b| / |a | b| (NaN for two empty sets)."""
    a, b = set(a), set(b)
    return len(a & b) / len(a | b) if a | b else float("nan")


def dominant_overlap(dominant: pd.DataFrame, blocks: pd.DataFrame, trials: pd.DataFrame, k: int) -> pd.DataFrame:
    """For every two seeds of a configuration that both have a block: how alike their dominant sets are.

    blocks: trial_id, start, end (the block found, one row per trial that has one); trials:
    trial_id, arch, data_fraction, seed; dominant: the tiles' dominant table. One row per seed
    pair: arch, data_fraction, seed_a, seed_b, n (set size), jaccard, shared, classes_a,
    classes_b (the labels of each set, most common first).
    """
    sets, classes = {}, {}
    for _, b in blocks.iterrows():
        rows = dominant[dominant["trial_id"] == b["trial_id"]]
        sets[b["trial_id"]] = block_dominant_set(rows, range(int(b["start"]), int(b["end"]) + 1), k)
        label = rows.drop_duplicates("example").set_index("example")["label"]
        classes[b["trial_id"]] = label.reindex(sets[b["trial_id"]]).value_counts().index.astype(int).tolist()
    with_block = trials[trials["trial_id"].isin(sets)].sort_values("seed")
    out = []
    for (arch, frac), seeds in with_block.groupby(["arch", "data_fraction"]):
        for (_, a), (_, b) in itertools.combinations(seeds.iterrows(), 2):
            sa, sb = sets[a["trial_id"]], sets[b["trial_id"]]
            out.append({"arch": arch, "data_fraction": frac, "seed_a": a["seed"], "seed_b": b["seed"],
                        "n": len(sa), "jaccard": jaccard(sa, sb), "shared": len(set(sa) & set(sb)),
                        "classes_a": classes[a["trial_id"]], "classes_b": classes[b["trial_id"]]})
    return pd.DataFrame(out, columns=["arch", "data_fraction", "seed_a", "seed_b", "n", "jaccard", "shared",
                                      "classes_a", "classes_b"])


def block_cka_without(model: RepresentationModel, x: torch.Tensor, start: int, end: int, removed: list[int], *,
                      batch_size: int, passes: int, seed: int = 0) -> dict[str, float]:
    """The block start..end's within-model CKA on the probe set x with the examples `removed` left out
    (minibatch CKA as in the comparison): inside, before (with the layers before it) and outside and
    contrast (`blocks.span_contrast`: with every hidden layer outside it; the logits left out).
    """
    keep = torch.from_numpy(np.setdiff1d(np.arange(len(x)), np.asarray(removed, dtype=np.int64)))
    probe = x[keep.to(x.device)]
    fast = model.inference_copy()
    acc = CKAAccumulator()
    with torch.inference_mode():
        for batch in batches(probe, stream_batches(len(probe), batch_size=batch_size, passes=passes, seed=seed)):
            acc.update(fast.forward_layers(batch))
    cka = acc.result().cka()  # (L, L), the last layer the logits
    before = cka[start:end + 1, :start]
    return {**span_contrast(cka, start, end), "before": float(np.nanmean(before)) if start else float("nan")}
