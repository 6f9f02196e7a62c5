"""Altair charts of a sweep: one function per kind, from the tables (a `Results`) to a chart.

    figure1         within-model CKA heatmaps, width across and depth down, one data fraction
                    (Nguyen et al. 2021, Figure 1)
    fractions       within-model CKA of one architecture across data fractions
    cross-seed      CKA between two seeds of each architecture
    cross-arch      CKA between architectures (same data fraction and seed)
    pc1             first principal component's share of variance, by layer
    accuracy        test accuracy against width and depth
    disagreement    prediction disagreement between configurations against their seed baseline
    class-accuracy  per-class accuracy differences between two configurations, with their significance
    blocks, without-pc1, dominant, dominant-removal, probes, deletion, example-errors: the study's
                    analyses
                    (analysis/present/study_charts.py, analysis/present/heatmaps.py)

The four heatmaps live in `analysis/present/heatmaps.py`, the rest here; what they share (the size
limits: nothing is dropped silently, Altair's row limit is never lifted) in
`analysis/present/chartkit.py`. Charts only draw: what they show is computed by the analysis modules
(`analysis/study/predictions.py` for the disagreement baseline) or by SQL over the tables. A chart
whose tables hold no data raises TableError naming the command that fills them.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import pandas as pd

from repsweep.analysis.present import heatmaps, study_charts

from repsweep.analysis.study import predictions
from repsweep.analysis.present.chartkit import MAX_ROWS, done_trials, excluded_note, facet_header, parse_config
from repsweep.analysis.tables.query import Results
from repsweep.analysis.tables.schemas import TableError

if TYPE_CHECKING:
    import altair as alt


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
        row=alt.Row(**facet_header("data_fraction", "data fraction", fmt="~g", sort="descending")),
        column=alt.Column(**facet_header("depth", "depth")),
    ).resolve_scale(x="independent").properties(
        title=alt.TitleParams("First principal component's share of variance, by layer", subtitle=notes,
                              anchor="start"))


def accuracy(res: Results) -> alt.FacetChart:
    """Test accuracy of every finished trial against width (x) and depth (colour), per data fraction."""
    import altair as alt

    trials = done_trials(res)
    failed = int(res.sql("SELECT count(*) AS n FROM trials WHERE status = 'failed'")["n"].iloc[0])
    notes = [f"one point per trial ({len(trials)} finished); lines: mean over seeds"]
    if failed:
        notes.append(f"{failed} failed trials not shown (see 'repsweep status SWEEP')")
    notes += excluded_note(trials, set(trials["trial_id"]))
    trials = trials.assign(trained=trials["excluded"].map({True: "did not train (excluded)", False: "trained"}))
    base = alt.Chart(trials).encode(
        x=alt.X("width:O", title="width multiplier", axis=alt.Axis(labelAngle=0)),
        color=alt.Color("depth:O", title="depth", scale=alt.Scale(scheme="viridis")))
    line = base.mark_line().encode(y=alt.Y("mean(test_acc):Q", title="test accuracy",
                                           scale=alt.Scale(zero=False)))
    points = base.mark_point(filled=True, opacity=0.7).encode(
        y=alt.Y("test_acc:Q"), shape=alt.Shape("trained:N", title=None),
        tooltip=["trial_id:N", alt.Tooltip("test_acc:Q", format=".4f"), "trained:N"])
    return alt.layer(line, points).properties(width=220, height=220).facet(
        column=alt.Column(**facet_header("data_fraction", "data fraction", fmt="~g", sort="descending")),
    ).properties(title=alt.TitleParams("Test accuracy against width and depth", subtitle=notes,
                                       anchor="start"))


def disagreement(res: Results) -> alt.FacetChart:
    """Disagreement between architectures (off-diagonal) against between seeds (diagonal), per fraction."""
    import altair as alt

    dis = res.sql("SELECT trial_a, trial_b, agreement FROM disagreement WHERE trial_a <> trial_b")
    if dis.empty:
        raise TableError("no disagreement rows yet; run 'repsweep compare SWEEP'")
    trials = done_trials(res)
    cells, across = predictions.disagreement_cells(dis, trials)
    diagonal = cells["arch_a"] == cells["arch_b"]
    order = list(dict.fromkeys(trials["arch"]))  # by depth, then width
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
        column=alt.Column(**facet_header("data_fraction", "data fraction", fmt="~g", sort="descending")),
    ).properties(title=alt.TitleParams("Prediction disagreement between architectures", subtitle=notes,
                                       anchor="start"))


def class_accuracy(res: Results, *, a: str | None = None, b: str | None = None) -> alt.Chart:
    """Per-class accuracy of configuration a minus b (default: the deepest-narrowest and widest-shallowest)."""
    import altair as alt

    trials = done_trials(res)
    frac = trials["data_fraction"].max()
    deep_narrow = trials.sort_values(["depth", "width"], ascending=[False, True])["arch"].iloc[0]
    wide_shallow = trials.sort_values(["width", "depth"], ascending=[False, True])["arch"].iloc[0]
    default_a, default_b = {"arch": deep_narrow, "data_fraction": frac}, {"arch": wide_shallow, "data_fraction": frac}
    sides = []
    for text, default in ((a, default_a), (b, default_b)):
        want = parse_config(text) if text else default
        want.setdefault("data_fraction", frac)
        mask = pd.Series(True, index=trials.index)
        for k, v in want.items():
            mask &= trials[k] == v
        if not mask.any():
            have = sorted({f"{a}-f{f:g}" for a, f in zip(trials["arch"], trials["data_fraction"])})
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
        names.append(f"{r['arch']}, fraction {r['data_fraction']:g} ({len(side)} "
                     f"seed{'s' if len(side) > 1 else ''}, test accuracy {side['test_acc'].mean():.3f})")
    rows = means[0].join(means[1]["accuracy"].rename("accuracy_b"), how="inner").rename(
        columns={"accuracy": "accuracy_a"}).reset_index()
    rows["difference"] = rows["accuracy_a"] - rows["accuracy_b"]
    rows["better"] = rows["difference"].map(lambda d: "a" if d > 0 else "b" if d < 0 else "tie")
    q, significant, note = _significance(res, sides)
    rows["q"], rows["significant"] = rows["label"].map(q), rows["label"].map(significant).fillna(False).astype(bool)
    return alt.Chart(rows).mark_bar().encode(
        opacity=alt.condition("datum.significant", alt.value(1.0), alt.value(0.45)),
        x=alt.X("label:O", title="class", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("difference:Q", title="accuracy of a minus b", axis=alt.Axis(format="+.0%")),
        color=alt.Color("better:N", title="better", scale=alt.Scale(domain=["a", "b", "tie"],
                                                                    range=["#4c78a8", "#e45756", "#999999"])),
        tooltip=["label:O", alt.Tooltip("accuracy_a:Q", format=".3f"), alt.Tooltip("accuracy_b:Q", format=".3f"),
                 alt.Tooltip("difference:Q", format="+.3f"), alt.Tooltip("q:Q", format=".2g"), "n_examples:Q"],
    ).properties(width=max(240, 24 * len(rows)), height=200, title=alt.TitleParams(
        "Per-class accuracy differences", subtitle=[f"a: {names[0]}", f"b: {names[1]}",
                                                    "mean over seeds of each configuration", note], anchor="start"))


def _significance(res: Results, sides: list[pd.DataFrame]) -> tuple[dict, dict, str]:
    """Per class: the class_diff table's BH q-value and verdict for configurations a and b (by label)."""
    (a, fa), (b, fb) = ((s["arch"].iloc[0], s["data_fraction"].iloc[0]) for s in sides)
    diff = res.sql("SELECT label, q, significant, testable, reason FROM class_diff WHERE data_fraction = $f AND "
                   "((arch_a = $a AND arch_b = $b) OR (arch_a = $b AND arch_b = $a)) "
                   "AND coalesce(measure, 'correct') = 'correct' ORDER BY label",  # accuracy (NULL: older tables)
                   {"f": fa, "a": a, "b": b}) if fa == fb else pd.DataFrame()
    if diff.empty or not diff["testable"].any():
        why = diff["reason"].iloc[0] if len(diff) else "a and b differ in data fraction, or class_diff is not computed"
        return {}, {}, f"not tested: {why}"
    n = int(diff["significant"].sum())
    return (dict(zip(diff["label"], diff["q"])), dict(zip(diff["label"], diff["significant"])),
            f"solid bars: significant (permutation test over seeds, Benjamini-Hochberg q < 0.05): {n} of {len(diff)}")


# ------------------------------------------------------------------------------- registry

CHARTS: dict[str, Callable[..., Any]] = {
    "figure1": heatmaps.figure1, "fractions": heatmaps.fractions, "cross-seed": heatmaps.cross_seed,
    "cross-arch": heatmaps.cross_arch, "blocks": study_charts.blocks, "without-pc1": heatmaps.without_pc1,
    "dominant": study_charts.dominant, "dominant-removal": study_charts.dominant_removal, "probes": study_charts.probes, "deletion": study_charts.deletion,
    "example-errors": study_charts.example_errors,
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
