"""CKA heatmaps: within-model (Figure 1, across data fractions), cross-seed, cross-architecture.

Each chart is a grid of panels, one model pair a panel, layer against layer; heatmaps whose
layer pairs exceed MAX_ROWS average CKA over bins of consecutive layers and say so.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from repsweep.analysis.present.chartkit import (CKA_SCALE, MAX_PANELS, MAX_ROWS, PANEL_PX, choose, done_trials, excluded_note,
                                        facet_header)
from repsweep.analysis.tables.query import Results
from repsweep.analysis.tables.schemas import TableError

if TYPE_CHECKING:
    import altair as alt


def _layer_counts(res: Results) -> pd.Series:
    return res.sql("SELECT trial_id, count(*) AS n FROM layers GROUP BY trial_id").set_index("trial_id")["n"]


# the heatmap values a chart can show: (table, column), read as "cka"
VALUES = {"cka": ("cka", "cka"), "without_pc1": ("pc1_pairs", "cka_without_pc1")}


def _pair_cka(res: Results, pairs: pd.DataFrame, values: str = "cka") -> pd.DataFrame:
    """CKA rows of each pair (trial_a, trial_b), oriented so trial_a's layers are layer_a."""
    wanted = [f"{a}|{b}" for a, b in zip(pairs["trial_a"], pairs["trial_b"])]
    table, column = VALUES[values]
    cka = res.sql(f"SELECT trial_a, layer_a, trial_b, layer_b, {column} AS cka FROM {table} "
                  "WHERE list_contains($want, trial_a || '|' || trial_b) "
                  "OR list_contains($want, trial_b || '|' || trial_a)", {"want": wanted})
    swapped = cka.rename(columns={"trial_a": "trial_b", "trial_b": "trial_a",
                                  "layer_a": "layer_b", "layer_b": "layer_a"})
    keys = ["trial_a", "trial_b"]
    as_stored = pairs.merge(cka, on=keys)
    reversed_ = pairs[pairs["trial_a"] != pairs["trial_b"]].merge(swapped, on=keys)
    return pd.concat([as_stored, reversed_], ignore_index=True)


def _bin_cap(sizes: list[tuple[int, int]]) -> int:
    """The largest number of bins per axis that keeps the panels' cells within MAX_ROWS."""
    cap = max(max(s) for s in sizes)
    while cap > 1 and sum(min(a, cap) * min(b, cap) for a, b in sizes) > MAX_ROWS:
        cap -= 1
    return cap


def _span(lo: pd.Series, hi: pd.Series) -> list[str]:
    return [f"{a}" if a == b else f"{a}-{b}" for a, b in zip(lo, hi)]


