"""Charts of the study's analyses: blocks, dominant datapoints, probes, deletion, error patterns.

    blocks          where each model's block lies, at each CKA threshold (analysis/study/blocks.py)
    dominant        how much of each layer's first PC its dominant datapoints carry
    dominant-removal  the block's CKA without its dominant datapoints, and without random ones
    probes          linear-probe test accuracy of every layer (analysis/study/probes.py)
    deletion        test accuracy lost when each residual block is removed (analysis/study/deletion.py)
    example-errors  per-example disagreement of two configurations against their seed baseline

Each draws a table the comparison stage wrote; none computes statistics of its own.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pandas as pd

from repsweep.analysis.present.chartkit import MAX_ROWS, facet_header
from repsweep.analysis.tables.query import Results
from repsweep.analysis.tables.schemas import TableError

if TYPE_CHECKING:
    import altair as alt

_FILL = "'repsweep compare SWEEP' fills it"


def _model_label(frame: pd.DataFrame) -> pd.Series:
    return frame["arch"] + " f" + frame["data_fraction"].map("{:g}".format) + " s" + frame["seed"].astype(str)


def blocks(res: Results) -> alt.Chart:
    """Where each model's block lies (layers start to end), at each CKA threshold; grey: the whole model."""
    import altair as alt

    rows = res.sql("""
        SELECT t.arch, t.depth, t.width, t.data_fraction, t.seed, b.*, n.layers
        FROM blocks b JOIN trials t USING (trial_id)
        JOIN (SELECT trial_id, count(*) AS layers FROM layers GROUP BY trial_id) n USING (trial_id)
        ORDER BY t.data_fraction DESC, t.depth, t.width, t.seed, b.threshold""")
    if rows.empty:
        raise TableError(f"no blocks table yet; {_FILL}")
    rows["model"] = _model_label(rows)
    rows["end_x"] = rows["end"] + 1
    order = list(dict.fromkeys(rows["model"]))
    y = alt.Y("model:N", sort=order, title=None)
    whole = alt.Chart().mark_bar(color="#eee").encode(y=y, x=alt.X("max(layers):Q", title="layer"), x2=alt.value(0))
    found = alt.Chart().transform_filter("datum.found").mark_bar(opacity=0.75, height=8).encode(
        y=y, yOffset=alt.YOffset("threshold:O"), x="start:Q", x2="end_x:Q",
        color=alt.Color("threshold:O", title="CKA threshold", scale=alt.Scale(scheme="viridis")),
        tooltip=["model:N", "threshold:Q", "start:Q", "end:Q", alt.Tooltip("inside:Q", format=".2f"),
                 alt.Tooltip("before:Q", format=".2f"), alt.Tooltip("pc1_inside:Q", format=".2f"),
                 alt.Tooltip("pc1_outside:Q", format=".2f")])
    n_found = rows[rows["found"]]["model"].nunique()
    layers = [whole, found] if rows["found"].any() else [whole]  # no bars of no blocks (empty extents)
    return alt.layer(*layers, data=rows).properties(width=420, height=24 * len(order), title=alt.TitleParams(
        "Block structure of each model", anchor="start", subtitle=[
            f"{n_found} of {len(order)} models have a block at some threshold; bars: its layers; grey: all layers",
            "a block: contiguous layers alike to each other (CKA above the threshold) and unlike those before"]))


def dominant(res: Results) -> alt.FacetChart:
    """How much of each layer's first PC its dominant datapoints (the top compare.dominant examples) carry."""
    return _by_layer(res, "pca", "dominant_share", "First-PC share carried by each layer's dominant datapoints",
                     "share of PC1 on the dominant examples", ".0%")


def dominant_removal(res: Results) -> alt.Chart:
    """The block's mean CKA on the whole probe set, without its dominant datapoints, and without random ones."""
    import altair as alt

    rows = res.sql("""SELECT t.arch, t.data_fraction, t.seed, d.* FROM dominant_removal d JOIN trials t USING (trial_id)
                      ORDER BY t.data_fraction DESC, t.depth, t.width, t.seed""")
    if rows.empty:
        raise TableError(f"no dominant_removal table yet (it needs a model with a block); {_FILL}")
    rows["model"] = _model_label(rows)
    n = int(rows["n_removed"].max())
    long = rows.melt(id_vars=["model"], value_vars=["inside", "inside_without_random", "inside_without_dominant"],
                     var_name="probe set", value_name="cka")
    long["probe set"] = long["probe set"].map({"inside": "all examples", "inside_without_random": f"without {n} random",
                                               "inside_without_dominant": f"without the {n} dominant"})
    order = ["all examples", f"without {n} random", f"without the {n} dominant"]
    return alt.Chart(long).mark_bar().encode(
        y=alt.Y("model:N", sort=list(dict.fromkeys(rows["model"])), title=None),
        yOffset=alt.YOffset("probe set:N", sort=order), x=alt.X("cka:Q", title="mean CKA inside the block",
                                                                scale=alt.Scale(domain=[0, 1])),
        color=alt.Color("probe set:N", sort=order, scale=alt.Scale(range=["#4c78a8", "#9ecae9", "#e45756"])),
        tooltip=["model:N", "probe set:N", alt.Tooltip("cka:Q", format=".3f")],
    ).properties(width=360, height=36 * rows["model"].nunique(), title=alt.TitleParams(
        "Does the block rest on its dominant datapoints?", anchor="start",
        subtitle=["the block's CKA recomputed with its dominant examples (largest first-PC share) left out of the "
                  "probe set, and with as many random examples left out"]))


