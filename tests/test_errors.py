"""Error patterns on constructed predictions whose answer is known; statistics checked by hand formulas."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from repsweep.analysis.errors import (
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


def make_predictions(correct: dict[str, np.ndarray], labels: np.ndarray) -> pd.DataFrame:
    """predictions rows from each trial's (n,) correctness over examples 0..n-1."""
    return pd.concat([pd.DataFrame({"trial_id": t, "example": np.arange(len(c)), "label": labels,
                                    "correct": np.asarray(c, dtype=bool)}) for t, c in correct.items()],
                     ignore_index=True)


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


# ------------------------------------------------------------------------------ example_disagreement


def test_copies_of_one_error_pattern_show_no_excess():
    rng = np.random.default_rng(0)
    trials = make_trials({("d20-w1", 1.0): [0, 1, 2, 3], ("d8-w4", 1.0): [0, 1, 2, 3]})
    pattern = rng.random(500) < 0.8
    out = example_disagreement(make_predictions({t: pattern for t in trials["trial_id"]}, np.zeros(500)), trials)
    assert list(out.columns) == EXAMPLE_DISAGREEMENT_COLUMNS
    row = out.iloc[0]
    assert (row["arch_a"], row["arch_b"], row["seeds_per_group"], row["n_examples"]) == ("d20-w1", "d8-w4", 2, 500)
    assert row["between"] == row["baseline"] == row["excess"] == 0 and row["p"] == 1.0
    assert row["testable"] and row["reason"] is None


def test_seeds_of_one_difficulty_profile_show_no_excess():
    rng = np.random.default_rng(1)
    trials = make_trials({("d20-w1", 0.5): [0, 1, 2, 3], ("d8-w4", 0.5): [0, 1, 2, 3]})
    ease = rng.beta(2, 0.5, 3000)  # per-example chance of being right, shared by both configurations
    row = example_disagreement(make_predictions(sample_correct(rng, ease, trials), np.zeros(3000)), trials).iloc[0]
    assert row["baseline"] > 0.1 and abs(row["excess"]) < 0.02
    assert row["p"] > 0.01


def test_configurations_erring_on_disjoint_examples_show_excess():
    rng = np.random.default_rng(2)
    trials = make_trials({("d20-w1", 1.0): [0, 1, 2, 3], ("d8-w4", 1.0): [0, 1, 2, 3]})
    ease_a, ease_b = np.full(1000, 0.98), np.full(1000, 0.98)
    ease_a[:100], ease_b[100:200] = 0.05, 0.05  # a fails examples 0-99, b fails 100-199
    correct = {t: rng.random(1000) < (ease_a if t.startswith("d20") else ease_b) for t in trials["trial_id"]}
    row = example_disagreement(make_predictions(correct, np.zeros(1000)), trials).iloc[0]
    assert row["excess"] > 0.1 and row["between"] > row["baseline"]
    assert row["p"] < 1e-10


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
    assert row["seeds_per_group"] == k
    assert row["between"] == pytest.approx(between.mean())
    assert row["baseline_a"] == pytest.approx(base_a.mean()) and row["baseline_b"] == pytest.approx(base_b.mean())
    assert row["excess"] == pytest.approx(between.mean() - (base_a.mean() + base_b.mean()) / 2)
    paired = stats.ttest_rel(between, (base_a + base_b) / 2, alternative="greater").pvalue
    assert row["p"] == pytest.approx(paired)


def test_a_one_seed_configuration_is_untestable_with_a_reason():
    trials = make_trials({("d8-w1", 1.0): [0], ("d8-w2", 1.0): [0, 1], ("d8-w4", 1.0): [0, 1],
                          ("d8-w1", 0.5): [0, 1]})  # another data fraction: never paired with 1.0
    correct = {t: np.arange(50) % 3 > 0 for t in trials["trial_id"]}
    out = example_disagreement(make_predictions(correct, np.zeros(50)), trials)
    assert len(out) == 3 and set(out["data_fraction"]) == {1.0}
    bad = out[out["arch_a"] == "d8-w1"]
    assert len(bad) == 2 and not bad["testable"].any()
    assert bad[["between", "baseline_a", "baseline_b", "baseline", "excess", "p"]].isna().all().all()
    assert set(bad["reason"]) == {"d8-w1 at data fraction 1 has 1 seed; disjoint seed groups need 2"}
    good = out[out["arch_a"] == "d8-w2"].iloc[0]
    assert good["testable"] and good["excess"] == 0


# ------------------------------------------------------------------------------ class_diff


def make_class_accuracy(rng: np.random.Generator, trials: pd.DataFrame, means: dict[str, np.ndarray],
                        noise: float) -> pd.DataFrame:
    """Per-seed class accuracies: the arch's per-class mean plus Gaussian noise."""
    rows = []
    for t, arch in zip(trials["trial_id"], trials["arch"]):
        acc = np.clip(means[arch] + noise * rng.standard_normal(len(means[arch])), 0, 1)
        rows.append(pd.DataFrame({"trial_id": t, "label": np.arange(len(acc)), "n_examples": 100, "accuracy": acc}))
    return pd.concat(rows, ignore_index=True)


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
    assert out.set_index("label").loc[3, "difference"] == pytest.approx(0.4, abs=0.05)
    assert out["testable"].all() and out["reason"].isna().all() and (out[["n_a", "n_b"]] == 6).all().all()


