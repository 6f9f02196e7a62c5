"""The comparison stage: within- and cross-model CKA, first-PC shares, prediction agreement.

plan_comparison -> tiles -> Ray actors (run_tile) -> tables cka, pca, tiles;
prediction_stats -> tables disagreement, class_accuracy.

Models are sorted by (data_fraction, seed, depth, width), so cross-architecture pairs sit
close together, and cut into groups. A tile (group i, group j), i <= j, streams the probe
set (the test set, or its first `compare.probe_examples`) through the models of both groups
and accumulates its block of HSIC sums with the CKA engine; diagonal tiles also give each
model's within-model CKA and first-PC shares. A tile's rows are written when it finishes,
keyed by the tile, so a re-run skips finished tiles and never duplicates rows.

`run_tile` is plain PyTorch (no Ray), so benchmarks can call it on machines without Ray.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import logging
import socket
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch

from analysis.cka import CKAAccumulator
from analysis.probe import probe_batches
from analysis.tables import SCHEMAS, SweepStore
from orchestrator.data import load_dataset
from orchestrator.spec import CompareSpec, DatasetSpec, SweepSpec

log = logging.getLogger(__name__)

MAX_TILE_LAYERS = 1024  # rows + cols of one tile: (R_x + R_y) n^2 float64 Grams, ~0.5 GB at n=256
TILE_ATTEMPTS = 2  # a failed tile is tried this many times, then recorded as failed


@dataclass(frozen=True)
class Pair:
    """Two trials to compare (a == b: within-model), and why they are compared."""

    a: str
    b: str
    kind: str  # within | cross_seed | cross_arch | cross (any other pair, from "all")


@dataclass(frozen=True)
class Tile:
    """One actor task: the models of two groups and the selected pairs between them."""

    key: str
    group_a: tuple[str, ...]
    group_b: tuple[str, ...]
    pairs: tuple[Pair, ...]

    @property
    def diagonal(self) -> bool:
        return self.group_a == self.group_b


@dataclass(frozen=True)
class Plan:
    tiles: tuple[Tile, ...]
    pairs: tuple[Pair, ...]
    n_layers: dict[str, int]  # layers captured per trial

    @property
    def n_layer_pairs(self) -> int:
        """Rows the cka table will hold: L_a x L_b for every selected pair."""
        return sum(self.n_layers[p.a] * self.n_layers[p.b] for p in self.pairs)


# --------------------------------------------------------------------------- planning

def _pair_kind(a: pd.Series, b: pd.Series) -> str:
    same_arch = (a["depth"], a["width"]) == (b["depth"], b["width"])
    if same_arch and a["data_fraction"] == b["data_fraction"]:
        return "cross_seed"  # same configuration, different seed
    if not same_arch and (a["data_fraction"], a["seed"]) == (b["data_fraction"], b["seed"]):
        return "cross_arch"  # same data fraction and seed, different width or depth
    return "cross"


def select_pairs(trials: pd.DataFrame, kinds: list[str]) -> list[Pair]:
    """The model pairs the spec's `compare.pairs` asks for, each once, a before b."""
    rows = [r for _, r in trials.iterrows()]
    pairs = [Pair(r["trial_id"], r["trial_id"], "within") for r in rows
             if "within" in kinds or "all" in kinds]
    for ra, rb in itertools.combinations(rows, 2):
        kind = _pair_kind(ra, rb)
        if kind in kinds or "all" in kinds:
            pairs.append(Pair(ra["trial_id"], rb["trial_id"], kind))
    return pairs


