"""Error patterns on constructed predictions whose answer is known; permutation p-values checked by hand enumeration."""

from __future__ import annotations

from itertools import combinations
from math import comb

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from repsweep.analysis.study import errors
from repsweep.analysis.study.errors import (
    CLASS_DIFF_COLUMNS,
    EXAMPLE_DISAGREEMENT_COLUMNS,
    EXAMPLE_STATS_COLUMNS,
    class_diff,
    example_disagreement,
    example_stats,
)


def make_trials(seeds: dict[tuple[str, float], list[int]]) -> pd.DataFrame:
    """trials rows for {(arch, data_fraction): seeds}; ids like 'd8-w1-f1-s0'."""
    rows = [{"trial_id": f"{arch}-f{fraction:g}-s{seed}", "arch": arch, "data_fraction": fraction, "seed": seed}
            for (arch, fraction), ss in seeds.items() for seed in ss]
    return pd.DataFrame(rows)


def make_predictions(correct: dict[str, np.ndarray], labels: np.ndarray,
                     p_true: dict[str, np.ndarray] | None = None) -> pd.DataFrame:
    """predictions rows from each trial's (n,) correctness over examples 0..n-1 (and its p_true, if given)."""
    return pd.concat([pd.DataFrame({"trial_id": t, "example": np.arange(len(c)), "label": labels,
                                    "correct": np.asarray(c, dtype=bool),
                                    **({"p_true": np.asarray(p_true[t], dtype=np.float32)} if p_true else {})})
                      for t, c in correct.items()], ignore_index=True)


