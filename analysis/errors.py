"""Error patterns from the predictions: per-example accuracy, disjoint-seed disagreement, per-class tests.

Nguyen, Raghu & Kornblith (ICLR 2021), section 6: do wide and deep models of similar accuracy
make the same errors? Per example, the accuracy of a group of seeds of one configuration is
compared with a disjoint group of another configuration, against the same comparison between
two disjoint groups of one configuration (their Figure 9); per class, the accuracies of the two
configurations' seeds are compared with a test and a false-discovery correction (their Figure 10).
Pure functions of frames (no Ray, no storage), in the style of `analysis/predictions.py`.

Inputs: `predictions` (trial_id, example, label, correct), `class_accuracy` (trial_id, label,
n_examples, accuracy; `predictions.class_accuracy`) and `trials` (trial_id, arch, data_fraction,
seed; finished trials only: rows of other trials are left out). A configuration is (arch,
data_fraction); its trials are its seeds, one trial per seed.

Statistics, and why:
- example_disagreement tests the per-example differences
  d_i = |acc_A1(i) - acc_B2(i)| - (|acc_A1(i) - acc_A2(i)| + |acc_B1(i) - acc_B2(i)|) / 2,
  whose mean is the reported excess, with a one-sided one-sample t-test
  (scipy.stats.ttest_1samp, H1: E[d] > 0). Its null is exactly "excess = 0"; d_i is bounded in
  [-1, 1] and there are thousands of test examples, so the t distribution is accurate (central
  limit theorem). A Wilcoxon signed-rank test would test a shift of the pseudo-median instead,
  after dropping the zeros (most examples: every model right), so its null is not "excess = 0".
  The sampling unit is the test example: the p-value is about these seeds on the test
  distribution, not about new seeds.
- class_diff: Welch's t-test per class over the seeds (scipy.stats.ttest_ind, equal_var=False),
  then Benjamini & Hochberg (JRSS B 1995) over the classes of one pair
  (scipy.stats.false_discovery_control).
- Zero variance (every seed on both sides the same, e.g. all 100% on a class): Welch's t is 0/0
  and scipy gives NaN. Here equal values give t = 0, p = 1 (no difference) and different values
  t = +-inf, p = 0: the limit of Welch's t as both variances go to 0 with the means held apart.
  The same rule gives example_disagreement's p when every d_i is equal.
- Fewer than 2 seeds: untestable, never a zero difference: testable False, the statistics NaN,
  and a reason naming the configuration.
"""

from __future__ import annotations

import logging
import warnings
from itertools import combinations

import numpy as np
import pandas as pd
from scipy import stats

logger = logging.getLogger(__name__)

__all__ = ["CLASS_DIFF_COLUMNS", "EXAMPLE_DISAGREEMENT_COLUMNS", "EXAMPLE_STATS_COLUMNS", "class_diff",
           "example_disagreement", "example_stats"]

EXAMPLE_STATS_COLUMNS = ["arch", "data_fraction", "example", "label", "accuracy", "n_seeds"]
EXAMPLE_DISAGREEMENT_COLUMNS = ["arch_a", "arch_b", "data_fraction", "seeds_per_group", "n_examples", "between",
                                "baseline_a", "baseline_b", "baseline", "excess", "p", "testable", "reason"]
CLASS_DIFF_COLUMNS = ["arch_a", "arch_b", "data_fraction", "label", "mean_a", "mean_b", "difference", "t", "p",
                      "q", "significant", "n_a", "n_b", "testable", "reason"]
TRIAL_COLUMNS = ["trial_id", "arch", "data_fraction", "seed"]
MIN_SEEDS = 2  # seeds per configuration: two disjoint groups of one; a sample variance


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


def _zero_variance_p(difference: float) -> tuple[float, float]:
    """(t, p) when the observations have no spread, `difference` apart: a difference iff it is not 0."""
    return (0.0, 1.0) if difference == 0 else (float(np.copysign(np.inf, difference)), 0.0)


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