def _heatmap_data(res: Results, pairs: pd.DataFrame, values: str = "cka") -> tuple[pd.DataFrame, list[str]]:
    """One row per cell of each pair's CKA heatmap (VALUES), layers binned to fit MAX_ROWS; notes."""
    notes = []
    if len(pairs) > MAX_PANELS:
        notes.append(f"the first {MAX_PANELS} of {len(pairs)} model pairs; choose others with options "
                     f"or 'repsweep query'")
        pairs = pairs.head(MAX_PANELS)
    rows = _pair_cka(res, pairs, values)
    if rows.empty:
        raise TableError("no CKA rows for these models yet; run 'repsweep compare SWEEP'")
    compared = pairs.merge(rows[["trial_a", "trial_b"]].drop_duplicates())  # in the caller's order
    if len(compared) < len(pairs):
        notes.append(f"{len(pairs) - len(compared)} of {len(pairs)} model pairs have no CKA rows yet "
                     f"(blank panels; 'repsweep compare SWEEP' fills them)")
    pairs = compared
    n = _layer_counts(res)
    cap = _bin_cap([(n[a], n[b]) for a, b in zip(pairs["trial_a"], pairs["trial_b"])])
    for side in ("a", "b"):
        size = rows[f"trial_{side}"].map(n)
        bins = size.clip(upper=cap)
        rows[f"bin_{side}"] = rows[f"layer_{side}"] * bins // size  # (rows,) bin of each layer
    keys = [*pairs.columns, "bin_a", "bin_b"]
    cells = rows.groupby(keys, as_index=False, sort=True).agg(
        cka=("cka", "mean"), lo_a=("layer_a", "min"), hi_a=("layer_a", "max"),
        lo_b=("layer_b", "min"), hi_b=("layer_b", "max"), layer_pairs=("cka", "size"))
    cells["layer_a"], cells["layer_a_end"] = cells["lo_a"], cells["hi_a"] + 1
    cells["layer_b"], cells["layer_b_end"] = cells["lo_b"], cells["hi_b"] + 1
    cells["layers_a"], cells["layers_b"] = _span(cells["lo_a"], cells["hi_a"]), _span(cells["lo_b"], cells["hi_b"])
    cells = cells.drop(columns=["bin_a", "bin_b", "lo_a", "hi_a", "lo_b", "hi_b"])
    deepest = int(max(n[pairs["trial_a"]].max(), n[pairs["trial_b"]].max()))
    if cap < deepest:
        notes.append(f"{len(rows):,} layer pairs shown as {len(cells):,} cells: CKA averaged over bins of "
                     f"up to {-(-deepest // cap)} consecutive layers ({cap} bins per axis at most; "
                     f"{MAX_ROWS:,} cells per chart)")
    undefined = int(cells["cka"].isna().sum())
    if undefined:
        notes.append(f"{undefined} blank cells: CKA undefined (a constant layer)")
    notes += excluded_note(done_trials(res), set(pairs["trial_a"]) | set(pairs["trial_b"]))
    return cells, notes


def _heatmap(cells: pd.DataFrame, *, row: alt.Row | None, column: alt.Column | None, title: str,
             notes: list[str], x_title: str = "layer", y_title: str = "layer") -> alt.FacetChart:
    import altair as alt

    # whole-pixel cell edges (round), so adjacent cells show no antialiasing seams
    axis = dict(scale=alt.Scale(zero=True, nice=False, round=True),
                axis=alt.Axis(tickMinStep=1, format="d", grid=False))
    base = alt.Chart(cells).mark_rect().encode(
        x=alt.X("layer_a:Q", title=x_title, **axis), x2="layer_a_end:Q",
        y=alt.Y("layer_b:Q", title=y_title, **axis), y2="layer_b_end:Q",
        color=alt.Color("cka:Q", title="CKA", scale=alt.Scale(**CKA_SCALE)),
        tooltip=[alt.Tooltip("trial_a:N"), alt.Tooltip("layers_a:N", title="layers (x)"),
                 alt.Tooltip("trial_b:N"), alt.Tooltip("layers_b:N", title="layers (y)"),
                 alt.Tooltip("cka:Q", format=".3f"), alt.Tooltip("layer_pairs:Q", title="layer pairs")],
    ).properties(width=PANEL_PX, height=PANEL_PX)
    facet = {k: v for k, v in (("row", row), ("column", column)) if v is not None}
    return (base.facet(**facet).resolve_scale(x="independent", y="independent")
            .properties(title=alt.TitleParams(title, subtitle=notes, anchor="start", offset=10)))


def _within_pairs(trials: pd.DataFrame, *facets: str) -> pd.DataFrame:
    """Each trial paired with itself: columns `facets`, trial_a, trial_b."""
    return trials.assign(trial_a=trials["trial_id"], trial_b=trials["trial_id"])[[*facets, "trial_a", "trial_b"]]


def figure1(res: Results, *, data_fraction: float | None = None, seed: int | None = None,
            values: str = "cka") -> alt.FacetChart:
    """Within-model CKA of every architecture, width across and depth down (paper's Figure 1)."""
    import altair as alt

    trials = done_trials(res)
    frac = choose(trials, "data_fraction", data_fraction, max)
    trials = trials[trials["data_fraction"] == frac]
    seed = choose(trials, "seed", seed, min)
    cells, notes = _heatmap_data(res, _within_pairs(trials[trials["seed"] == seed], "depth", "width"), values)
    what = ", each layer's first principal component removed" if values == "without_pc1" else ""
    notes.insert(0, f"linear CKA between every two layers of each model{what}; layer 0 is the stem, the last the logits")
    title = "Within-model CKA without the first PC" if values == "without_pc1" else "Within-model CKA"
    return _heatmap(cells, row=alt.Row(**facet_header("depth", "depth")),
                    column=alt.Column(**facet_header("width", "width")), notes=notes,
                    title=f"{title}: width across, depth down (data fraction {frac:g}, seed {seed})")


