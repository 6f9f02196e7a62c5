"""Comparison planning: which model pairs to compare, cut into tiles of model groups.

Models are sorted by (data_fraction, seed, depth, width), so cross-architecture pairs sit
close together, and cut into groups. A tile (group i, group j), i <= j, is one job on the
actor pool (`orchestrator/comparison/tiles.py` runs it): it streams the probe set through the models of
both groups and accumulates their block of HSIC sums; diagonal tiles also give each model's
within-model CKA and first-PC shares. A tile's key hashes its groups and the probe settings,
so a finished tile is recognised, and skipped, by its cka part.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass

import pandas as pd

from repsweep.analysis.tables.store import SweepStore
from repsweep.orchestrator.spec import SweepSpec

MAX_TILE_LAYERS = 1024  # rows + cols of one tile: (R_x + R_y) n^2 float64 Grams, ~0.5 GB at n=256


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
    same_arch = a["arch"] == b["arch"]
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
    c = spec.compare  # what a tile computes depends on these: they are part of its key
    settings = json.dumps([c.probe_examples, c.batch_size, c.passes, c.pc1_cross, c.dominant])
    tiles = []
    for i, j in itertools.combinations_with_replacement(range(len(groups)), 2):
        in_tile = tuple(p for p in pairs if sorted((group_of[p.a], group_of[p.b])) == [i, j])
        if i == j or in_tile:  # diagonal tiles always run: they give the first-PC shares
            digest = hashlib.sha256((settings + repr(groups[i]) + repr(groups[j])).encode()).hexdigest()[:10]
            tiles.append(Tile(f"{i:03d}-{j:03d}-{digest}", groups[i], groups[j], in_tile))
    return Plan(tuple(tiles), tuple(pairs), n_layers)
