"""Each chart of a real sweep: its data (every row, the right values) and its encodings."""

from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from repsweep.analysis.present import charts, heatmaps, study_charts
from repsweep.analysis.present.chartkit import MAX_ROWS
from repsweep.analysis.present.charts import CHARTS, make_chart
from repsweep.analysis.tables.query import open_results
from repsweep.analysis.tables.schemas import TableError
from repsweep.orchestrator.cli import main
from tests.conftest import LAYERS, N_TRIALS

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def res(results_sweep):
    return open_results(str(results_sweep))


@pytest.fixture(scope="module")
def trials(res) -> pd.DataFrame:
    return res.sql("SELECT * FROM trials").set_index("trial_id")


def _ids(trials: pd.DataFrame, **where) -> set[str]:
    mask = np.ones(len(trials), bool)
    for k, v in where.items():
        mask &= trials[k].to_numpy() == v
    return set(trials.index[mask])


def _encoding(spec: dict) -> dict[str, str]:
    return {ch: e.get("field", e.get("aggregate")) for ch, e in spec["encoding"].items() if isinstance(e, dict)}


def _assert_cells_are_the_cka_rows(res, data: pd.DataFrame) -> None:
    """Unbinned heatmap cells equal the stored CKA values, whichever way a pair was stored."""
    cka = res.sql("SELECT trial_a, layer_a, trial_b, layer_b, cka FROM cka")
    flipped = cka.rename(columns={"trial_a": "trial_b", "trial_b": "trial_a", "layer_a": "layer_b", "layer_b": "layer_a"})
    both = pd.concat([cka, flipped[flipped["trial_a"] != flipped["trial_b"]]])
    got = data.merge(both, on=["trial_a", "layer_a", "trial_b", "layer_b"], suffixes=("", "_table"))
    assert len(got) == len(data)
    np.testing.assert_allclose(got["cka"], got["cka_table"], equal_nan=True)


# ------------------------------------------------------------------------ heatmaps

def test_figure1_draws_every_layer_pair_width_across_depth_down(res, trials):
    chart = heatmaps.figure1(res)
    spec, data = chart.to_dict(), chart.data
    assert spec["facet"]["row"]["field"] == "depth" and spec["facet"]["column"]["field"] == "width"
    assert _encoding(spec["spec"]) == {"x": "layer_a", "x2": "layer_a_end", "y": "layer_b",
                                          "y2": "layer_b_end", "color": "cka"}
    assert spec["spec"]["encoding"]["color"]["scale"]["domain"] == [0, 1]
    assert spec["resolve"]["scale"] == {"x": "independent", "y": "independent"}
    assert "'depth ' + datum.value" in spec["facet"]["row"]["header"]["labelExpr"]
    # data fraction 1, seed 0 by default: one panel per architecture, every layer pair once
    assert set(data["trial_a"]) == set(data["trial_b"]) == _ids(trials, data_fraction=1.0, seed=0)
    assert len(data) == 2 * LAYERS[8] ** 2 + 2 * LAYERS[14] ** 2
    assert (data["layer_pairs"] == 1).all() and (data["layer_a_end"] == data["layer_a"] + 1).all()
    _assert_cells_are_the_cka_rows(res, data[["trial_a", "layer_a", "trial_b", "layer_b", "cka"]])


def test_figure1_options_pick_the_data_fraction_and_seed(res, trials):
    data = heatmaps.figure1(res, data_fraction=0.5, seed=1).data
    assert set(data["trial_a"]) == _ids(trials, data_fraction=0.5, seed=1)
    with pytest.raises(TableError, match=r"no finished trial has data_fraction 0.25; .* 0.5, 1"):
        heatmaps.figure1(res, data_fraction=0.25)


def test_heatmaps_over_the_row_budget_average_bins_and_drop_nothing(res, monkeypatch):
    monkeypatch.setattr(heatmaps, "MAX_ROWS", 100)
    chart = heatmaps.figure1(res)
    data = chart.data
    assert len(data) <= 100
    assert "CKA averaged over bins" in " ".join(chart.to_dict()["title"]["subtitle"])
    raw = res.sql("SELECT trial_a, layer_a, layer_b, cka FROM cka WHERE trial_a = trial_b")
    for tid, panel in data.groupby("trial_a"):
        n = LAYERS[int(tid.split("-")[0][1:])]
        assert panel["layer_pairs"].sum() == n * n  # every layer pair is in exactly one cell
        assert panel["layer_a"].min() == 0 and panel["layer_a_end"].max() == n
        source = raw[raw["trial_a"] == tid]
        assert np.average(panel["cka"], weights=panel["layer_pairs"]) == pytest.approx(source["cka"].mean())