def without_pc1(res: Results, *, data_fraction: float | None = None, seed: int | None = None) -> alt.FacetChart:
    """Within-model CKA with each layer's first principal component removed (the block fades)."""
    return figure1(res, data_fraction=data_fraction, seed=seed, values="without_pc1")


def fractions(res: Results, *, depth: int | None = None, width: int | None = None,
              seed: int | None = None) -> alt.FacetChart:
    """Within-model CKA of one architecture across data fractions (default: the largest model)."""
    import altair as alt

    trials = done_trials(res)
    depth = choose(trials, "depth", depth, max)
    trials = trials[trials["depth"] == depth]
    width = choose(trials, "width", width, max)
    trials = trials[trials["width"] == width]
    seed = choose(trials, "seed", seed, min)
    cells, notes = _heatmap_data(res, _within_pairs(trials[trials["seed"] == seed], "data_fraction"))
    notes.insert(0, "linear CKA between every two layers; layer 0 is the stem, the last the logits")
    return _heatmap(cells, row=None, notes=notes,
                    column=alt.Column(**facet_header("data_fraction", "data fraction", fmt="~g", sort="descending")),
                    title=f"Within-model CKA across data fractions: {trials['arch'].iloc[0]} (seed {seed})")


def _cross_pairs(res: Results, trials: pd.DataFrame) -> pd.DataFrame:
    """Compared pairs of two finished trials, A before B by (depth, width, seed, data fraction).

    So a cross-seed pair puts the lower seed first, a cross-architecture pair the smaller
    architecture; columns trial_a, trial_b and each trial's configuration suffixed _a, _b.
    """
    pairs = res.sql("SELECT DISTINCT trial_a, trial_b FROM cka WHERE trial_a <> trial_b")
    key = {t: k for t, *k in zip(trials["trial_id"], trials["depth"], trials["width"], trials["seed"],
                                 trials["data_fraction"])}
    pairs = pairs[pairs["trial_a"].isin(key) & pairs["trial_b"].isin(key)]
    swap = np.array([key[a] > key[b] for a, b in zip(pairs["trial_a"], pairs["trial_b"])], dtype=bool)
    oriented = pd.DataFrame({"trial_a": np.where(swap, pairs["trial_b"], pairs["trial_a"]),
                             "trial_b": np.where(swap, pairs["trial_a"], pairs["trial_b"])}).drop_duplicates()
    return (oriented.merge(trials.add_suffix("_a"), left_on="trial_a", right_on="trial_id_a")
            .merge(trials.add_suffix("_b"), left_on="trial_b", right_on="trial_id_b"))


def cross_seed(res: Results, *, data_fraction: float | None = None) -> alt.FacetChart:
    """CKA between the two lowest seeds of each architecture, width across and depth down."""
    import altair as alt

    trials = done_trials(res)
    frac = choose(trials, "data_fraction", data_fraction, max)
    pairs = _cross_pairs(res, trials)
    pairs = pairs[(pairs["depth_a"] == pairs["depth_b"]) & (pairs["width_a"] == pairs["width_b"])
                  & (pairs["data_fraction_a"] == frac) & (pairs["data_fraction_b"] == frac)]
    if pairs.empty:
        raise TableError(f"no cross-seed CKA at data fraction {frac:g}: it needs two seeds per configuration "
                         f"and cross_seed in compare.pairs; then run 'repsweep compare SWEEP'")
    pairs = pairs.sort_values(["seed_a", "seed_b"]).groupby(["depth_a", "width_a"]).head(1)
    chosen = pairs.rename(columns={"depth_a": "depth", "width_a": "width"})[
        ["depth", "width", "trial_a", "trial_b"]]
    seeds = sorted({f"{a} vs {b}" for a, b in zip(pairs["seed_a"], pairs["seed_b"])})
    cells, notes = _heatmap_data(res, chosen)
    notes.insert(0, "linear CKA between every layer of one seed's model and every layer of the other's")
    return _heatmap(cells, row=alt.Row(**facet_header("depth", "depth")), notes=notes,
                    column=alt.Column(**facet_header("width", "width")),
                    x_title="layer (lower seed)", y_title="layer (higher seed)",
                    title=f"Cross-seed CKA: seed {', '.join(seeds)} (data fraction {frac:g})")