def _by_layer(res: Results, table: str, value: str, title: str, axis: str, fmt: str) -> alt.FacetChart:
    import altair as alt

    rows = res.sql(f"""
        SELECT t.depth, t.width, t.data_fraction, x.layer, avg(x.{value}) AS {value}, count(*) AS seeds
        FROM {table} x JOIN trials t USING (trial_id) WHERE t.status = 'done' GROUP BY ALL ORDER BY ALL""")
    if rows.empty:
        raise TableError(f"no {table} table yet; {_FILL}")
    if len(rows) > MAX_ROWS:
        raise TableError(f"{len(rows):,} points (> {MAX_ROWS:,}); query the {table} table with 'repsweep query'")
    return alt.Chart(rows).mark_line(point=True).encode(
        x=alt.X("layer:Q", title="layer", axis=alt.Axis(tickMinStep=1)),
        y=alt.Y(f"{value}:Q", title=axis, axis=alt.Axis(format=fmt)), color=alt.Color("width:O", title="width"),
        tooltip=["depth:O", "width:O", "data_fraction:Q", "layer:Q", alt.Tooltip(f"{value}:Q", format=".3f"), "seeds:Q"],
    ).properties(width=220, height=160).facet(
        row=alt.Row(**facet_header("data_fraction", "data fraction", fmt="~g", sort="descending")),
        column=alt.Column(**facet_header("depth", "depth")),
    ).resolve_scale(x="independent").properties(title=alt.TitleParams(
        title, anchor="start", subtitle=[f"mean over {rows['seeds'].min()}-{rows['seeds'].max()} seeds"]))


def probes(res: Results) -> alt.FacetChart:
    """Linear-probe test accuracy of every layer (a ridge classifier on the layer's features)."""
    return _by_layer(res, "probes", "accuracy", "Linear-probe accuracy by layer", "probe test accuracy", ".0%")


def deletion(res: Results) -> alt.FacetChart:
    """Test accuracy lost when each residual block is removed (no retraining), by the block's layer."""
    return _by_layer(res, "deletion", "drop", "Accuracy lost by removing one block", "accuracy drop", "+.0%")


def example_errors(res: Results) -> alt.Chart:
    """Per-example disagreement between two configurations (dots) against seeds of each one (bars)."""
    import altair as alt

    rows = res.sql("SELECT * FROM example_disagreement WHERE testable ORDER BY data_fraction DESC, excess DESC")
    if rows.empty:
        why = res.sql("SELECT reason FROM example_disagreement WHERE NOT testable LIMIT 1")
        raise TableError(f"no testable configuration pair: {why['reason'].iloc[0]}" if len(why) else
                         f"no example_disagreement table yet; {_FILL}")
    measure = rows["measure"].fillna("correct").map({"correct": "", "p_true": " (true-class prob.)"})  # NULL: older
    rows["pair"] = (rows["arch_a"] + " vs " + rows["arch_b"] + " f" + rows["data_fraction"].map("{:g}".format)
                    + measure)
    rows["significant"] = (rows["p"] < 0.05) & (rows["ci_low"] > 0)  # the findings' rule for claim 5
    order = list(rows["pair"])
    base = alt.Chart().encode(y=alt.Y("pair:N", sort=order, title=None))
    bars = base.mark_bar(color="#ddd").encode(x=alt.X("baseline:Q", title="mean |per-example difference| "
                                                                        "(accuracy, or true-class probability)"))
    dots = base.mark_point(filled=True, size=60).encode(
        x="between:Q", color=alt.Color("significant:N", title="above baseline (p < 0.05 over seeds)",
                                       scale=alt.Scale(domain=[True, False], range=["#e45756", "#888"])),
        tooltip=["pair:N", alt.Tooltip("between:Q", format=".4f"), alt.Tooltip("baseline:Q", format=".4f"),
                 alt.Tooltip("excess:Q", format="+.4f"), alt.Tooltip("ci_low:Q", format="+.4f"), alt.Tooltip("ci_high:Q", format="+.4f"),
                 alt.Tooltip("p:Q", format=".2g"), alt.Tooltip("min_p:Q", format=".2g", title="smallest possible p"),
                 "n_seeds_a:Q", "n_seeds_b:Q"])
    return alt.layer(bars, dots, data=rows).properties(width=360, height=alt.Step(14), title=alt.TitleParams(
        "Do two configurations make different errors?", anchor="start",
        subtitle=["dot: per-example accuracy difference between the two (disjoint seed groups); bar: between two "
                  "seed groups of one configuration (the baseline, the paper's protocol)"]))