def _group_differences(correct: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """|A1 - B2|, |A1 - A2|, |B1 - B2| per example from (4k, n) correctness rows A1, A2, B1, B2."""
    a1, a2, b1, b2 = correct.reshape(4, k, -1).mean(axis=1)  # (4, k, n) -> four (n,) group accuracies
    return np.abs(a1 - b2), np.abs(a1 - a2), np.abs(b1 - b2)


def example_disagreement(predictions: pd.DataFrame, trials: pd.DataFrame) -> pd.DataFrame:
    """Whether two configurations err on different examples more than seeds of one do.

    For every two configurations of one data fraction (arch_a < arch_b), with k = min(seeds)
    // 2 and groups A1, A2 (a's first and next k seeds by seed), B1, B2 likewise: between =
    mean_i |acc_A1(i) - acc_B2(i)|, baseline_a = mean_i |acc_A1(i) - acc_A2(i)|, baseline_b
    likewise, baseline their mean, excess = between - baseline, p one-sided (module docstring),
    over the examples every one of those seeds predicted (n_examples).

    Returns
    -------
    pd.DataFrame
        EXAMPLE_DISAGREEMENT_COLUMNS; a configuration with under 2 seeds gives testable False,
        the statistics NaN, seeds_per_group 0 and the reason.
    """
    merged = _with_config(predictions, trials, "predictions", "example", ["example", "correct"])
    rows = []
    for fraction, part in merged.groupby("data_fraction", sort=True):
        wide = part.assign(correct=part["correct"].astype(float)).pivot(
            index="trial_id", columns="example", values="correct")  # (trials, examples), NaN: not predicted
        seeds = _seed_lists(part)
        for arch_a, arch_b in combinations(sorted(seeds), 2):
            ids_a, ids_b = seeds[arch_a], seeds[arch_b]
            k = min(len(ids_a), len(ids_b)) // 2
            used = ids_a[:2 * k] + ids_b[:2 * k]
            correct = wide.loc[used].dropna(axis=1).to_numpy()  # (4k, n) on the examples all of them predicted
            row = {"arch_a": arch_a, "arch_b": arch_b, "data_fraction": fraction, "seeds_per_group": k,
                   "n_examples": correct.shape[1], "testable": False,
                   "reason": _few_seeds({arch_a: len(ids_a), arch_b: len(ids_b)}, fraction,
                                        f"disjoint seed groups need {MIN_SEEDS}")}
            if row["reason"] is None and correct.shape[1] < 2:
                row["reason"] = (f"{arch_a} and {arch_b} at data fraction {fraction:g} share "
                                 f"{correct.shape[1]} predicted test examples; the test needs 2")
            if row["reason"] is None:
                between, base_a, base_b = _group_differences(correct, k)
                diff = between - (base_a + base_b) / 2  # (n,) its mean is the excess
                if np.ptp(diff) == 0:
                    p = _zero_variance_p(float(diff[0]))[1]
                else:
                    p = float(stats.ttest_1samp(diff, 0.0, alternative="greater").pvalue)
                row.update(between=between.mean(), baseline_a=base_a.mean(), baseline_b=base_b.mean(),
                           baseline=(base_a.mean() + base_b.mean()) / 2, excess=diff.mean(), p=p, testable=True)
            rows.append(row)
    out = pd.DataFrame(rows, columns=EXAMPLE_DISAGREEMENT_COLUMNS)
    stat = ["between", "baseline_a", "baseline_b", "baseline", "excess", "p"]
    out[stat] = out[stat].astype(float)  # NaN where untestable
    return out.astype({"seeds_per_group": int, "n_examples": int, "testable": bool})


# ------------------------------------------------------------------------------ per class


def _welch(acc_a: np.ndarray, acc_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Welch's t and two-sided p per column of (seeds, classes) accuracies (NaN: no value)."""
    t, p = np.full(acc_a.shape[1], np.nan), np.full(acc_a.shape[1], np.nan)
    flat = (np.nanmax(acc_a, 0) == np.nanmin(acc_a, 0)) & (np.nanmax(acc_b, 0) == np.nanmin(acc_b, 0))
    for j in np.flatnonzero(flat):  # zero variance on both sides (module docstring)
        t[j], p[j] = _zero_variance_p(float(np.nanmax(acc_a[:, j]) - np.nanmax(acc_b[:, j])))
    if (~flat).any():
        with warnings.catch_warnings():  # one side's seeds all equal: its variance is exactly 0, yet
            warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)  # scipy warns
            res = stats.ttest_ind(acc_a[:, ~flat], acc_b[:, ~flat], axis=0, equal_var=False, nan_policy="omit")
        t[~flat], p[~flat] = np.asarray(res.statistic, dtype=float), np.asarray(res.pvalue, dtype=float)
    return t, p


def class_diff(class_accuracy: pd.DataFrame, trials: pd.DataFrame, *, alpha: float = 0.05) -> pd.DataFrame:
    """Per-class accuracy differences between every two configurations of one data fraction.

    For each class: Welch's t-test of a's per-seed accuracies against b's, then the
    Benjamini-Hochberg q-values over the testable classes of the pair (module docstring).

    Parameters
    ----------
    alpha
        False-discovery rate: significant = q < alpha.

    Returns
    -------
    pd.DataFrame
        CLASS_DIFF_COLUMNS, one row per (pair, class) with a seed on both sides. mean_a, mean_b,
        difference = mean_a - mean_b are over the seeds there are; where a side has under 2
        seeds, testable is False, t, p and q are NaN, significant False, and reason names it.
    """
    if not 0 < alpha < 1:
        raise ValueError(f"alpha is a false-discovery rate in (0, 1), got {alpha}")
    merged = _with_config(class_accuracy, trials, "class_accuracy", "label", ["label", "accuracy"])
    frames = []
    for fraction, part in merged.groupby("data_fraction", sort=True):
        wide = part.pivot(index="trial_id", columns="label", values="accuracy")  # (trials, classes)
        seeds = _seed_lists(part)
        for arch_a, arch_b in combinations(sorted(seeds), 2):
            acc_a, acc_b = wide.loc[seeds[arch_a]], wide.loc[seeds[arch_b]]  # (seeds, classes) each
            shared = acc_a.notna().any() & acc_b.notna().any()
            acc_a, acc_b = acc_a.loc[:, shared].to_numpy(), acc_b.loc[:, shared].to_numpy()
            n_a, n_b = np.isfinite(acc_a).sum(0), np.isfinite(acc_b).sum(0)  # (classes,)
            testable = (n_a >= MIN_SEEDS) & (n_b >= MIN_SEEDS)
            t, p, q = (np.full(len(testable), np.nan) for _ in range(3))
            if testable.any():
                t[testable], p[testable] = _welch(acc_a[:, testable], acc_b[:, testable])
                q[testable] = stats.false_discovery_control(p[testable], method="bh")
            mean_a, mean_b = np.nanmean(acc_a, 0), np.nanmean(acc_b, 0)
            frames.append(pd.DataFrame({
                "arch_a": arch_a, "arch_b": arch_b, "data_fraction": fraction, "label": shared.index[shared],
                "mean_a": mean_a, "mean_b": mean_b, "difference": mean_a - mean_b, "t": t, "p": p, "q": q,
                "significant": np.nan_to_num(q, nan=1.0) < alpha, "n_a": n_a, "n_b": n_b, "testable": testable,
                "reason": [None if ok else _few_seeds({arch_a: int(na), arch_b: int(nb)}, fraction,
                                                      f"Welch's t-test needs {MIN_SEEDS} per configuration")
                           for ok, na, nb in zip(testable, n_a, n_b)]}))
    if not frames:
        return pd.DataFrame(columns=CLASS_DIFF_COLUMNS)
    return pd.concat(frames, ignore_index=True)[CLASS_DIFF_COLUMNS]
