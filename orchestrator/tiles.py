"""One comparison tile: stream the probe set through two groups of models, accumulate CKA.

`run_tile` is plain PyTorch (no Ray): the comparison stage runs it on the actor pool, and the
benchmarks call it directly on machines without Ray. It writes the tile's pca part (diagonal
tiles) and then its cka part, which marks the tile done.
"""

from __future__ import annotations

import itertools
import socket
import time
from typing import Any

import numpy as np
import pandas as pd
import torch

from repsweep.analysis.cka import CKAAccumulator
from repsweep.analysis.schemas import SCHEMAS
from repsweep.analysis.store import SweepStore
from repsweep.analysis.stream import stream_batches
from repsweep.models import model_from_bytes
from repsweep.orchestrator.data import load_dataset
from repsweep.orchestrator.plan import Tile
from repsweep.orchestrator.spec import CompareSpec, DatasetSpec

def run_tile(tile: Tile, sweep_uri: str, compare: CompareSpec, dataset: DatasetSpec,
             device: torch.device | None = None) -> dict[str, Any]:
    """Stream the probe set through both groups, accumulate CKA, write the tile's rows.

    Writes the tile's pca part (diagonal tiles) and then its cka part, which marks it done.
    """
    from repsweep.orchestrator.train import pick_device

    t0 = time.perf_counter()
    device = device or pick_device()
    store = SweepStore(sweep_uri)
    models = {}
    for tid in dict.fromkeys(tile.group_a + tile.group_b):
        where = store.uri_of("checkpoints", f"{tid}.pt")
        model = model_from_bytes(store.read_bytes("checkpoints", f"{tid}.pt"), where)[0]
        models[tid] = model.inference_copy().to(device)  # BatchNorm folded: faster forward passes
    x = load_dataset(dataset).x_test
    if compare.probe_examples:
        x = x[:compare.probe_examples]
    x = x.to(device)

    n_layers = {t: len(m.layer_info(tuple(x.shape[1:]))) for t, m in models.items()}
    rows = [f"{t}/{i}" for t in tile.group_a for i in range(n_layers[t])]
    cols = [f"{t}/{i}" for t in tile.group_b for i in range(n_layers[t])]
    acc = CKAAccumulator(row_names=rows, col_names=None if tile.diagonal else cols,
                         pc1=tile.diagonal, device=device)
    with torch.inference_mode():
        for idx in stream_batches(len(x), batch_size=compare.batch_size, passes=compare.passes, seed=0):
            xb = x[idx]  # (n, C, H, W)
            act_a = [a for t in tile.group_a for a in models[t].forward_layers(xb)]
            if tile.diagonal:
                acc.update(act_a)
            else:
                acc.update(act_a, [a for t in tile.group_b for a in models[t].forward_layers(xb)])
    res = acc.result()
    cka = res.cka()

    # pairs run a-before-b in the groups' order, so a's layers are rows and b's are columns
    start_a = dict(zip(tile.group_a, itertools.accumulate([0] + [n_layers[t] for t in tile.group_a])))
    start_b = dict(zip(tile.group_b, itertools.accumulate([0] + [n_layers[t] for t in tile.group_b])))
    parts = []
    for p in tile.pairs:
        la, lb = np.meshgrid(np.arange(n_layers[p.a]), np.arange(n_layers[p.b]), indexing="ij")
        i, j = (start_a[p.a] + la).ravel(), (start_b[p.b] + lb).ravel()  # (L_a * L_b,)
        parts.append(pd.DataFrame({
            "trial_a": p.a, "layer_a": la.ravel(), "trial_b": p.b, "layer_b": lb.ravel(),
            "cka": cka[i, j], "hsic_ab": res.hsic_xy[i, j], "hsic_aa": res.hsic_xx[i],
            "hsic_bb": res.hsic_yy[j]}))
    frame = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=SCHEMAS["cka"].names)
    frame["n_batches"], frame["batch_size"] = res.n_batches, compare.batch_size
    if tile.diagonal:
        pc1, _ = res.pc1_fraction()
        store.write_part("pca", tile.key, pd.DataFrame({
            "trial_id": [n.split("/")[0] for n in rows], "layer": [int(n.split("/")[1]) for n in rows],
            "pc1_fraction": pc1, "n_batches": res.n_batches}))
    store.write_part("cka", tile.key, frame)
    return {"n_rows": len(frame), "wall_time_s": time.perf_counter() - t0, "device": str(device),
            "node": socket.gethostname(), "n_skipped": res.n_skipped}