def test_panels_beyond_the_cap_are_named_in_the_subtitle(res, monkeypatch):
    monkeypatch.setattr(heatmaps, "MAX_PANELS", 3)
    chart = heatmaps.figure1(res)
    assert chart.data["trial_a"].nunique() == 3
    assert "the first 3 of 4 model pairs" in chart.to_dict()["title"]["subtitle"][1]


def test_fractions_shows_one_architecture_across_data_fractions(res, trials):
    chart = heatmaps.fractions(res)
    spec, data = chart.to_dict(), chart.data
    assert "row" not in spec["facet"] and spec["facet"]["column"]["field"] == "data_fraction"
    assert set(data["trial_a"]) == _ids(trials, depth=14, width=2, seed=0)  # the largest model by default
    assert sorted(data["data_fraction"].unique()) == [0.5, 1.0] and len(data) == 2 * LAYERS[14] ** 2
    assert set(heatmaps.fractions(res, depth=8, width=1, seed=1).data["trial_a"]) == _ids(trials, depth=8, width=1, seed=1)


def test_cross_seed_pairs_seed_0_with_seed_1_of_each_architecture(res, trials):
    chart = heatmaps.cross_seed(res)
    spec, data = chart.to_dict(), chart.data
    assert spec["facet"]["row"]["field"] == "depth" and spec["facet"]["column"]["field"] == "width"
    assert set(data["trial_a"]) == _ids(trials, data_fraction=1.0, seed=0)
    assert set(data["trial_b"]) == _ids(trials, data_fraction=1.0, seed=1)
    for a, b in data[["trial_a", "trial_b"]].drop_duplicates().itertuples(index=False):
        assert trials.loc[a, ["depth", "width"]].tolist() == trials.loc[b, ["depth", "width"]].tolist()
    assert len(data) == 2 * LAYERS[8] ** 2 + 2 * LAYERS[14] ** 2
    _assert_cells_are_the_cka_rows(res, data[["trial_a", "layer_a", "trial_b", "layer_b", "cka"]])


def test_cross_arch_draws_every_panel_the_upper_triangle_mirroring_the_lower(res, trials):
    chart = heatmaps.cross_arch(res)
    spec, data = chart.to_dict(), chart.data
    assert spec["facet"]["row"]["field"] == "rank_b" and spec["facet"]["column"]["field"] == "rank_a"
    assert "d8-w1" in spec["facet"]["row"]["header"]["labelExpr"]
    pairs = data[["trial_a", "trial_b", "rank_a", "rank_b"]].drop_duplicates()
    assert sorted(zip(pairs["rank_a"], pairs["rank_b"])) == [(a, b) for a in range(4) for b in range(4)]  # no empty frame
    ids = _ids(trials, data_fraction=1.0, seed=0)
    assert set(pairs["trial_a"]) | set(pairs["trial_b"]) == ids
    size = {t: LAYERS[trials.loc[t, "depth"]] for t in ids}
    assert len(data) == sum(size[a] * size[b] for a, b in zip(pairs["trial_a"], pairs["trial_b"]))
    lower = data[data["rank_a"] <= data["rank_b"]]  # the compared pairs, smaller architecture first, and selves
    _assert_cells_are_the_cka_rows(res, lower[["trial_a", "layer_a", "trial_b", "layer_b", "cka"]])
    key = ["trial_a", "layer_a", "trial_b", "layer_b"]
    upper = data[data["rank_a"] > data["rank_b"]].rename(columns={"trial_a": "trial_b", "trial_b": "trial_a",
                                                                  "layer_a": "layer_b", "layer_b": "layer_a"})
    mirrored = upper[[*key, "cka"]].merge(lower[[*key, "cka"]], on=key, suffixes=("", "_lower"))
    assert len(mirrored) == len(upper) and (mirrored["cka"] == mirrored["cka_lower"]).all()


# --------------------------------------------------------------- lines, points, bars

def test_pc1_shows_each_configurations_layers_averaged_over_seeds(res):
    chart = charts.pc1(res)
    spec, data = chart.to_dict(), chart.data
    assert _encoding(spec["spec"]) == {"x": "layer", "y": "pc1_fraction", "color": "width"}
    assert spec["facet"]["row"]["field"] == "data_fraction" and spec["facet"]["column"]["field"] == "depth"
    assert len(data) == 4 * (LAYERS[8] + LAYERS[14]) and (data["seeds"] == 2).all()
    want = res.sql("SELECT t.depth, t.width, t.data_fraction, p.layer, p.pc1_fraction FROM pca p "
                   "JOIN trials t USING (trial_id)").groupby(["depth", "width", "data_fraction", "layer"])
    got = data.set_index(["depth", "width", "data_fraction", "layer"])["pc1_fraction"]
    np.testing.assert_allclose(got.sort_index(), want["pc1_fraction"].mean().sort_index())
    assert "mean over 2-2 seeds" in spec["title"]["subtitle"][0]


