"""Altair charts of a sweep: one function per kind, from the tables (a `Results`) to a chart.

    figure1         within-model CKA heatmaps, width across and depth down, one data fraction
                    (Nguyen et al. 2021, Figure 1)
    fractions       within-model CKA of one architecture across data fractions
    cross-seed      CKA between two seeds of each architecture
    cross-arch      CKA between architectures (same data fraction and seed)
    pc1             first principal component's share of variance, by layer
    accuracy        test accuracy against width and depth
    disagreement    prediction disagreement between configurations against their seed baseline
    class-accuracy  per-class accuracy differences between two configurations

Charts stay small by design: a chart's inline data never exceeds MAX_ROWS rows. Heatmaps
whose layer pairs would exceed it average CKA over bins of consecutive layers, and charts
that cap panels or average over seeds say so in their subtitle; nothing is dropped silently
and Altair's row limit is never lifted. A chart whose tables hold no data raises TableError
naming the command that fills them.
"""

from __future__ import annotations

import inspect
import json
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from analysis.query import Results
from analysis.tables import TableError

if TYPE_CHECKING:
    import altair as alt

MAX_ROWS = 5000  # rows of inline data per chart: Altair's default max_rows, kept by design
MAX_PANELS = 36  # heatmap panels per chart; more pairs are capped, and the subtitle says so
PANEL_PX = 150  # side of one heatmap panel, pixels
CKA_SCALE = dict(domain=[0, 1], clamp=True, scheme="magma")  # unbiased CKA can dip below 0


# ----------------------------------------------------------------------------- trials

def _done_trials(res: Results) -> pd.DataFrame:
    trials = res.sql("SELECT trial_id, depth, width, data_fraction, seed, test_acc FROM trials "
                     "WHERE status = 'done' ORDER BY data_fraction DESC, depth, width, seed")
    if trials.empty:
        raise TableError("no finished trials in this sweep yet; see 'repsweep status SWEEP'")
    return trials


def _choose(trials: pd.DataFrame, column: str, value: Any, default: Callable) -> Any:
    """`value` if some finished trial has it, else the default of the available values."""
    available = sorted(trials[column].unique())
    if value is None:
        return default(available)
    if value not in available:
        raise TableError(f"no finished trial has {column} {value}; finished trials have "
                         f"{column} {', '.join(f'{v:g}' for v in available)}")
    return value


def _arch_label(depth: int, width: int) -> str:
    return f"depth {depth}, width {width}"


def _parse_config(text: str) -> dict[str, Any]:
    """'d56-w1' or 'd56-w1-f0.5' (or a trial id) -> {'depth': 56, 'width': 1, ...}."""
    keys = {"d": ("depth", int), "w": ("width", int), "f": ("data_fraction", float), "s": ("seed", int)}
    out = {}
    for token in text.split("-"):
        m = re.fullmatch(r"([dwfs])(\d+(?:\.\d+)?)", token)
        if m and keys[m.group(1)][0] not in out:
            name, cast = keys[m.group(1)]
            out[name] = cast(m.group(2))
        elif not re.fullmatch(r"[0-9a-f]{8}", token):  # a trial id's hash is ignored
            raise TableError(f"configuration '{text}': expected d<depth>-w<width>[-f<fraction>][-s<seed>], "
                             f"e.g. d56-w1 or d8-w2-f0.5")
    return out


# -------------------------------------------------------------------------- heatmaps

def _layer_counts(res: Results) -> pd.Series:
    return res.sql("SELECT trial_id, count(*) AS n FROM layers GROUP BY trial_id").set_index("trial_id")["n"]


