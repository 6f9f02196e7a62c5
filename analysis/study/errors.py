"""Error patterns from the predictions: per-example accuracy, disjoint-seed disagreement, per-class tests.

Nguyen, Raghu & Kornblith (ICLR 2021), section 6: do wide and deep models of similar accuracy
make the same errors? Per example, the accuracy of a group of seeds of one configuration is
compared with a disjoint group of another configuration, against the same comparison between
two disjoint groups of one configuration (their Figure 9); per class, the accuracies of the two
configurations' seeds are compared with a test and a false-discovery correction (their Figure 10).
Pure functions of frames (no Ray, no storage), in the style of `analysis/study/predictions.py`.

Inputs: `predictions` (trial_id, example, label, correct, p_true), `class_accuracy` (trial_id,
label, n_examples, accuracy, mean_p_true; `predictions.class_accuracy`) and `trials` (trial_id,
arch, data_fraction, seed; finished trials only: rows of other trials are left out). A
configuration is (arch, data_fraction); its trials are its seeds, one trial per seed.

Two measures of a model on a test example (MEASURES), each tested the same way: "correct", 0/1
as in the paper, and "p_true", the softmax probability of the true class, a graded correctness
(correct is p_true being the largest entry). Models that make a handful of errors leave 0/1
correctness nothing to differ on outside those few examples (the demo: a median of 5 errors in
360 per model), while p_true differs on every example; which one a claim reads is the
findings' choice (analysis/study/findings.py: findings.min_errors).

Statistics, and why:
- The unit of evidence is the seed (one trained model), never the test example: a p-value here
  says whether new seeds of the two configurations would differ, and is valid for counts,
  bounded accuracies and any number of seeds >= 2. Both tests permute the configuration labels
  of the models (scipy.stats.permutation_test, permutation_type "independent"): every split of
  the pooled seeds is enumerated when there are at most N_RESAMPLES of them (exact p), else
  N_RESAMPLES random splits from a fixed seed. The smallest attainable p is reported as min_p:
  2 / comb(n_a + n_b, n_a) when n_a == n_b (the statistics are symmetric in the two sides, so
  every split has a mirror), 1 / comb(n_a + n_b, n_a) otherwise, 1 / (N_RESAMPLES + 1) when
  random; with 2 seeds a side it is 1/3, so nothing is significant from 2 seeds.
- Why not Welch's t-test over seeds (as before): when every seed on both sides has the same
  value its variance is 0 and t = +-inf, p = 0, from 2 seeds. E.g. a class with 2 errors of 72
  test images over two seeds (34/36, 36/36) against 0 of 72 (36/36, 36/36) came out "p = 0",
  yet Fisher's exact test on those counts gives p = 0.50, and the permutation test p = 1.
  Nor a t-test over test examples: its p is about these seeds on the test distribution and
  shrinks with the test set however few seeds there are.
- example_disagreement: the statistic is T = mean_i |acc_a(i) - acc_b(i)| over all seeds of
  each configuration (acc: the mean of the measure over the seeds), one-sided (greater): permuting labels gives the spread two configurations
  of exchangeable seeds would show. The effect, excess, is the mean of the per-example
  differences d_i = |acc_A1(i) - acc_B2(i)| - (|acc_A1(i) - acc_A2(i)| + |acc_B1(i) - acc_B2(i)|) / 2
  on disjoint seed groups; ci_low, ci_high are a percentile bootstrap of that mean over test
  examples (scipy.stats.bootstrap): the uncertainty of the effect on this test set for these
  seeds, not a test over seeds (the p is).
- class_diff: two-sided, |mean_a - mean_b| of the per-seed class accuracies, per class, seeds
  without a value for a class left out of its test; then Benjamini & Hochberg (JRSS B 1995)
  over the testable classes of one pair (scipy.stats.false_discovery_control).
- Fewer than 2 seeds: untestable, never a zero difference: testable False, the statistics NaN,
  and a reason naming the configuration.
"""

from __future__ import annotations

import inspect
import logging
from itertools import combinations
from math import comb

import numpy as np
import pandas as pd
from scipy import stats

logger = logging.getLogger(__name__)

__all__ = ["CLASS_DIFF_COLUMNS", "EXAMPLE_DISAGREEMENT_COLUMNS", "EXAMPLE_STATS_COLUMNS", "MEASURES", "class_diff",
           "example_disagreement", "example_stats"]