def test_accuracy_plots_every_finished_trial_by_width_and_depth(res, trials):
    chart = charts.accuracy(res)
    spec, data = chart.to_dict(), chart.data
    assert len(data) == N_TRIALS and set(data["trial_id"]) == set(trials.index)
    line, points = spec["spec"]["layer"]
    assert _encoding(line) == {"x": "width", "color": "depth", "y": "test_acc"}
    assert line["encoding"]["y"]["aggregate"] == "mean" and _encoding(points)["y"] == "test_acc"
    assert spec["facet"]["column"]["field"] == "data_fraction"


def test_accuracy_says_how_many_failed_trials_it_leaves_out(results_sweep, tmp_path):
    sweep = tmp_path / "s"
    shutil.copytree(results_sweep / "tables", sweep / "tables")
    res = open_results(str(sweep))
    key = res.store.part_keys("trials")[0]
    row = res.store.read_part("trials", key).assign(status="failed", error="diverged: test", test_acc=np.nan)
    res.store.write_part("trials", key, row)
    chart = charts.accuracy(res)
    assert len(chart.data) == N_TRIALS - 1
    assert "1 failed trials not shown" in chart.to_dict()["title"]["subtitle"][1]


def test_disagreement_cells_are_computed_from_the_predictions(res, trials):
    chart = charts.disagreement(res)
    spec, data = chart.to_dict(), chart.data
    assert _encoding(spec["spec"]["layer"][0]) == {"x": "arch_b", "y": "arch_a", "color": "disagreement"}
    assert spec["facet"]["column"]["field"] == "data_fraction"
    # per data fraction: a seed baseline for each of 4 architectures, and their 6 pairs both ways round
    assert len(data) == 2 * (4 + 12) and (data["arch_a"] == data["arch_b"]).sum() == 8
    preds = res.sql("SELECT trial_id, example, prediction FROM predictions").pivot(
        index="example", columns="trial_id", values="prediction")

    def differ(a: set[str], b: set[str]) -> float:  # mean over the seed pairs of two configurations
        pairs = [(x, y) for x in a for y in b if x != y and trials.loc[x, "seed"] == trials.loc[y, "seed"]]
        if a == b:
            pairs = [tuple(sorted(a))]
        return float(np.mean([(preds[x] != preds[y]).mean() for x, y in pairs]))

    cell = data.set_index(["data_fraction", "arch_a", "arch_b"])
    d8w1, d14w2 = _ids(trials, depth=8, width=1, data_fraction=0.5), _ids(trials, depth=14, width=2, data_fraction=0.5)
    assert cell.loc[(0.5, "d8-w1", "d8-w1"), "disagreement"] == pytest.approx(differ(d8w1, d8w1))
    assert cell.loc[(0.5, "d8-w1", "d14-w2"), "disagreement"] == pytest.approx(differ(d8w1, d14w2))
    assert cell.loc[(0.5, "d14-w2", "d8-w1"), "disagreement"] == cell.loc[(0.5, "d8-w1", "d14-w2"), "disagreement"]
    baseline = (cell.loc[(0.5, "d8-w1", "d8-w1"), "disagreement"] + cell.loc[(0.5, "d14-w2", "d14-w2"), "disagreement"]) / 2
    assert cell.loc[(0.5, "d8-w1", "d14-w2"), "baseline"] == pytest.approx(baseline)


def test_class_accuracy_difference_is_computed_from_the_predictions(res, trials):
    chart = charts.class_accuracy(res)  # default: deepest narrowest (14x1) minus shallowest widest (8x2)
    spec, data = chart.to_dict(), chart.data
    assert _encoding(spec) == {"x": "label", "y": "difference", "color": "better", "opacity": None}
    preds = res.sql("SELECT trial_id, label, correct FROM predictions")

    def per_class(ids: set[str]) -> pd.Series:
        p = preds[preds["trial_id"].isin(ids)]
        return p.groupby(["trial_id", "label"])["correct"].mean().groupby("label").mean()

    want = (per_class(_ids(trials, depth=14, width=1, data_fraction=1.0))
            - per_class(_ids(trials, depth=8, width=2, data_fraction=1.0)))
    assert len(data) == 10
    np.testing.assert_allclose(data.set_index("label")["difference"].sort_index(), want.sort_index())
    other = charts.class_accuracy(res, a="d8-w1-f0.5", b="d14-w2-f0.5")
    assert "a: d8-w1, fraction 0.5 (2 seeds" in other.to_dict()["title"]["subtitle"][0]