def sample_correct(rng: np.random.Generator, ease: np.ndarray, trials: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each trial right on example i with probability ease[i], independently."""
    return {t: rng.random(len(ease)) < ease for t in trials["trial_id"]}


# ------------------------------------------------------------------------------ example_stats


def test_example_stats_averages_over_a_configurations_seeds():
    trials = make_trials({("d8-w1", 1.0): [0, 1, 2], ("d8-w2", 1.0): [0, 1]})
    preds = make_predictions({
        "d8-w1-f1-s0": [1, 1, 0, 0], "d8-w1-f1-s1": [1, 0, 0, 1], "d8-w1-f1-s2": [1, 0, 1, 1],
        "d8-w2-f1-s0": [0, 1, 1, 1], "d8-w2-f1-s1": [0, 1, 0, 1],
        "unfinished": [0, 0, 0, 0],  # not in `trials`: left out
    }, labels=np.array([3, 1, 4, 1]))
    out = example_stats(preds, trials)
    assert list(out.columns) == EXAMPLE_STATS_COLUMNS
    a = out[out["arch"] == "d8-w1"].set_index("example")
    b = out[out["arch"] == "d8-w2"].set_index("example")
    np.testing.assert_allclose(a["accuracy"], [3 / 3, 1 / 3, 1 / 3, 2 / 3])
    np.testing.assert_allclose(b["accuracy"], [0, 1, 0.5, 1])
    assert a["n_seeds"].tolist() == [3] * 4 and b["n_seeds"].tolist() == [2] * 4
    assert a["label"].tolist() == [3, 1, 4, 1]


def test_example_stats_refuses_one_example_with_two_labels():
    trials = make_trials({("d8-w1", 1.0): [0, 1]})
    preds = make_predictions({"d8-w1-f1-s0": [1, 0], "d8-w1-f1-s1": [1, 0]}, labels=np.array([0, 1]))
    preds.loc[3, "label"] = 5
    with pytest.raises(ValueError, match="different labels"):
        example_stats(preds, trials)


def naive_p(pooled: np.ndarray, n_a: int, statistic) -> float:
    """Permutation p by hand: the share of all splits of the pooled rows with statistic >= the observed."""
    observed = statistic(pooled[:n_a], pooled[n_a:])
    null = []
    for idx in combinations(range(len(pooled)), n_a):
        rest = np.setdiff1d(np.arange(len(pooled)), idx)
        null.append(statistic(pooled[list(idx)], pooled[rest]))
    return float(np.mean(np.asarray(null) >= observed - 1e-12))


def spread(x: np.ndarray, y: np.ndarray) -> float:
    """mean_i |acc_x(i) - acc_y(i)| of (models, examples) correctness."""
    return float(np.abs(x.mean(0) - y.mean(0)).mean())


def test_schemas_list_the_columns_of_the_frames():
    from repsweep.analysis.tables.schemas import SCHEMAS
    assert SCHEMAS["example_disagreement"].names == EXAMPLE_DISAGREEMENT_COLUMNS
    assert SCHEMAS["class_diff"].names == CLASS_DIFF_COLUMNS


# ------------------------------------------------------------------------------ example_disagreement


def test_copies_of_one_error_pattern_show_no_excess_p_1_and_a_zero_interval():
    rng = np.random.default_rng(0)
    trials = make_trials({("d20-w1", 1.0): [0, 1, 2, 3], ("d8-w4", 1.0): [0, 1, 2, 3]})
    pattern = rng.random(500) < 0.8
    out = example_disagreement(make_predictions({t: pattern for t in trials["trial_id"]}, np.zeros(500)), trials)
    assert list(out.columns) == EXAMPLE_DISAGREEMENT_COLUMNS
    row = out.iloc[0]
    assert (row["arch_a"], row["arch_b"], row["seeds_per_group"], row["n_examples"]) == ("d20-w1", "d8-w4", 2, 500)
    assert row["between"] == row["baseline"] == row["excess"] == 0 and row["p"] == 1.0
    assert row["ci_low"] == row["ci_high"] == 0
    assert (row["n_seeds_a"], row["n_seeds_b"]) == (4, 4) and row["min_p"] == pytest.approx(2 / 70)
    assert row["testable"] and row["reason"] is None


def test_seeds_of_one_difficulty_profile_show_no_excess():
    rng = np.random.default_rng(1)
    trials = make_trials({("d20-w1", 0.5): [0, 1, 2, 3], ("d8-w4", 0.5): [0, 1, 2, 3]})
    ease = rng.beta(2, 0.5, 3000)  # per-example chance of being right, shared by both configurations
    row = example_disagreement(make_predictions(sample_correct(rng, ease, trials), np.zeros(3000)), trials).iloc[0]
    assert row["baseline"] > 0.1 and abs(row["excess"]) < 0.02
    assert row["ci_low"] < row["excess"] < row["ci_high"] and row["ci_low"] < 0 < row["ci_high"]
    assert row["p"] > 0.05


def test_configurations_erring_on_disjoint_examples_show_excess_at_the_smallest_p_4_seeds_give():
    rng = np.random.default_rng(2)
    trials = make_trials({("d20-w1", 1.0): [0, 1, 2, 3], ("d8-w4", 1.0): [0, 1, 2, 3]})
    ease_a, ease_b = np.full(1000, 0.98), np.full(1000, 0.98)
    ease_a[:100], ease_b[100:200] = 0.05, 0.05  # a fails examples 0-99, b fails 100-199
    correct = {t: rng.random(1000) < (ease_a if t.startswith("d20") else ease_b) for t in trials["trial_id"]}
    row = example_disagreement(make_predictions(correct, np.zeros(1000)), trials).iloc[0]
    assert row["excess"] > 0.1 and row["between"] > row["baseline"] and row["ci_low"] > 0.05
    assert row["p"] == pytest.approx(2 / 70) and row["min_p"] == pytest.approx(2 / 70)


def test_identical_seeds_erring_on_disjoint_examples_give_p_min_p_and_a_positive_interval():
    trials = make_trials({("a", 1.0): [0, 1, 2, 3], ("b", 1.0): [0, 1, 2, 3]})
    right_a, right_b = np.ones(200, bool), np.ones(200, bool)
    right_a[:10], right_b[10:20] = False, False
    correct = {t: right_a if t.startswith("a") else right_b for t in trials["trial_id"]}
    row = example_disagreement(make_predictions(correct, np.zeros(200)), trials).iloc[0]
    assert row["p"] == row["min_p"] == pytest.approx(2 / 70)
    assert row["excess"] == pytest.approx(20 / 200) and row["baseline"] == 0 and row["ci_low"] > 0


def _expected_abs_difference(p: float, q: float, k: int) -> float:
    """E|U/k - V/k| for U ~ Binomial(k, p), V ~ Binomial(k, q), by enumeration (the naive formula)."""
    return sum(stats.binom.pmf(u, k, p) * stats.binom.pmf(v, k, q) * abs(u - v) / k
               for u in range(k + 1) for v in range(k + 1))


@pytest.mark.parametrize("seeds", [2, 4])
def test_a_planted_per_example_difference_is_found_with_an_interval_that_covers_it(seeds):
    """On examples 0-999 of 4,000, a is right 95% of the time and b 35%; elsewhere both 90%.
    The excess expected per example is E|A1 - B2| - (E|A1 - A2| + E|B1 - B2|) / 2 over groups of
    k = seeds / 2 models ((p - q)^2 when k = 1); the interval over test examples must cover it."""
    rng = np.random.default_rng(11)
    trials = make_trials({("a", 1.0): list(range(seeds)), ("b", 1.0): list(range(seeds))})
    ease_a, ease_b = np.full(4000, 0.9), np.full(4000, 0.9)
    ease_a[:1000], ease_b[:1000] = 0.95, 0.35
    row = example_disagreement(make_predictions(sample_correct_by_arch(rng, {"a": ease_a, "b": ease_b}, trials),
                                                np.zeros(4000)), trials).iloc[0]
    k = seeds // 2
    def excess(p: float, q: float) -> float:
        return _expected_abs_difference(p, q, k) - (_expected_abs_difference(p, p, k)
                                                    + _expected_abs_difference(q, q, k)) / 2

    planted = 0.25 * excess(0.95, 0.35) + 0.75 * excess(0.9, 0.9)  # the second is 0
    if k == 1:
        assert planted == pytest.approx(0.25 * (0.95 - 0.35) ** 2)  # the closed form
    assert row["ci_low"] <= planted <= row["ci_high"] and row["ci_low"] > 0
    assert row["excess"] == pytest.approx(planted, abs=0.02)


def sample_correct_by_arch(rng: np.random.Generator, ease: dict[str, np.ndarray],
                           trials: pd.DataFrame) -> dict[str, np.ndarray]:
    """Each trial right on example i with probability ease[its arch][i], independently."""
    return {t.trial_id: rng.random(len(ease[t.arch])) < ease[t.arch] for t in trials.itertuples()}


def test_two_seeds_per_configuration_never_give_p_below_a_third():
    trials = make_trials({("a", 1.0): [0, 1], ("b", 1.0): [0, 1]})
    right_a, right_b = np.arange(300) >= 150, np.arange(300) < 150  # as different as two patterns can be
    correct = {t: right_a if t.startswith("a") else right_b for t in trials["trial_id"]}
    row = example_disagreement(make_predictions(correct, np.zeros(300)), trials).iloc[0]
    assert row["excess"] == 1 and row["min_p"] == pytest.approx(1 / 3) and row["p"] == pytest.approx(1 / 3)
    rng = np.random.default_rng(10)
    row = example_disagreement(make_predictions(sample_correct(rng, rng.random(300), trials), np.zeros(300)),
                               trials).iloc[0]
    assert row["p"] >= 1 / 3 - 1e-12


def test_disagreement_matches_a_naive_computation_with_seeds_in_order():
    rng = np.random.default_rng(3)
    trials = make_trials({("a", 1.0): [4, 0, 3, 1, 2], ("b", 1.0): [7, 5, 6, 9]}).sample(frac=1, random_state=0)
    correct = sample_correct(rng, rng.random(200), trials)
    row = example_disagreement(make_predictions(correct, np.zeros(200)), trials).iloc[0]
    k = 2  # min(5, 4) // 2
    group = {  # by seed: a's first k seeds (0, 1), next k (2, 3); b's (5, 6), (7, 9)
        "A1": ["a-f1-s0", "a-f1-s1"], "A2": ["a-f1-s2", "a-f1-s3"],
        "B1": ["b-f1-s5", "b-f1-s6"], "B2": ["b-f1-s7", "b-f1-s9"]}
    acc = {g: np.mean([correct[t] for t in ids], axis=0) for g, ids in group.items()}
    between, base_a, base_b = (np.abs(acc["A1"] - acc["B2"]), np.abs(acc["A1"] - acc["A2"]),
                               np.abs(acc["B1"] - acc["B2"]))
    assert row["seeds_per_group"] == k and (row["n_seeds_a"], row["n_seeds_b"]) == (5, 4)
    assert row["between"] == pytest.approx(between.mean())
    assert row["baseline_a"] == pytest.approx(base_a.mean()) and row["baseline_b"] == pytest.approx(base_b.mean())
    excess = between.mean() - (base_a.mean() + base_b.mean()) / 2
    assert row["excess"] == pytest.approx(excess) and row["ci_low"] < excess < row["ci_high"]
    # the p over all 9 seeds, every one of the comb(9, 5) = 126 splits by hand
    models = np.array([correct[f"a-f1-s{s}"] for s in range(5)] + [correct[f"b-f1-s{s}"] for s in (5, 6, 7, 9)],
                      dtype=float)
    assert row["p"] == pytest.approx(naive_p(models, 5, spread))
    assert row["min_p"] == pytest.approx(1 / 126)


def test_many_seeds_use_seeded_random_permutations_and_their_smallest_p():
    rng = np.random.default_rng(11)
    trials = make_trials({("a", 1.0): list(range(8)), ("b", 1.0): list(range(8))})  # comb(16, 8) = 12870 splits
    preds = make_predictions(sample_correct(rng, rng.random(40), trials), np.zeros(40))
    first, again = example_disagreement(preds, trials), example_disagreement(preds, trials)
    pd.testing.assert_frame_equal(first, again)
    assert first.loc[0, "min_p"] == pytest.approx(1 / (errors.N_RESAMPLES + 1))
    assert first.loc[0, "min_p"] <= first.loc[0, "p"] <= 1


def test_the_interval_narrows_with_the_confidence_and_a_bad_level_is_refused():
    rng = np.random.default_rng(12)
    trials = make_trials({("a", 1.0): [0, 1, 2, 3], ("b", 1.0): [0, 1, 2, 3]})
    preds = make_predictions(sample_correct(rng, rng.random(400), trials), np.zeros(400))
    wide, narrow = (example_disagreement(preds, trials, confidence=c).iloc[0] for c in (0.95, 0.5))
    assert wide["ci_low"] < narrow["ci_low"] <= narrow["ci_high"] < wide["ci_high"]
    assert wide["p"] == narrow["p"]
    with pytest.raises(ValueError, match="confidence"):
        example_disagreement(preds, trials, confidence=95)


def test_a_one_seed_configuration_is_untestable_with_a_reason():
    trials = make_trials({("d8-w1", 1.0): [0], ("d8-w2", 1.0): [0, 1], ("d8-w4", 1.0): [0, 1],
                          ("d8-w1", 0.5): [0, 1]})  # another data fraction: never paired with 1.0
    correct = {t: np.arange(50) % 3 > 0 for t in trials["trial_id"]}
    out = example_disagreement(make_predictions(correct, np.zeros(50)), trials)
    assert len(out) == 3 and set(out["data_fraction"]) == {1.0}
    bad = out[out["arch_a"] == "d8-w1"]
    assert len(bad) == 2 and not bad["testable"].any()
    assert bad[["between", "baseline_a", "baseline_b", "baseline", "excess", "p", "ci_low", "ci_high",
                "min_p"]].isna().all().all()
    assert set(bad["reason"]) == {"d8-w1 at data fraction 1 has 1 seed; disjoint seed groups need 2"}
    assert (bad["n_seeds_a"] == 1).all() and (bad["n_seeds_b"] == 2).all()
    good = out[out["arch_a"] == "d8-w2"].iloc[0]
    assert good["testable"] and good["excess"] == 0 and good["p"] == 1


# ------------------------------------------------------------------------------ the true-class probability


def test_p_true_as_0_or_1_gives_exactly_the_correctness_statistics():
    """Property: where the true-class probability is the correctness itself, the two measures agree."""
    rng = np.random.default_rng(21)
    trials = make_trials({("a", 1.0): [0, 1, 2], ("b", 1.0): [0, 1, 2, 3]})
    correct = sample_correct(rng, rng.random(150), trials)
    preds = make_predictions(correct, np.zeros(150), {t: c.astype(float) for t, c in correct.items()})
    by_correct, by_p = (example_disagreement(preds, trials, measure=m) for m in ("correct", "p_true"))
    assert by_correct["measure"].tolist() == ["correct"] and by_p["measure"].tolist() == ["p_true"]
    pd.testing.assert_frame_equal(by_correct.drop(columns="measure"), by_p.drop(columns="measure"))


def test_p_true_disagreement_matches_a_naive_computation():
    rng = np.random.default_rng(22)
    trials = make_trials({("a", 1.0): [0, 1, 2], ("b", 1.0): [0, 1, 2]})
    p_true = {t: rng.uniform(0.2, 1.0, 120) for t in trials["trial_id"]}
    correct = {t: v > 0.5 for t, v in p_true.items()}
    row = example_disagreement(make_predictions(correct, np.zeros(120), p_true), trials, measure="p_true").iloc[0]
    models = np.array([p_true[f"{a}-f1-s{s}"] for a in "ab" for s in range(3)], dtype=np.float32).astype(float)
    a1, a2, b1, b2 = models[0], models[1], models[3], models[4]  # k = 1: seeds 0 and 1 of each
    between, base = np.abs(a1 - b2), (np.abs(a1 - a2) + np.abs(b1 - b2)) / 2
    assert row["between"] == pytest.approx(between.mean()) and row["excess"] == pytest.approx((between - base).mean())
    assert row["p"] == pytest.approx(naive_p(models, 3, spread))
    assert row["errors_median"] == np.median([(~correct[t]).sum() for t in trials["trial_id"]])


def test_models_without_errors_differ_in_their_true_class_probability():
    """Every model gets all 300 examples right, so 0/1 correctness shows nothing (excess 0, p = 1);
    a is sure (0.95) of examples 0-149 and hesitant (0.6) of the rest, b the other way round, with
    noise: the true-class probability finds it, at the smallest p 6 + 6 seeds allow."""
    rng = np.random.default_rng(23)
    trials = make_trials({("a", 0.25): list(range(6)), ("b", 0.25): list(range(6))})
    first = np.arange(300) < 150
    sure = {"a": np.where(first, 0.95, 0.6), "b": np.where(first, 0.6, 0.95)}
    p_true = {t.trial_id: np.clip(sure[t.arch] + 0.05 * rng.standard_normal(300), 0.51, 1) for t in trials.itertuples()}
    preds = make_predictions({t: np.ones(300, bool) for t in p_true}, np.zeros(300), p_true)
    by_correct, by_p = (example_disagreement(preds, trials, measure=m).iloc[0] for m in ("correct", "p_true"))
    assert by_correct["errors_median"] == by_p["errors_median"] == 0
    assert by_correct["excess"] == 0 and by_correct["p"] == 1
    assert by_p["p"] == pytest.approx(by_p["min_p"]) and by_p["min_p"] == pytest.approx(2 / comb(12, 6))
    assert by_p["ci_low"] > 0.25  # |0.95 - 0.6| = 0.35 apart, less the noise of the seed baseline


def test_a_measure_the_predictions_lack_is_refused_by_name():
    trials = make_trials({("a", 1.0): [0, 1], ("b", 1.0): [0, 1]})
    correct = {t: np.ones(10, bool) for t in trials["trial_id"]}
    preds = make_predictions(correct, np.zeros(10), {t: np.ones(10) for t in correct})
    preds.loc[preds["trial_id"] == "a-f1-s1", "p_true"] = np.nan  # trained before p_true was recorded
    with pytest.raises(ValueError, match=r"no p_true for 1 trials \(e.g. a-f1-s1\).*measure 'correct'"):
        example_disagreement(preds, trials, measure="p_true")
    with pytest.raises(ValueError, match="measure is one of"):
        example_disagreement(preds, trials, measure="loss")
    assert example_disagreement(preds, trials)["testable"].all()  # correctness reads every trial


def test_class_accuracy_keeps_the_mean_true_class_probability_and_class_diff_tests_it():
    from repsweep.analysis.study.predictions import class_accuracy
    rng = np.random.default_rng(24)
    trials = make_trials({("x", 1.0): list(range(6)), ("y", 1.0): list(range(6))})  # q = 3 min_p < 0.05
    labels = np.repeat(np.arange(3), 40)
    base = rng.uniform(0.55, 1.0, 120)  # classes 0 and 1: the same for every model; class 2: y is less sure
    p_true = {t: np.where(labels == 2, base - (0.3 if t.startswith("y") else 0) + 0.02 * rng.standard_normal(120),
                          base) for t in trials["trial_id"]}
    acc = class_accuracy(make_predictions({t: v > 0.5 for t, v in p_true.items()}, labels, p_true))
    for t, v in p_true.items():
        got = acc[acc["trial_id"] == t].set_index("label")["mean_p_true"]
        np.testing.assert_allclose(got, [v.astype(np.float32)[labels == c].mean() for c in range(3)], rtol=1e-6)
    out = class_diff(acc, trials, measure="p_true").set_index("label")
    assert (out["measure"] == "p_true").all()
    assert out.loc[2, "significant"] and out.loc[2, "p"] == pytest.approx(2 / comb(12, 6))
    assert not out.loc[[0, 1], "significant"].any() and (out.loc[[0, 1], "p"] == 1).all()
    assert out.loc[2, "mean_a"] == pytest.approx(acc[acc["trial_id"].str.startswith("x") & (acc["label"] == 2)]
                                                 ["mean_p_true"].mean())


# ------------------------------------------------------------------------------ class_diff


def make_class_accuracy(rng: np.random.Generator, trials: pd.DataFrame, means: dict[str, np.ndarray],
                        noise: float) -> pd.DataFrame:
    """Per-seed class accuracies: the arch's per-class mean plus Gaussian noise."""
    rows = []
    for t, arch in zip(trials["trial_id"], trials["arch"]):
        acc = np.clip(means[arch] + noise * rng.standard_normal(len(means[arch])), 0, 1)
        rows.append(pd.DataFrame({"trial_id": t, "label": np.arange(len(acc)), "n_examples": 100, "accuracy": acc}))
    return pd.concat(rows, ignore_index=True)


def given_class_accuracy(trials: pd.DataFrame, values: dict[str, list[float]], label: int = 0) -> pd.DataFrame:
    """One class's accuracy per trial: {arch: its seeds' values in trial order}."""
    acc = [v for arch in trials["arch"].unique() for v in values[arch]]
    return pd.DataFrame({"trial_id": trials["trial_id"], "label": label, "n_examples": 36, "accuracy": acc})


def abs_mean_difference(x: np.ndarray, y: np.ndarray) -> float:
    return abs(x.mean() - y.mean())


def test_a_planted_class_difference_is_significant_and_the_others_are_not():
    rng = np.random.default_rng(4)
    trials = make_trials({("d56-w1", 1.0): list(range(6)), ("d8-w2", 1.0): list(range(6))})
    base = np.full(10, 0.7)
    a, b = base.copy(), base.copy()
    a[3], b[3] = 0.9, 0.5
    a[7], b[7] = 0.6, 0.8
    out = class_diff(make_class_accuracy(rng, trials, {"d56-w1": a, "d8-w2": b}, noise=0.02), trials)
    assert list(out.columns) == CLASS_DIFF_COLUMNS and len(out) == 10
    assert out.loc[out["significant"], "label"].tolist() == [3, 7]
    planted = out.set_index("label").loc[[3, 7]]
    np.testing.assert_allclose(planted[["p", "min_p"]], 2 / 924)
    assert out.set_index("label").loc[3, "difference"] == pytest.approx(0.4, abs=0.05)
    assert out["testable"].all() and out["reason"].isna().all() and (out[["n_a", "n_b"]] == 6).all().all()


def test_without_a_planted_difference_nothing_is_significant():
    rng = np.random.default_rng(5)
    trials = make_trials({("d56-w1", 0.25): list(range(6)), ("d8-w2", 0.25): list(range(6))})
    means = np.linspace(0.5, 0.95, 20)
    out = class_diff(make_class_accuracy(rng, trials, {"d56-w1": means, "d8-w2": means}, noise=0.03), trials)
    assert len(out) == 20 and not out["significant"].any()


def test_two_errors_of_72_against_none_from_2_seeds_is_not_significant():
    trials = make_trials({("a", 1.0): [0, 1], ("b", 1.0): [0, 1]})
    row = class_diff(given_class_accuracy(trials, {"a": [34 / 36, 36 / 36], "b": [1.0, 1.0]}, label=9),
                     trials).iloc[0]
    assert row["label"] == 9 and row["difference"] == pytest.approx(-1 / 36)
    assert row["p"] >= 1 / 3 and row["min_p"] == pytest.approx(1 / 3) and not row["significant"]


def test_zero_variance_is_never_p_0():
    trials = make_trials({("a", 1.0): [0, 1, 2], ("b", 1.0): [0, 1, 2]})
    same = class_diff(given_class_accuracy(trials, {"a": [1.0] * 3, "b": [1.0] * 3}), trials).iloc[0]
    assert (same["p"], same["q"], same["significant"]) == (1.0, 1.0, False)
    apart = class_diff(given_class_accuracy(trials, {"a": [1.0] * 3, "b": [0.9] * 3}), trials).iloc[0]
    assert apart["p"] == apart["min_p"] == pytest.approx(2 / 20) and not apart["significant"]


def test_five_against_five_clearly_separated_seeds_give_the_exact_smallest_p():
    trials = make_trials({("a", 1.0): list(range(5)), ("b", 1.0): list(range(5))})
    row = class_diff(given_class_accuracy(trials, {"a": [0.90, 0.91, 0.92, 0.93, 0.94],
                                                   "b": [0.80, 0.81, 0.82, 0.83, 0.84]}), trials).iloc[0]
    assert row["p"] == row["q"] == pytest.approx(2 / 252) and row["min_p"] == pytest.approx(2 / 252)
    assert row["significant"] and row["difference"] == pytest.approx(0.1)


@pytest.mark.parametrize(("n_a", "n_b", "min_p"), [(2, 2, 1 / 3), (3, 3, 2 / 20), (5, 5, 2 / 252), (5, 3, 1 / 56),
                                                   (2, 4, 1 / 15), (8, 8, 1 / (errors.N_RESAMPLES + 1))])
def test_min_p_is_the_smallest_p_the_seed_counts_allow(n_a, n_b, min_p):
    trials = make_trials({("a", 1.0): list(range(n_a)), ("b", 1.0): list(range(n_b))})
    values = {"a": list(0.9 + 0.001 * np.arange(n_a)), "b": list(0.5 + 0.001 * np.arange(n_b))}  # fully separated
    row = class_diff(given_class_accuracy(trials, values), trials).iloc[0]
    assert row["min_p"] == pytest.approx(min_p)
    if comb(n_a + n_b, n_a) <= errors.N_RESAMPLES:
        assert row["p"] == pytest.approx(min_p)  # exact: the observed split and its mirror, if any, alone
    else:  # random splits: the observed one's mirror may be drawn too
        assert min_p <= row["p"] <= 3 * min_p


def test_p_matches_a_hand_enumeration_and_q_is_scipys_bh():
    rng = np.random.default_rng(6)
    trials = make_trials({("x", 1.0): list(range(5)), ("y", 1.0): list(range(3))})
    means = {"x": rng.uniform(0.4, 0.9, 12), "y": rng.uniform(0.4, 0.9, 12)}
    acc = make_class_accuracy(rng, trials, means, noise=0.05)
    out = class_diff(acc, trials)
    np.testing.assert_allclose(out["q"], stats.false_discovery_control(out["p"], method="bh"))
    assert (out["q"] >= out["p"] - 1e-15).all()
    np.testing.assert_allclose(out["min_p"], 1 / 56)
    for label in range(12):
        xa = acc[acc["trial_id"].str.startswith("x") & (acc["label"] == label)]["accuracy"].to_numpy()
        xb = acc[acc["trial_id"].str.startswith("y") & (acc["label"] == label)]["accuracy"].to_numpy()
        row = out.iloc[label]
        assert (row["mean_a"], row["mean_b"]) == (pytest.approx(xa.mean()), pytest.approx(xb.mean()))
        assert row["p"] == pytest.approx(naive_p(np.concatenate([xa, xb]), 5, abs_mean_difference))


def test_a_seed_without_a_value_for_a_class_is_left_out_of_that_class_only():
    rng = np.random.default_rng(13)
    trials = make_trials({("x", 1.0): list(range(4)), ("y", 1.0): list(range(4))})
    acc = make_class_accuracy(rng, trials, {"x": rng.uniform(0.4, 0.9, 3), "y": rng.uniform(0.4, 0.9, 3)}, 0.05)
    acc = acc[~((acc["trial_id"] == "x-f1-s2") & (acc["label"] == 1))]  # seed 2 of x has no class 1
    out = class_diff(acc, trials).set_index("label")
    assert out["n_a"].tolist() == [4, 3, 4] and out.loc[1, "min_p"] == pytest.approx(1 / 35)
    for label in range(3):
        xa = acc[acc["trial_id"].str.startswith("x") & (acc["label"] == label)]["accuracy"].to_numpy()
        xb = acc[acc["trial_id"].str.startswith("y") & (acc["label"] == label)]["accuracy"].to_numpy()
        assert out.loc[label, "p"] == pytest.approx(naive_p(np.concatenate([xa, xb]), len(xa), abs_mean_difference))


def test_a_one_seed_configuration_is_untestable_never_a_zero_difference():
    trials = make_trials({("d8-w1", 1.0): [0], ("d8-w2", 1.0): [0, 1, 2]})
    acc = make_class_accuracy(np.random.default_rng(7), trials, {"d8-w1": np.full(4, 0.8), "d8-w2": np.full(4, 0.8)},
                              noise=0.0)
    out = class_diff(acc, trials)
    assert len(out) == 4 and not out["testable"].any() and not out["significant"].any()
    assert out[["p", "q", "min_p"]].isna().all().all()
    assert set(out["reason"]) == {"d8-w1 at data fraction 1 has 1 seed; the permutation test needs 2 per configuration"}
    assert (out["n_a"] == 1).all() and (out["n_b"] == 3).all()


def test_class_diff_refuses_a_bad_alpha_and_missing_columns():
    trials = make_trials({("a", 1.0): [0, 1]})
    with pytest.raises(ValueError, match="alpha"):
        class_diff(pd.DataFrame(columns=["trial_id", "label", "accuracy"]), trials, alpha=5)
    with pytest.raises(ValueError, match=r"lacks columns \['accuracy'\]"):
        class_diff(pd.DataFrame(columns=["trial_id", "label"]), trials)