EXAMPLE_STATS_COLUMNS = ["arch", "data_fraction", "example", "label", "accuracy", "n_seeds"]
EXAMPLE_DISAGREEMENT_COLUMNS = ["arch_a", "arch_b", "data_fraction", "measure", "seeds_per_group", "n_examples",
                                "errors_median", "between", "baseline_a", "baseline_b", "baseline", "excess", "p",
                                "ci_low", "ci_high", "n_seeds_a", "n_seeds_b", "min_p", "testable", "reason"]
CLASS_DIFF_COLUMNS = ["arch_a", "arch_b", "data_fraction", "measure", "label", "mean_a", "mean_b", "difference", "p",
                      "q", "min_p", "significant", "n_a", "n_b", "testable", "reason"]
# a model's measure on a test example -> its column in `predictions`, and in `class_accuracy` (the class mean)
MEASURES = {"correct": ("correct", "accuracy"), "p_true": ("p_true", "mean_p_true")}
TRIAL_COLUMNS = ["trial_id", "arch", "data_fraction", "seed"]
MIN_SEEDS = 2  # seeds per configuration: two disjoint groups of one; a split to permute
N_RESAMPLES = 9_999  # permutations: every split when there are at most this many, else this many random ones
N_BOOTSTRAP = 2_000  # bootstrap resamples of the test examples for the interval of the excess
SEED = 0  # of the random permutations and the bootstrap: the same frames give the same numbers
# scipy >= 1.15 takes `rng`; older releases `random_state` (pyproject allows scipy >= 1.11)
_RNG_KEYWORD = "rng" if "rng" in inspect.signature(stats.permutation_test).parameters else "random_state"


# ------------------------------------------------------------------------------ inputs


def _require(frame: pd.DataFrame, name: str, columns: list[str]) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{name} lacks columns {missing}: it has {list(frame.columns)}")


def _with_config(frame: pd.DataFrame, trials: pd.DataFrame, name: str, key: str, columns: list[str]) -> pd.DataFrame:
    """`frame` with each row's arch, data_fraction and seed; rows of trials not in `trials` left out."""
    _require(frame, name, ["trial_id", *columns])
    _require(trials, "trials", TRIAL_COLUMNS)
    trials = trials[TRIAL_COLUMNS]
    if trials["trial_id"].duplicated().any():
        raise ValueError(f"trials lists {sorted(trials.loc[trials['trial_id'].duplicated(), 'trial_id'])} twice")
    same = trials.duplicated(["arch", "data_fraction", "seed"], keep=False)
    if same.any():
        raise ValueError(f"trials {sorted(trials.loc[same, 'trial_id'])} share arch, data_fraction and seed: "
                         "a configuration needs one trial per seed (pass one configuration of the other axes)")
    repeated = frame.duplicated(["trial_id", key])
    if repeated.any():
        raise ValueError(f"{name} has {int(repeated.sum())} repeated (trial_id, {key}) rows, "
                         f"e.g. {frame.loc[repeated, ['trial_id', key]].iloc[0].tolist()}")
    merged = frame[["trial_id", *columns]].merge(trials, on="trial_id", how="inner", validate="many_to_one")
    if len(merged) < len(frame):
        logger.debug("%s: %d rows of trials not in `trials` left out", name, len(frame) - len(merged))
    return merged


def _seed_lists(merged: pd.DataFrame) -> dict[str, list[str]]:
    """Each arch's trial ids, sorted by seed, within one data fraction."""
    ordered = merged[["trial_id", "arch", "seed"]].drop_duplicates().sort_values(["seed", "trial_id"])
    return {arch: part["trial_id"].tolist() for arch, part in ordered.groupby("arch", sort=True)}


def _few_seeds(counts: dict[str, int], fraction: float, need: str) -> str | None:
    """Why configurations with under MIN_SEEDS seeds cannot be tested; None when all have enough."""
    few = [f"{arch} at data fraction {fraction:g} has {n} seed{'' if n == 1 else 's'}"
           for arch, n in counts.items() if n < MIN_SEEDS]
    return f"{', '.join(few)}; {need}" if few else None