def cross_arch(res: Results, *, data_fraction: float | None = None, seed: int | None = None) -> alt.FacetChart:
    """CKA between every two architectures trained on the same data fraction with the same seed."""
    import altair as alt

    trials = done_trials(res)
    frac = choose(trials, "data_fraction", data_fraction, max)
    seed = choose(trials[trials["data_fraction"] == frac], "seed", seed, min)
    pairs = _cross_pairs(res, trials)
    pairs = pairs[(pairs["data_fraction_a"] == frac) & (pairs["data_fraction_b"] == frac)
                  & (pairs["seed_a"] == seed) & (pairs["seed_b"] == seed)]
    if pairs.empty:
        raise TableError(f"no cross-architecture CKA at data fraction {frac:g}, seed {seed}: it needs "
                         f"cross_arch in compare.pairs; then run 'repsweep compare SWEEP'")
    # A (x, columns) is the smaller architecture, B (y, rows) the larger: one triangle of panels
    arch_a, arch_b = list(zip(pairs["depth_a"], pairs["width_a"])), list(zip(pairs["depth_b"], pairs["width_b"]))
    rank = {k: i for i, k in enumerate(sorted({*arch_a, *arch_b}))}
    chosen = pd.DataFrame({"trial_a": pairs["trial_a"], "trial_b": pairs["trial_b"],
                           "rank_a": [rank[k] for k in arch_a], "rank_b": [rank[k] for k in arch_b]})
    by_trial = dict(zip(chosen["trial_a"], chosen["rank_a"])) | dict(zip(chosen["trial_b"], chosen["rank_b"]))
    selves = set(res.sql("SELECT DISTINCT trial_a FROM cka WHERE trial_a = trial_b")["trial_a"]) & set(by_trial)
    diagonal = pd.DataFrame({"trial_a": sorted(selves), "trial_b": sorted(selves),
                             "rank_a": [by_trial[t] for t in sorted(selves)], "rank_b": [by_trial[t] for t in sorted(selves)]})
    cells, notes = _heatmap_data(res, pd.concat([chosen, diagonal]).sort_values(["rank_a", "rank_b"]))
    # every panel drawn, none empty: the lower triangle mirrored (its heatmaps transposed) above it
    swapped = {f"{c}_a": f"{c}_b" for c in ("trial", "rank", "layer", "layer")} | {"layer_a_end": "layer_b_end",
                                                                                     "layers_a": "layers_b"}
    swapped |= {b: a for a, b in swapped.items()}
    mirror = cells[cells["rank_a"] != cells["rank_b"]].rename(columns=swapped)
    cells = pd.concat([cells, mirror], ignore_index=True)
    notes.insert(0, "linear CKA between every layer of the column's model and every layer of the row's "
                    "(the panels above the diagonal mirror those below; the diagonal: each model with itself)")
    # facet on the ranks, labelled by name: a sort by another field would misplace empty cells
    label = dict(zip(zip(trials["depth"], trials["width"]), trials["arch"]))
    names = json.dumps([label[k] for k in sorted(rank)])
    header = alt.Header(title=None, labelFontSize=12, labelExpr=f"{names}[datum.value]")
    return _heatmap(cells, row=alt.Row("rank_b:O", header=header), column=alt.Column("rank_a:O", header=header),
                    x_title="layer (column model)", y_title="layer (row model)", notes=notes,
                    title=f"Cross-architecture CKA (data fraction {frac:g}, seed {seed})")