def test_without_a_planted_difference_nothing_is_significant():
    rng = np.random.default_rng(5)
    trials = make_trials({("d56-w1", 0.25): list(range(6)), ("d8-w2", 0.25): list(range(6))})
    means = np.linspace(0.5, 0.95, 20)
    out = class_diff(make_class_accuracy(rng, trials, {"d56-w1": means, "d8-w2": means}, noise=0.03), trials)
    assert len(out) == 20 and not out["significant"].any()


def test_q_values_are_scipys_bh_and_the_t_test_is_welchs():
    rng = np.random.default_rng(6)
    trials = make_trials({("x", 1.0): list(range(5)), ("y", 1.0): list(range(3))})
    means = {"x": rng.uniform(0.4, 0.9, 12), "y": rng.uniform(0.4, 0.9, 12)}
    acc = make_class_accuracy(rng, trials, means, noise=0.05)
    out = class_diff(acc, trials)
    np.testing.assert_allclose(out["q"], stats.false_discovery_control(out["p"], method="bh"))
    assert (out["q"] >= out["p"] - 1e-15).all()
    # class 0 by hand: t = (m_a - m_b) / sqrt(v_a/n_a + v_b/n_b), Welch-Satterthwaite df
    xa = acc[acc["trial_id"].str.startswith("x") & (acc["label"] == 0)]["accuracy"].to_numpy()
    xb = acc[acc["trial_id"].str.startswith("y") & (acc["label"] == 0)]["accuracy"].to_numpy()
    va, vb = xa.var(ddof=1) / len(xa), xb.var(ddof=1) / len(xb)
    t = (xa.mean() - xb.mean()) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(xa) - 1) + vb ** 2 / (len(xb) - 1))
    row = out.iloc[0]
    assert (row["mean_a"], row["mean_b"]) == (pytest.approx(xa.mean()), pytest.approx(xb.mean()))
    assert row["t"] == pytest.approx(t) and row["p"] == pytest.approx(2 * stats.t.sf(abs(t), df))


def test_a_one_seed_configuration_is_untestable_never_a_zero_difference():
    trials = make_trials({("d8-w1", 1.0): [0], ("d8-w2", 1.0): [0, 1, 2]})
    acc = make_class_accuracy(np.random.default_rng(7), trials, {"d8-w1": np.full(4, 0.8), "d8-w2": np.full(4, 0.8)},
                              noise=0.0)
    out = class_diff(acc, trials)
    assert len(out) == 4 and not out["testable"].any() and not out["significant"].any()
    assert out[["t", "p", "q"]].isna().all().all()
    assert set(out["reason"]) == {"d8-w1 at data fraction 1 has 1 seed; Welch's t-test needs 2 per configuration"}
    assert (out["n_a"] == 1).all() and (out["n_b"] == 3).all()


def test_zero_variance_classes_differ_only_when_their_values_do():
    trials = make_trials({("a", 1.0): [0, 1, 2], ("b", 1.0): [0, 1, 2]})
    acc = make_class_accuracy(np.random.default_rng(8), trials,
                              {"a": np.array([1.0, 1.0, 0.7]), "b": np.array([1.0, 0.9, 0.7])}, noise=0.0)
    acc.loc[acc["label"] == 2, "accuracy"] += np.array([0.0, 0.1, 0.2, 0.0, 0.05, 0.1])  # class 2: noisy
    out = class_diff(acc, trials).set_index("label")
    assert (out.loc[0, "t"], out.loc[0, "p"], out.loc[0, "significant"]) == (0.0, 1.0, False)
    assert (out.loc[1, "t"], out.loc[1, "p"], out.loc[1, "significant"]) == (np.inf, 0.0, True)
    assert np.isfinite(out.loc[2, "p"]) and out["testable"].all()


def test_class_diff_refuses_a_bad_alpha_and_missing_columns():
    trials = make_trials({("a", 1.0): [0, 1]})
    with pytest.raises(ValueError, match="alpha"):
        class_diff(pd.DataFrame(columns=["trial_id", "label", "accuracy"]), trials, alpha=5)
    with pytest.raises(ValueError, match=r"lacks columns \['accuracy'\]"):
        class_diff(pd.DataFrame(columns=["trial_id", "label"]), trials)


def test_a_class_flat_on_one_side_only_is_welchs_t_with_that_variance_zero_and_no_warning():
    trials = make_trials({("a", 1.0): [0, 1, 2], ("b", 1.0): [0, 1, 2]})
    acc = make_class_accuracy(np.random.default_rng(9), trials, {"a": np.array([0.9]), "b": np.array([0.7])},
                              noise=0.0)
    acc.loc[3:, "accuracy"] = [0.6, 0.7, 0.8]  # b's seeds vary; a's are all 0.9
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # scipy's "precision loss" warning is wrong here: var(a) is exactly 0
        row = class_diff(acc, trials).iloc[0]
    b = np.array([0.6, 0.7, 0.8])
    assert np.isclose(row["t"], (0.9 - b.mean()) / np.sqrt(b.var(ddof=1) / 3))  # Welch's t, var(a) = 0