def _columns(measure: str, frame: pd.DataFrame, name: str) -> tuple[str, str]:
    """The measure's (predictions column, class_accuracy column); refused where `frame` lacks its values."""
    if measure not in MEASURES:
        raise ValueError(f"measure is one of {sorted(MEASURES)}, got {measure!r}")
    column = MEASURES[measure][0 if name == "predictions" else 1]
    if column in frame.columns and frame[column].isna().any():
        trials = sorted(frame.loc[frame[column].isna(), "trial_id"].unique())
        raise ValueError(f"{name} has no {column} for {len(trials)} trials (e.g. {trials[0]}), trained before it "
                         f"was recorded: measure 'correct' reads every trial")
    return MEASURES[measure]


def _seeded() -> dict[str, np.random.Generator]:
    """A fresh generator from SEED, as scipy's keyword: each test is reproducible on its own."""
    return {_RNG_KEYWORD: np.random.default_rng(SEED)}


def _min_p(n_a: int, n_b: int) -> float:
    """Smallest p a permutation test of a statistic symmetric in the two sides can give (module docstring)."""
    splits = comb(n_a + n_b, n_a)
    if splits > N_RESAMPLES:
        return 1 / (N_RESAMPLES + 1)
    return (2 if n_a == n_b else 1) / splits


# ------------------------------------------------------------------------------ per example