def plan_comparison(spec: SweepSpec, store: SweepStore) -> Plan:
    """Pairs and tiles for every finished trial of the sweep."""
    trials = store.read_table("trials")
    trials = trials[trials["status"] == "done"].sort_values(["data_fraction", "seed", "depth", "width"])
    layers = store.read_table("layers").groupby("trial_id").size()
    n_layers = {t: int(layers[t]) for t in trials["trial_id"]}
    pairs = select_pairs(trials, spec.compare.pairs)
    ids = list(trials["trial_id"])
    if not ids:
        return Plan((), (), {})
    size = spec.compare.group_size or max(1, MAX_TILE_LAYERS // (2 * max(n_layers.values())))
    groups = [tuple(ids[i:i + size]) for i in range(0, len(ids), size)]
    group_of = {t: g for g, members in enumerate(groups) for t in members}
    settings = json.dumps([spec.compare.probe_examples, spec.compare.batch_size, spec.compare.passes])
    tiles = []
    for i, j in itertools.combinations_with_replacement(range(len(groups)), 2):
        in_tile = tuple(p for p in pairs if sorted((group_of[p.a], group_of[p.b])) == [i, j])
        if i == j or in_tile:  # diagonal tiles always run: they give the first-PC shares
            digest = hashlib.sha256((settings + repr(groups[i]) + repr(groups[j])).encode()).hexdigest()[:10]
            tiles.append(Tile(f"{i:03d}-{j:03d}-{digest}", groups[i], groups[j], in_tile))
    return Plan(tuple(tiles), tuple(pairs), n_layers)


# ------------------------------------------------------------------------------ tiles

def run_tile(tile: Tile, sweep_uri: str, compare: CompareSpec, dataset: DatasetSpec,
             device: torch.device | None = None) -> dict[str, Any]:
    """Stream the probe set through both groups, accumulate CKA, write the tile's rows.

    Writes the tile's pca part (diagonal tiles) and then its cka part, which marks it done.
    """
    from orchestrator.train import model_from_bytes, pick_device

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
        for idx in probe_batches(len(x), batch_size=compare.batch_size, passes=compare.passes, seed=0):
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


class TileWorker:
    """A Ray actor that holds a device and runs tiles (one at a time)."""

    def __init__(self, threads: int) -> None:
        torch.set_num_threads(max(1, threads))

    def run(self, tile: Tile, sweep_uri: str, compare: CompareSpec, dataset: DatasetSpec) -> dict[str, Any]:
        import ray

        out = run_tile(tile, sweep_uri, compare, dataset)
        out["node"] = ray.get_runtime_context().get_node_id()
        return out


# ----------------------------------------------------------------------------- driver

def compare(spec: SweepSpec, store: SweepStore, *, progress: Any = None) -> dict[str, Any]:
    """Run every tile of the plan not yet finished on Ray actors; then prediction statistics.

    `progress(plan, todo)` may return an object with update(n) and close() (a tqdm bar).
    """
    import ray

    plan = plan_comparison(spec, store)
    todo = deque(t for t in plan.tiles if not store.has_part("cka", t.key))
    log.info("plan: %d model pairs, %d layer pairs, %d tiles (%d to run)",
             len(plan.pairs), plan.n_layer_pairs, len(plan.tiles), len(todo))
    bar = progress(plan, len(todo)) if progress else None
    to_run = {t.key for t in todo}
    for t in plan.tiles:  # finished by an earlier run that was cut off before its tiles row
        if t.key not in to_run and not store.has_part("tiles", t.key):
            _tile_row(store, t, "done", n_rows=len(store.read_part("cka", t.key)))
    c = spec.compare
    failed: dict[str, str] = {}
    if todo:
        fit = ray.cluster_resources().get("CPU", 1) // c.cpu
        if c.gpu:
            fit = min(fit, ray.cluster_resources().get("GPU", 0) // c.gpu)
        worker = ray.remote(TileWorker).options(num_cpus=c.cpu, num_gpus=c.gpu, max_restarts=1)
        idle = [worker.remote(int(c.cpu)) for _ in range(int(min(len(todo), max(1, fit))))]
        attempts: dict[str, int] = {}
        inflight: dict[Any, tuple[Tile, Any]] = {}
        while todo or inflight:
            while idle and todo:
                tile, actor = todo.popleft(), idle.pop()
                inflight[actor.run.remote(tile, store.uri, c, spec.dataset)] = (tile, actor)
            (ref,), _ = ray.wait(list(inflight), num_returns=1)
            tile, actor = inflight.pop(ref)
            try:
                out = ray.get(ref)
            except (ray.exceptions.RayTaskError, ray.exceptions.RayActorError) as e:
                attempts[tile.key] = attempts.get(tile.key, 0) + 1
                if isinstance(e, ray.exceptions.RayActorError):
                    actor = worker.remote(int(c.cpu))
                if attempts[tile.key] < TILE_ATTEMPTS:
                    log.warning("tile %s failed, retrying: %s", tile.key, _last_line(e))
                    todo.append(tile)
                else:
                    failed[tile.key] = _last_line(e)
                    _tile_row(store, tile, "failed", error=failed[tile.key])
                    if bar:
                        bar.update(1)
            else:
                _tile_row(store, tile, "done", **out)
                if bar:
                    bar.update(1)
            idle.append(actor)
    if bar:
        bar.close()
    if not failed:  # parts of an older plan (other groups or settings) would duplicate rows
        keep = {t.key for t in plan.tiles}
        for table in ("cka", "pca", "tiles"):
            for key in set(store.part_keys(table)) - keep:
                store.delete_part(table, key)
    prediction_stats(store, plan)
    return {"plan": plan, "failed": failed}


def _tile_row(store: SweepStore, tile: Tile, status: str, **info: Any) -> None:
    store.write_part("tiles", tile.key, [{
        "tile": tile.key, "status": status, "error": info.get("error"), "trials_a": list(tile.group_a),
        "trials_b": list(tile.group_b), "n_rows": info.get("n_rows", 0),
        "wall_time_s": info.get("wall_time_s"), "node": info.get("node"), "device": info.get("device")}])


def _last_line(e: BaseException) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else repr(e))[:500]


# ----------------------------------------------------------------- prediction statistics

def prediction_stats(store: SweepStore, plan: Plan) -> None:
    """Write disagreement (every selected cross pair) and class_accuracy (every trial)."""
    preds = store.read_table("predictions")
    for tid, p in preds[preds["trial_id"].isin(plan.n_layers)].groupby("trial_id"):
        acc = p.groupby("label")["correct"].agg(["size", "mean"]).reset_index()
        _write_if_changed(store, "class_accuracy", tid, pd.DataFrame({
            "trial_id": tid, "label": acc["label"], "n_examples": acc["size"], "accuracy": acc["mean"]}))
    by_trial = {t: p.set_index("example") for t, p in preds.groupby("trial_id")}
    rows = []
    for pair in plan.pairs:
        if pair.a == pair.b:
            continue
        a, b = by_trial[pair.a], by_trial[pair.b].reindex(by_trial[pair.a].index)
        ca, cb = a["correct"].to_numpy(), b["correct"].to_numpy()
        rows.append({"trial_a": pair.a, "trial_b": pair.b, "pair_kind": pair.kind, "n_examples": len(a),
                     "agreement": float((a["prediction"] == b["prediction"]).mean()),
                     "both_wrong": float((~ca & ~cb).mean()), "only_a_wrong": float((~ca & cb).mean()),
                     "only_b_wrong": float((ca & ~cb).mean())})
    _write_if_changed(store, "disagreement", "pairs",
                      pd.DataFrame(rows, columns=SCHEMAS["disagreement"].names))


def _write_if_changed(store: SweepStore, table: str, key: str, frame: pd.DataFrame) -> None:
    """Write a derived part only when its rows differ, so a re-run leaves the files alone."""
    if store.has_part(table, key):
        old = store.read_part(table, key)
        new = pd.DataFrame(frame).astype(old.dtypes.to_dict()).reset_index(drop=True)
        if old.equals(new):
            return
    store.write_part(table, key, frame)
