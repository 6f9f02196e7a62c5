"""One comparison tile: stream the probe set through two groups of models, accumulate CKA.

`run_tile` is plain PyTorch (no Ray): the comparison stage runs it on the actor pool, and the
benchmarks call it directly on machines without Ray. Besides CKA it accumulates the first-PC
view from the same Grams (`analysis/engine/pcview.py`: first-PC shares, CKA without PC1, PC1 cosines,
each example's share of the first PC), then writes the tile's parts, its cka part last: that
one marks the tile done.
"""

from __future__ import annotations

import itertools
import socket
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from repsweep.analysis.engine.cka import CKAAccumulator
from repsweep.analysis.engine.pcview import PCResult, PCView
from repsweep.analysis.tables.schemas import SCHEMAS
from repsweep.analysis.tables.store import SweepStore
from repsweep.analysis.engine.stream import batch_sizes, batches, stream_batches
from repsweep.models import model_from_bytes
from repsweep.orchestrator.training.data import load_dataset
from repsweep.orchestrator.comparison.plan import Tile
from repsweep.orchestrator.spec import CompareSpec, DatasetSpec

def run_tile(tile: Tile, sweep_uri: str, compare: CompareSpec, dataset: DatasetSpec,
             device: torch.device | None = None) -> dict[str, Any]:
    """Stream the probe set through both groups, accumulate CKA and the PC view, write the tile's rows.

    Writes the tile's pca, pc1_pairs and dominant parts (diagonal tiles; pc1_pairs for cross
    tiles too with compare.pc1_cross) and then its cka part, which marks it done.
    """
    from repsweep.orchestrator.training.train import pick_device

    t0 = time.perf_counter()
    device = device or pick_device()
    store = SweepStore(sweep_uri)
    models = {}
    for tid in dict.fromkeys(tile.group_a + tile.group_b):
        where = store.uri_of("checkpoints", f"{tid}.pt")
        model = model_from_bytes(store.read_bytes("checkpoints", f"{tid}.pt"), where)[0]
        models[tid] = model.inference_copy().to(device)  # BatchNorm folded: faster forward passes
    data = load_dataset(dataset)
    x, labels = data.x_test, data.y_test.numpy()
    if compare.probe_examples:
        x, labels = x[:compare.probe_examples], labels[:compare.probe_examples]
    x = x.to(device)  # held: once on the device; streamed: each batch decoded onto it

    n_layers = {t: len(m.layer_info(tuple(x.shape[1:]))) for t, m in models.items()}
    rows = [f"{t}/{i}" for t in tile.group_a for i in range(n_layers[t])]
    cols = [f"{t}/{i}" for t in tile.group_b for i in range(n_layers[t])]
    view = PCView(probe_size=len(x) if tile.diagonal else None) if tile.diagonal or compare.pc1_cross else None
    acc = CKAAccumulator(row_names=rows, col_names=None if tile.diagonal else cols, device=device, pc_view=view)
    with torch.inference_mode():
        stream = list(stream_batches(len(x), batch_size=compare.batch_size, passes=compare.passes, seed=0))
        for idx, xb in zip(stream, batches(x, stream), strict=True):  # xb: (n, C, H, W)
            act_a = [a for t in tile.group_a for a in models[t].forward_layers(xb)]
            if tile.diagonal:
                acc.update(act_a, examples=idx)
            else:
                acc.update(act_a, [a for t in tile.group_b for a in models[t].forward_layers(xb)])
    res = acc.result()
    pcs = view.result() if view is not None and res.n_batches else None

    # pairs run a-before-b in the groups' order, so a's layers are rows and b's are columns
    start_a = dict(zip(tile.group_a, itertools.accumulate([0] + [n_layers[t] for t in tile.group_a])))
    start_b = dict(zip(tile.group_b, itertools.accumulate([0] + [n_layers[t] for t in tile.group_b])))
    matrix = res.cka()  # (R_x, R_y), once: every pair below reads its block of it
    without, cos2 = (pcs.cka_without_pc1(), pcs.pc1_cos2()) if pcs is not None else (None, None)
    cka, pc_pairs = [], []
    for p in tile.pairs:
        la, lb = np.meshgrid(np.arange(n_layers[p.a]), np.arange(n_layers[p.b]), indexing="ij")
        i, j = (start_a[p.a] + la).ravel(), (start_b[p.b] + lb).ravel()  # (L_a * L_b,)
        keys = {"trial_a": p.a, "layer_a": la.ravel(), "trial_b": p.b, "layer_b": lb.ravel()}
        cka.append(pd.DataFrame({**keys, "cka": matrix[i, j], "hsic_ab": res.hsic_xy[i, j],
                                 "hsic_aa": res.hsic_xx[i], "hsic_bb": res.hsic_yy[j]}))
        if pcs is not None and (p.a == p.b or compare.pc1_cross):
            pc_pairs.append(pd.DataFrame({**keys, "cka_without_pc1": without[i, j],
                                          "pc1_cos2": cos2[i, j], "hsic_ab": pcs.removed_xy[i, j],
                                          "hsic_aa": pcs.removed_xx[i], "hsic_bb": pcs.removed_yy[j]}))
    frame = _frame(cka, "cka").assign(n_batches=res.n_batches, batch_size=max(batch_sizes(len(x), compare.batch_size)))
    if pcs is not None:
        store.write_part("pc1_pairs", tile.key, _frame(pc_pairs, "pc1_pairs").assign(n_batches=pcs.n_batches))
    if tile.diagonal:
        trial_ids, layers = [n.split("/")[0] for n in rows], [int(n.split("/")[1]) for n in rows]
        pc1 = pcs.pc1_fraction()[0] if pcs is not None else np.full(len(rows), np.nan)
        dominant = _dominant(pcs, trial_ids, layers, labels, compare.dominant) if pcs is not None else None
        share = (dominant.groupby(["trial_id", "layer"])["pc1_share"].sum() if dominant is not None
                 else pd.Series(dtype=float))
        store.write_part("pca", tile.key, pd.DataFrame({
            "trial_id": trial_ids, "layer": layers, "pc1_fraction": pc1, "n_batches": res.n_batches,
            "dominant_share": share.reindex(list(zip(trial_ids, layers))).to_numpy()}))
        store.write_part("dominant", tile.key, dominant if dominant is not None else _frame([], "dominant"))
    store.write_part("cka", tile.key, frame)
    return {"n_rows": len(frame), "wall_time_s": time.perf_counter() - t0, "device": str(device),
            "node": socket.gethostname(), "n_skipped": res.n_skipped}


def _frame(parts: list[pd.DataFrame], table: str) -> pd.DataFrame:
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=SCHEMAS[table].names)


def _dominant(pcs: PCResult, trial_ids: list[str], layers: list[int], labels: np.ndarray, k: int) -> pd.DataFrame:
    """Each layer's k probe examples with the largest mean share of its first PC (TMLR 2022)."""
    share, score, norm = pcs.example_stats()  # (R, N) each
    top = np.argsort(-np.nan_to_num(share, nan=-1.0), axis=1, kind="stable")[:, :k]  # (R, k)
    r = np.repeat(np.arange(len(layers)), top.shape[1])  # (R * k,)
    ex = top.ravel()
    return pd.DataFrame({"trial_id": np.asarray(trial_ids)[r], "layer": np.asarray(layers)[r], "example": ex,
                         "rank": np.tile(np.arange(1, top.shape[1] + 1), len(layers)), "label": labels[ex],
                         "pc1_share": share[r, ex], "pc1_score": score[r, ex], "norm": norm[r, ex]})