def _pair_cka(res: Results, pairs: pd.DataFrame) -> pd.DataFrame:
    """CKA rows of each pair (trial_a, trial_b), oriented so trial_a's layers are layer_a."""
    wanted = [f"{a}|{b}" for a, b in zip(pairs["trial_a"], pairs["trial_b"])]
    cka = res.sql("SELECT trial_a, layer_a, trial_b, layer_b, cka FROM cka "
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


def _heatmap_data(res: Results, pairs: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One row per cell of each pair's CKA heatmap, layers binned to fit MAX_ROWS; notes."""
    notes = []
    if len(pairs) > MAX_PANELS:
        notes.append(f"the first {MAX_PANELS} of {len(pairs)} model pairs; choose others with options "
                     f"or 'repsweep query'")
        pairs = pairs.head(MAX_PANELS)
    rows = _pair_cka(res, pairs)
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


def _header(field: str, prefix: str, *, fmt: str = "", sort: str = "ascending") -> dict:
    import altair as alt

    label = f"'{prefix} ' + format(datum.value, '{fmt}')" if fmt else f"'{prefix} ' + datum.value"
    return dict(shorthand=f"{field}:O", sort=sort, header=alt.Header(labelExpr=label, title=None,
                                                                    labelFontSize=12))


def _within_pairs(trials: pd.DataFrame, *facets: str) -> pd.DataFrame:
    """Each trial paired with itself: columns `facets`, trial_a, trial_b."""
    return trials.assign(trial_a=trials["trial_id"], trial_b=trials["trial_id"])[[*facets, "trial_a", "trial_b"]]


def figure1(res: Results, *, data_fraction: float | None = None, seed: int | None = None) -> alt.FacetChart:
    """Within-model CKA of every architecture, width across and depth down (paper's Figure 1)."""
    import altair as alt

    trials = _done_trials(res)
    frac = _choose(trials, "data_fraction", data_fraction, max)
    trials = trials[trials["data_fraction"] == frac]
    seed = _choose(trials, "seed", seed, min)
    cells, notes = _heatmap_data(res, _within_pairs(trials[trials["seed"] == seed], "depth", "width"))
    notes.insert(0, "linear CKA between every two layers of each model; layer 0 is the stem, the last the logits")
    return _heatmap(cells, row=alt.Row(**_header("depth", "depth")),
                    column=alt.Column(**_header("width", "width")), notes=notes,
                    title=f"Within-model CKA: width across, depth down (data fraction {frac:g}, seed {seed})")


def fractions(res: Results, *, depth: int | None = None, width: int | None = None,
              seed: int | None = None) -> alt.FacetChart:
    """Within-model CKA of one architecture across data fractions (default: the largest model)."""
    import altair as alt

    trials = _done_trials(res)
    depth = _choose(trials, "depth", depth, max)
    trials = trials[trials["depth"] == depth]
    width = _choose(trials, "width", width, max)
    trials = trials[trials["width"] == width]
    seed = _choose(trials, "seed", seed, min)
    cells, notes = _heatmap_data(res, _within_pairs(trials[trials["seed"] == seed], "data_fraction"))
    notes.insert(0, "linear CKA between every two layers; layer 0 is the stem, the last the logits")
    return _heatmap(cells, row=None, notes=notes,
                    column=alt.Column(**_header("data_fraction", "data fraction", fmt="~g", sort="descending")),
                    title=f"Within-model CKA across data fractions: {_arch_label(depth, width)} (seed {seed})")


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

    trials = _done_trials(res)
    frac = _choose(trials, "data_fraction", data_fraction, max)
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
    return _heatmap(cells, row=alt.Row(**_header("depth", "depth")), notes=notes,
                    column=alt.Column(**_header("width", "width")),
                    x_title="layer (lower seed)", y_title="layer (higher seed)",
                    title=f"Cross-seed CKA: seed {', '.join(seeds)} (data fraction {frac:g})")


def cross_arch(res: Results, *, data_fraction: float | None = None, seed: int | None = None) -> alt.FacetChart:
    """CKA between every two architectures trained on the same data fraction with the same seed."""
    import altair as alt

    trials = _done_trials(res)
    frac = _choose(trials, "data_fraction", data_fraction, max)
    seed = _choose(trials[trials["data_fraction"] == frac], "seed", seed, min)
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
    cells, notes = _heatmap_data(res, chosen.sort_values(["rank_a", "rank_b"]))
    notes.insert(0, "linear CKA between every layer of the column's model and every layer of the row's")
    # facet on the ranks, labelled by name: a sort by another field would misplace empty cells
    names = json.dumps([_arch_label(*k) for k in sorted(rank)])
    header = alt.Header(title=None, labelFontSize=12, labelExpr=f"{names}[datum.value]")
    return _heatmap(cells, row=alt.Row("rank_b:O", header=header), column=alt.Column("rank_a:O", header=header),
                    x_title="layer (column model)", y_title="layer (row model)", notes=notes,
                    title=f"Cross-architecture CKA (data fraction {frac:g}, seed {seed})")


# ------------------------------------------------------------------- line and bar charts

def pc1(res: Results) -> alt.FacetChart:
    """First principal component's share of each layer's variance, depth across, fraction down."""
    import altair as alt

    rows = res.sql("""
        SELECT t.depth, t.width, t.data_fraction, p.layer, avg(p.pc1_fraction) AS pc1_fraction,
               count(*) AS seeds
        FROM pca p JOIN trials t ON p.trial_id = t.trial_id WHERE t.status = 'done'
        GROUP BY ALL ORDER BY ALL""")
    if rows.empty:
        raise TableError("no first-PC shares (pca table) yet; run 'repsweep compare SWEEP'")
    notes = [f"mean over {rows['seeds'].min()}-{rows['seeds'].max()} seeds" if rows["seeds"].max() > 1
             else "one seed per configuration"]
    configs = ["depth", "width", "data_fraction"]
    if len(rows) > MAX_ROWS:
        size = rows.groupby(configs)["layer"].transform("size")
        cap = max(1, MAX_ROWS // rows.groupby(configs).ngroups)
        rows["bin"] = rows["layer"] * size.clip(upper=cap) // size
        rows = rows.groupby([*configs, "bin"], as_index=False).agg(
            layer=("layer", "mean"), pc1_fraction=("pc1_fraction", "mean"), seeds=("seeds", "max"))
        notes.append(f"averaged over bins of consecutive layers ({cap} per model; {MAX_ROWS:,} points per chart)")
    return alt.Chart(rows).mark_line(point=True).encode(
        x=alt.X("layer:Q", title="layer", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("pc1_fraction:Q", title="variance share of PC 1", scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("width:O", title="width"),
        tooltip=["depth:O", "width:O", "data_fraction:Q", "layer:Q",
                 alt.Tooltip("pc1_fraction:Q", format=".3f"), "seeds:Q"],
    ).properties(width=220, height=160).facet(
        row=alt.Row(**_header("data_fraction", "data fraction", fmt="~g", sort="descending")),
        column=alt.Column(**_header("depth", "depth")),
    ).resolve_scale(x="independent").properties(
        title=alt.TitleParams("First principal component's share of variance, by layer", subtitle=notes,
                              anchor="start"))


def accuracy(res: Results) -> alt.FacetChart:
    """Test accuracy of every finished trial against width (x) and depth (colour), per data fraction."""
    import altair as alt

    trials = _done_trials(res)
    failed = int(res.sql("SELECT count(*) AS n FROM trials WHERE status = 'failed'")["n"].iloc[0])
    notes = [f"one point per trial ({len(trials)} finished); lines: mean over seeds"]
    if failed:
        notes.append(f"{failed} failed trials not shown (see 'repsweep status SWEEP')")
    base = alt.Chart(trials).encode(
        x=alt.X("width:O", title="width multiplier", axis=alt.Axis(labelAngle=0)),
        color=alt.Color("depth:O", title="depth", scale=alt.Scale(scheme="viridis")))
    line = base.mark_line().encode(y=alt.Y("mean(test_acc):Q", title="test accuracy",
                                           scale=alt.Scale(zero=False)))
    points = base.mark_point(filled=True, opacity=0.7).encode(
        y=alt.Y("test_acc:Q"), tooltip=["trial_id:N", alt.Tooltip("test_acc:Q", format=".4f")])
    return alt.layer(line, points).properties(width=220, height=220).facet(
        column=alt.Column(**_header("data_fraction", "data fraction", fmt="~g", sort="descending")),
    ).properties(title=alt.TitleParams("Test accuracy against width and depth", subtitle=notes,
                                       anchor="start"))


def disagreement(res: Results) -> alt.FacetChart:
    """Disagreement between architectures (off-diagonal) against between seeds (diagonal), per fraction."""
    import altair as alt

    pairs = res.sql("SELECT trial_a, trial_b, 1 - agreement AS disagreement FROM disagreement "
                    "WHERE trial_a <> trial_b")
    if pairs.empty:
        raise TableError("no disagreement rows yet; run 'repsweep compare SWEEP'")
    trials = _done_trials(res).set_index("trial_id")
    pairs = pairs[pairs["trial_a"].isin(trials.index) & pairs["trial_b"].isin(trials.index)]
    same = (trials.loc[pairs["trial_a"], "data_fraction"].to_numpy()
            == trials.loc[pairs["trial_b"], "data_fraction"].to_numpy())
    across = int((~same).sum())
    pairs = pairs[same]
    arch = pd.Series([f"d{d} w{w}" for d, w in zip(trials["depth"], trials["width"])], index=trials.index)
    both = pd.concat([pairs.assign(arch_a=pairs["trial_a"].map(arch), arch_b=pairs["trial_b"].map(arch)),
                      pairs.assign(arch_a=pairs["trial_b"].map(arch), arch_b=pairs["trial_a"].map(arch))])
    both["data_fraction"] = both["trial_a"].map(trials["data_fraction"])
    keys = ["data_fraction", "arch_a", "arch_b"]
    cells = both.groupby(keys, as_index=False).agg(disagreement=("disagreement", "mean"),
                                                   seed_pairs=("disagreement", "size"))
    diagonal = cells["arch_a"] == cells["arch_b"]
    cells.loc[diagonal, "seed_pairs"] //= 2  # a same-architecture pair went in both ways round
    baseline = cells[diagonal].set_index(["data_fraction", "arch_a"])["disagreement"]
    base_a = baseline.reindex(list(zip(cells["data_fraction"], cells["arch_a"]))).to_numpy()
    base_b = baseline.reindex(list(zip(cells["data_fraction"], cells["arch_b"]))).to_numpy()
    cells["baseline"] = (base_a + base_b) / 2
    cells["excess"] = cells["disagreement"] - cells["baseline"]
    order = list(dict.fromkeys(arch))  # by depth, then width
    if len(cells) > MAX_ROWS:
        raise TableError(f"{len(order)} architectures give {len(cells):,} cells (> {MAX_ROWS:,}); "
                         f"query the disagreement table with 'repsweep query' instead")
    notes = ["share of test examples on which two models' predictions differ, mean over seed pairs",
             "diagonal: between seeds of one architecture, the baseline" if diagonal.any()
             else "no seed baseline: the sweep has one seed per configuration"]
    if across:
        notes.append(f"{across} pairs across data fractions not shown")
    base = alt.Chart().encode(x=alt.X("arch_b:N", sort=order, title=None),
                              y=alt.Y("arch_a:N", sort=order, title=None))
    rect = base.mark_rect().encode(
        color=alt.Color("disagreement:Q", title="disagreement", scale=alt.Scale(scheme="oranges", zero=True)),
        tooltip=["arch_a:N", "arch_b:N", "data_fraction:Q", alt.Tooltip("disagreement:Q", format=".2%"),
                 alt.Tooltip("baseline:Q", format=".2%"), alt.Tooltip("excess:Q", format="+.2%"),
                 "seed_pairs:Q"])
    labelled = len(order) <= 12  # room for a label in each cell
    layers = [rect]
    if labelled:
        dark = alt.datum.disagreement > 0.6 * cells["disagreement"].max()
        layers.append(base.mark_text(fontSize=10).encode(
            text=alt.Text("disagreement:Q", format=".1%"),
            color=alt.condition(dark, alt.value("white"), alt.value("black"))))
    side = (40 if labelled else 12) * len(order)
    return alt.layer(*layers, data=cells).properties(width=side, height=side).facet(
        column=alt.Column(**_header("data_fraction", "data fraction", fmt="~g", sort="descending")),
    ).properties(title=alt.TitleParams("Prediction disagreement between architectures", subtitle=notes,
                                       anchor="start"))


def class_accuracy(res: Results, *, a: str | None = None, b: str | None = None) -> alt.Chart:
    """Per-class accuracy of configuration a minus b (default: the deepest-narrowest and widest-shallowest)."""
    import altair as alt

    trials = _done_trials(res)
    frac = trials["data_fraction"].max()
    default_a = {"depth": trials["depth"].max(), "width": trials["width"].min(), "data_fraction": frac}
    default_b = {"depth": trials["depth"].min(), "width": trials["width"].max(), "data_fraction": frac}
    sides = []
    for text, default in ((a, default_a), (b, default_b)):
        want = _parse_config(text) if text else default
        want.setdefault("data_fraction", frac)
        mask = pd.Series(True, index=trials.index)
        for k, v in want.items():
            mask &= trials[k] == v
        if not mask.any():
            have = sorted({f"d{d}-w{w}-f{f:g}" for d, w, f in
                           zip(trials["depth"], trials["width"], trials["data_fraction"])})
            raise TableError(f"no finished trial matches '{text or want}'; configurations: {', '.join(have)}")
        sides.append(trials[mask])
    if set(sides[0]["trial_id"]) == set(sides[1]["trial_id"]):
        raise TableError("a and b are the same trials; pass two configurations, e.g. a='d56-w1' b='d8-w2'")
    acc = res.sql("SELECT trial_id, label, n_examples, accuracy FROM class_accuracy")
    means, names = [], []
    for side in sides:
        part = acc[acc["trial_id"].isin(side["trial_id"])]
        if part.empty:
            raise TableError("no class_accuracy rows for these trials yet; run 'repsweep compare SWEEP'")
        means.append(part.groupby("label").agg(accuracy=("accuracy", "mean"), n_examples=("n_examples", "first")))
        r = side.iloc[0]
        names.append(f"{_arch_label(r['depth'], r['width'])}, fraction {r['data_fraction']:g} ({len(side)} "
                     f"seed{'s' if len(side) > 1 else ''}, test accuracy {side['test_acc'].mean():.3f})")
    rows = means[0].join(means[1]["accuracy"].rename("accuracy_b"), how="inner").rename(
        columns={"accuracy": "accuracy_a"}).reset_index()
    rows["difference"] = rows["accuracy_a"] - rows["accuracy_b"]
    rows["better"] = rows["difference"].map(lambda d: "a" if d > 0 else "b" if d < 0 else "tie")
    return alt.Chart(rows).mark_bar().encode(
        x=alt.X("label:O", title="class", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("difference:Q", title="accuracy of a minus b", axis=alt.Axis(format="+.0%")),
        color=alt.Color("better:N", title="better", scale=alt.Scale(domain=["a", "b", "tie"],
                                                                    range=["#4c78a8", "#e45756", "#999999"])),
        tooltip=["label:O", alt.Tooltip("accuracy_a:Q", format=".3f"), alt.Tooltip("accuracy_b:Q", format=".3f"),
                 alt.Tooltip("difference:Q", format="+.3f"), "n_examples:Q"],
    ).properties(width=max(240, 24 * len(rows)), height=200, title=alt.TitleParams(
        "Per-class accuracy differences", subtitle=[f"a: {names[0]}", f"b: {names[1]}",
                                                    "mean over seeds of each configuration"], anchor="start"))


# ------------------------------------------------------------------------------- registry

CHARTS: dict[str, Callable[..., Any]] = {
    "figure1": figure1, "fractions": fractions, "cross-seed": cross_seed, "cross-arch": cross_arch,
    "pc1": pc1, "accuracy": accuracy, "disagreement": disagreement, "class-accuracy": class_accuracy,
}


def make_chart(kind: str, res: Results, **options: Any) -> alt.TopLevelMixin:
    """The chart `kind` of CHARTS; options (None ones ignored) must be among its parameters."""
    if kind not in CHARTS:
        raise TableError(f"unknown chart '{kind}'; charts are {', '.join(CHARTS)}")
    fn = CHARTS[kind]
    accepted = [p for p in inspect.signature(fn).parameters if p != "res"]
    given = {k: v for k, v in options.items() if v is not None}
    unknown = [k for k in given if k not in accepted]
    if unknown:
        takes = f"takes {', '.join(accepted)}" if accepted else "takes no options"
        raise TableError(f"chart '{kind}' {takes}; got {', '.join(unknown)}")
    return fn(res, **given)