def example_stats(predictions: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Accuracy of each test example over a configuration's seeds.

    Returns one row per (arch, data_fraction, example): label, accuracy (mean of `correct`
    over the seeds), n_seeds (EXAMPLE_STATS_COLUMNS).
    """
    merged = _with_config(predictions, trials, "predictions", "example", ["example", "label", "correct"])
    labels = merged.groupby("example")["label"].nunique()
    if (labels > 1).any():
        raise ValueError(f"examples {labels[labels > 1].index[:5].tolist()} have different labels in "
                         "different trials: the trials must share one test set")
    out = merged.assign(correct=merged["correct"].astype(float)).groupby(
        ["arch", "data_fraction", "example"], as_index=False, sort=True).agg(
        label=("label", "first"), accuracy=("correct", "mean"), n_seeds=("trial_id", "size"))
    return out[EXAMPLE_STATS_COLUMNS]


def _group_differences(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """|A1 - B2|, |A1 - A2|, |B1 - B2| per example from (4k, n) rows of the measure, groups A1, A2, B1, B2."""
    a1, a2, b1, b2 = scores.reshape(4, k, -1).mean(axis=1)  # (4, k, n) -> four (n,) group accuracies
    return np.abs(a1 - b2), np.abs(a1 - a2), np.abs(b1 - b2)


def _disagreement_p(scores: np.ndarray, n_a: int) -> float:
    """One-sided permutation p of T = mean_i |acc_a(i) - acc_b(i)| over the models (rows) of `scores`.

    Rows 0..n_a-1 are a's seeds, the rest b's. The samples permuted are row indices; weights
    +1/n_a, -1/n_b give a batch of splits' per-example accuracy differences in one product.
    """
    def spread(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        weights = np.zeros(x.shape[:-1] + (len(scores),))  # (..., models)
        np.put_along_axis(weights, x, 1 / x.shape[-1], axis=-1)
        np.put_along_axis(weights, y, -1 / y.shape[-1], axis=-1)
        return np.abs(weights @ scores).mean(axis=-1)

    res = stats.permutation_test((np.arange(n_a), np.arange(n_a, len(scores))), spread, vectorized=True,
                                 permutation_type="independent", alternative="greater", n_resamples=N_RESAMPLES,
                                 batch=max(1, 2 ** 22 // scores.shape[1]), **_seeded())
    return float(res.pvalue)


def _interval(diff: np.ndarray, confidence: float) -> tuple[float, float]:
    """Percentile bootstrap interval of mean(diff) over its entries (test examples); the point if all equal."""
    if np.ptp(diff) == 0:
        return float(diff.mean()), float(diff.mean())
    res = stats.bootstrap((diff,), np.mean, n_resamples=N_BOOTSTRAP, confidence_level=confidence,
                          method="percentile", vectorized=True, batch=max(1, 2 ** 22 // len(diff)), **_seeded())
    return float(res.confidence_interval.low), float(res.confidence_interval.high)


def example_disagreement(predictions: pd.DataFrame, trials: pd.DataFrame, *, confidence: float = 0.95,
                         measure: str = "correct") -> pd.DataFrame:
    """Whether two configurations err on different examples more than seeds of one do.

    acc below is the mean over seeds of the measure (MEASURES: 0/1 correctness or the true
    class's probability). For every two configurations of one data fraction (arch_a < arch_b), with k = min(seeds)
    // 2 and groups A1, A2 (a's first and next k seeds by seed), B1, B2 likewise: between =
    mean_i |acc_A1(i) - acc_B2(i)|, baseline_a = mean_i |acc_A1(i) - acc_A2(i)|, baseline_b
    likewise, baseline their mean, excess = between - baseline with its bootstrap interval
    (ci_low, ci_high), and p the permutation test over all n_seeds_a + n_seeds_b seeds (module
    docstring), over the examples every seed of the two predicted (n_examples); errors_median is
    the median number of those examples a model of the two gets wrong, whatever the measure.

    Parameters
    ----------
    confidence
        Level of the interval of the excess.
    measure
        "correct" or "p_true" (MEASURES).

    Returns
    -------
    pd.DataFrame
        EXAMPLE_DISAGREEMENT_COLUMNS; a configuration with under 2 seeds gives testable False,
        the statistics NaN, seeds_per_group 0 and the reason.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence is a level in (0, 1), got {confidence}")
    column = _columns(measure, predictions, "predictions")[0]
    merged = _with_config(predictions, trials, "predictions", "example", list(dict.fromkeys(["example", "correct",
                                                                                                column])))
    rows = []
    for fraction, part in merged.groupby("data_fraction", sort=True):
        wide, wrong = (part.assign(v=values).pivot(index="trial_id", columns="example", values="v")
                       for values in (part[column].astype(float), 1.0 - part["correct"].astype(float)))
        seeds = _seed_lists(part)  # wide, wrong: (trials, examples), NaN: not predicted
        for arch_a, arch_b in combinations(sorted(seeds), 2):
            ids_a, ids_b = seeds[arch_a], seeds[arch_b]
            n_a, n_b, k = len(ids_a), len(ids_b), min(len(ids_a), len(ids_b)) // 2
            shared = wide.loc[ids_a + ids_b].dropna(axis=1)  # the examples all of them predicted
            scores = shared.to_numpy()  # (n_a + n_b, n): the measure per model and example
            row = {"arch_a": arch_a, "arch_b": arch_b, "data_fraction": fraction, "measure": measure,
                   "seeds_per_group": k, "n_examples": scores.shape[1],
                   "errors_median": float(np.median(wrong.loc[ids_a + ids_b, shared.columns].sum(axis=1))),
                   "n_seeds_a": n_a, "n_seeds_b": n_b, "testable": False,
                   "reason": _few_seeds({arch_a: n_a, arch_b: n_b}, fraction,
                                        f"disjoint seed groups need {MIN_SEEDS}")}
            if row["reason"] is None and scores.shape[1] < 2:
                row["reason"] = (f"{arch_a} and {arch_b} at data fraction {fraction:g} share "
                                 f"{scores.shape[1]} predicted test examples; the test needs 2")
            if row["reason"] is None:
                groups = np.concatenate([scores[:2 * k], scores[n_a:n_a + 2 * k]])  # A1, A2, B1, B2
                between, base_a, base_b = _group_differences(groups, k)
                diff = between - (base_a + base_b) / 2  # (n,) its mean is the excess
                row["ci_low"], row["ci_high"] = _interval(diff, confidence)
                row.update(between=between.mean(), baseline_a=base_a.mean(), baseline_b=base_b.mean(),
                           baseline=(base_a.mean() + base_b.mean()) / 2, excess=diff.mean(),
                           p=_disagreement_p(scores, n_a), min_p=_min_p(n_a, n_b), testable=True)
            rows.append(row)
    out = pd.DataFrame(rows, columns=EXAMPLE_DISAGREEMENT_COLUMNS)
    stat = ["errors_median", "between", "baseline_a", "baseline_b", "baseline", "excess", "p", "ci_low", "ci_high",
            "min_p"]
    out[stat] = out[stat].astype(float)  # NaN where untestable
    return out.astype({"seeds_per_group": int, "n_examples": int, "n_seeds_a": int, "n_seeds_b": int,
                       "testable": bool})


# ------------------------------------------------------------------------------ per class


def _abs_mean_difference(x: np.ndarray, y: np.ndarray, axis: int) -> np.ndarray:
    return np.abs(x.mean(axis=axis) - y.mean(axis=axis))


def _class_p(acc_a: np.ndarray, acc_b: np.ndarray) -> np.ndarray:
    """Two-sided permutation p per column of (seeds, classes) accuracies (NaN: no value, left out).

    Classes with values from the same seeds are tested together (scipy's `axis`).
    """
    p = np.full(acc_a.shape[1], np.nan)
    present = np.isfinite(np.concatenate([acc_a, acc_b]))  # (seeds_a + seeds_b, classes)
    patterns, which = np.unique(present, axis=1, return_inverse=True)
    for j, rows in enumerate(patterns.T):
        cols = np.asarray(which).ravel() == j
        a, b = acc_a[rows[:len(acc_a)]][:, cols], acc_b[rows[len(acc_a):]][:, cols]
        res = stats.permutation_test((a, b), _abs_mean_difference, vectorized=True, axis=0,
                                     permutation_type="independent", alternative="greater",
                                     n_resamples=N_RESAMPLES, **_seeded())
        p[cols] = res.pvalue
    return p


def class_diff(class_accuracy: pd.DataFrame, trials: pd.DataFrame, *, alpha: float = 0.05,
               measure: str = "correct") -> pd.DataFrame:
    """Per-class accuracy differences between every two configurations of one data fraction.

    The measure (MEASURES) is a seed's class accuracy ("correct") or its mean true-class
    probability over the class ("p_true"). For each class: a permutation test of a's per-seed
    values against b's (two-sided,
    min_p its smallest attainable p), then the Benjamini-Hochberg q-values over the testable
    classes of the pair (module docstring).

    Parameters
    ----------
    alpha
        False-discovery rate: significant = q < alpha.
    measure
        "correct" or "p_true" (MEASURES).

    Returns
    -------
    pd.DataFrame
        CLASS_DIFF_COLUMNS, one row per (pair, class) with a seed on both sides. mean_a, mean_b,
        difference = mean_a - mean_b are over the seeds there are; where a side has under 2
        seeds, testable is False, p, q and min_p are NaN, significant False, and reason names it.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha is a false-discovery rate in (0, 1), got {alpha}")
    column = _columns(measure, class_accuracy, "class_accuracy")[1]
    merged = _with_config(class_accuracy, trials, "class_accuracy", "label", ["label", column])
    frames = []
    for fraction, part in merged.groupby("data_fraction", sort=True):
        wide = part.pivot(index="trial_id", columns="label", values=column)  # (trials, classes)
        seeds = _seed_lists(part)
        for arch_a, arch_b in combinations(sorted(seeds), 2):
            acc_a, acc_b = wide.loc[seeds[arch_a]], wide.loc[seeds[arch_b]]  # (seeds, classes) each
            shared = acc_a.notna().any() & acc_b.notna().any()
            acc_a, acc_b = acc_a.loc[:, shared].to_numpy(), acc_b.loc[:, shared].to_numpy()
            n_a, n_b = np.isfinite(acc_a).sum(0), np.isfinite(acc_b).sum(0)  # (classes,)
            testable = (n_a >= MIN_SEEDS) & (n_b >= MIN_SEEDS)
            p, q = np.full(len(testable), np.nan), np.full(len(testable), np.nan)
            if testable.any():
                p[testable] = _class_p(acc_a[:, testable], acc_b[:, testable])
                q[testable] = stats.false_discovery_control(p[testable], method="bh")
            min_p = [_min_p(int(na), int(nb)) if ok else np.nan for ok, na, nb in zip(testable, n_a, n_b)]
            mean_a, mean_b = np.nanmean(acc_a, 0), np.nanmean(acc_b, 0)
            frames.append(pd.DataFrame({
                "arch_a": arch_a, "arch_b": arch_b, "data_fraction": fraction, "measure": measure,
                "label": shared.index[shared],
                "mean_a": mean_a, "mean_b": mean_b, "difference": mean_a - mean_b, "p": p, "q": q,
                "min_p": np.asarray(min_p, dtype=float), "significant": np.nan_to_num(q, nan=1.0) < alpha,
                "n_a": n_a, "n_b": n_b, "testable": testable,
                "reason": [None if ok else _few_seeds({arch_a: int(na), arch_b: int(nb)}, fraction,
                                                      f"the permutation test needs {MIN_SEEDS} per configuration")
                           for ok, na, nb in zip(testable, n_a, n_b)]}))
    if not frames:
        return pd.DataFrame(columns=CLASS_DIFF_COLUMNS)
    return pd.concat(frames, ignore_index=True)[CLASS_DIFF_COLUMNS]