def test_the_error_tables_of_a_real_sweep_hold_both_measures(res):
    """The comparison writes the error statistics for 0/1 correctness and the true-class probability, and
    class_accuracy's mean_p_true is the mean of the predictions' p_true."""
    for table in ("example_disagreement", "class_diff"):
        counts = res.sql(f"SELECT measure, count(*) AS n FROM {table} GROUP BY measure").set_index("measure")["n"]
        assert counts.to_dict() == {"correct": counts["correct"], "p_true": counts["correct"]} and counts.sum() > 0
    got = res.sql("SELECT a.mean_p_true, avg(p.p_true) AS want FROM class_accuracy a JOIN predictions p "
                  "USING (trial_id, label) GROUP BY a.trial_id, a.label, a.mean_p_true")
    np.testing.assert_allclose(got["mean_p_true"], got["want"], rtol=1e-6)
    chart = study_charts.example_errors(res).to_dict()
    pairs = {r["pair"] for r in chart["datasets"][next(iter(chart["datasets"]))]}
    assert any(p.endswith("(true-class prob.)") for p in pairs) and any(not p.endswith(")") for p in pairs)


def test_class_accuracy_names_the_configurations_that_exist(res):
    with pytest.raises(TableError, match=r"no finished trial matches 'd20-w1'; configurations: d14-w1-f0.5, d14-w1-f1"):
        charts.class_accuracy(res, a="d20-w1")
    with pytest.raises(TableError, match=r"no finished trial matches 'deep'"):
        charts.class_accuracy(res, a="deep")
    with pytest.raises(TableError, match=r"expected <arch>\[-f<fraction>\]"):
        charts.class_accuracy(res, a="-f0.5")


# --------------------------------------------------------------------- the registry

def test_every_chart_kind_draws_within_the_row_limit(res):
    has_block = len(res.sql("SELECT * FROM dominant_removal")) > 0
    for kind in CHARTS:
        if kind == "dominant-removal" and not has_block:  # 2-epoch models: none may have a block
            with pytest.raises(TableError, match="it needs a model with a block"):
                make_chart(kind, res)
            continue
        chart = make_chart(kind, res)
        chart.to_dict()  # Altair raises MaxRowsError above its (untouched) default limit
        assert len(chart.data) <= MAX_ROWS, kind


def test_unknown_kinds_and_options_name_what_exists(res):
    with pytest.raises(TableError, match="unknown chart 'fig1'; charts are figure1, fractions, cross-seed"):
        make_chart("fig1", res)
    with pytest.raises(TableError, match="chart 'pc1' takes no options; got seed"):
        make_chart("pc1", res, seed=0)
    assert make_chart("figure1", res, seed=None, a=None).data is not None  # unset options are ignored


def test_charts_of_an_uncompared_sweep_say_to_run_compare(results_sweep, tmp_path):
    for table in ("trials", "layers", "predictions"):
        shutil.copytree(results_sweep / "tables" / table, tmp_path / "s" / "tables" / table)
    res = open_results(str(tmp_path / "s"))
    for kind in ("figure1", "fractions", "cross-seed", "cross-arch", "pc1", "disagreement", "class-accuracy"):
        with pytest.raises(TableError, match="repsweep compare SWEEP"):
            make_chart(kind, res)
    assert len(make_chart("accuracy", res).data) == N_TRIALS


def test_cli_plot_writes_png_svg_and_offline_html(results_sweep, tmp_path, capsys):
    for name in ("f.png", "f.svg", "f.html"):
        assert main(["plot", str(results_sweep), "figure1", "--out", str(tmp_path / name)]) == 0
        assert capsys.readouterr().out.strip() == str(tmp_path / name)
    assert (tmp_path / "f.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "f.svg").read_text()[:200]
    page = (tmp_path / "f.html").read_text()
    assert "<script src" not in page and "vegaEmbed" in page
    assert main(["plot", str(results_sweep), "class-accuracy", "--a", "d8-w1", "--b", "d8-w2",
                 "--out", str(tmp_path / "c.svg")]) == 0
    assert main(["plot", str(results_sweep), "pc1", "--seed", "1", "--out", str(tmp_path / "p.png")]) == 2
    assert "chart 'pc1' takes no options; got seed" in capsys.readouterr().err


def test_models_without_cka_rows_are_named_not_silently_left_out(results_sweep, tmp_path):
    shutil.copytree(results_sweep / "tables", tmp_path / "s" / "tables")
    res = open_results(str(tmp_path / "s"))
    gone = sorted(_ids(res.sql("SELECT * FROM trials").set_index("trial_id"), data_fraction=1.0, seed=0))[0]
    for key in res.store.part_keys("cka"):
        part = res.store.read_part("cka", key)
        res.store.write_part("cka", key, part[(part["trial_a"] != gone) & (part["trial_b"] != gone)])
    chart = heatmaps.figure1(res)
    assert gone not in set(chart.data["trial_a"]) and chart.data["trial_a"].nunique() == 3
    assert "1 of 4 model pairs have no CKA rows yet" in chart.to_dict()["title"]["subtitle"][1]
