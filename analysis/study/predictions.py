"""Statistics of the models' predictions: per-class accuracy, pair disagreement, the seed baseline.

Pure functions of frames (no Ray, no storage): the comparison stage writes their results as
the derived tables `class_accuracy` and `disagreement`, and the `disagreement` chart draws
`disagreement_cells`. Nguyen, Raghu & Kornblith (ICLR 2021), section 6: two architectures
"make different errors" when they disagree more than two seeds of one architecture do.
"""

from __future__ import annotations

from collections.abc import Iterable

import pandas as pd

DISAGREEMENT_COLUMNS = ["trial_a", "trial_b", "pair_kind", "n_examples", "agreement", "both_wrong",
                        "only_a_wrong", "only_b_wrong"]


def class_accuracy(predictions: pd.DataFrame) -> pd.DataFrame:
    """Accuracy of each trial on each class, and its mean true-class probability: columns trial_id,
    label, n_examples, accuracy, mean_p_true (NaN for trials trained before p_true was recorded)."""
    p_true = predictions["p_true"] if "p_true" in predictions.columns else float("nan")
    acc = predictions.assign(correct=predictions["correct"].astype(float), p_true=p_true).groupby(
        ["trial_id", "label"]).agg(n_examples=("correct", "size"), accuracy=("correct", "mean"),
                                   mean_p_true=("p_true", "mean")).reset_index()
    return acc.astype({"accuracy": float, "mean_p_true": float})


def pair_disagreement(predictions: pd.DataFrame, pairs: Iterable[tuple[str, str, str]]) -> pd.DataFrame:
    """Agreement of each (trial_a, trial_b, kind) pair on the examples of trial_a.

    agreement: share of examples with the same prediction; both_wrong, only_a_wrong,
    only_b_wrong: shares of examples each of the two gets wrong (DISAGREEMENT_COLUMNS).
    """
    by_trial = {t: p.set_index("example") for t, p in predictions.groupby("trial_id")}
    rows = []
    for ta, tb, kind in pairs:
        a, b = by_trial[ta], by_trial[tb].reindex(by_trial[ta].index)
        ca, cb = a["correct"].to_numpy(dtype=bool), b["correct"].to_numpy(dtype=bool)
        rows.append({"trial_a": ta, "trial_b": tb, "pair_kind": kind, "n_examples": len(a),
                     "agreement": float((a["prediction"] == b["prediction"]).mean()),
                     "both_wrong": float((~ca & ~cb).mean()), "only_a_wrong": float((~ca & cb).mean()),
                     "only_b_wrong": float((ca & ~cb).mean())})
    return pd.DataFrame(rows, columns=DISAGREEMENT_COLUMNS)


def disagreement_cells(disagreement: pd.DataFrame, trials: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Mean disagreement between every two architectures of one data fraction, and its seed baseline.

    `disagreement` holds trial_a, trial_b, agreement; `trials` trial_id, arch, data_fraction.
    Returns one row per (data_fraction, arch_a, arch_b), both ways round: disagreement (1 -
    agreement, mean over the seed pairs), seed_pairs, baseline (the mean of the two
    architectures' between-seed disagreement; NaN without two seeds) and excess (disagreement
    - baseline); and the number of pairs left out because they span two data fractions.
    """
    trials = trials.set_index("trial_id")
    pairs = disagreement[(disagreement["trial_a"] != disagreement["trial_b"])
                         & disagreement["trial_a"].isin(trials.index) & disagreement["trial_b"].isin(trials.index)]
    pairs = pairs.assign(disagreement=1 - pairs["agreement"])[["trial_a", "trial_b", "disagreement"]]
    same = (trials.loc[pairs["trial_a"], "data_fraction"].to_numpy()
            == trials.loc[pairs["trial_b"], "data_fraction"].to_numpy())
    across = int((~same).sum())
    pairs = pairs[same]
    arch = trials["arch"]
    both = pd.concat([pairs.assign(arch_a=pairs["trial_a"].map(arch), arch_b=pairs["trial_b"].map(arch)),
                      pairs.assign(arch_a=pairs["trial_b"].map(arch), arch_b=pairs["trial_a"].map(arch))])
    both["data_fraction"] = both["trial_a"].map(trials["data_fraction"])
    cells = both.groupby(["data_fraction", "arch_a", "arch_b"], as_index=False).agg(
        disagreement=("disagreement", "mean"), seed_pairs=("disagreement", "size"))
    diagonal = cells["arch_a"] == cells["arch_b"]
    cells.loc[diagonal, "seed_pairs"] //= 2  # a same-architecture pair went in both ways round
    baseline = cells[diagonal].set_index(["data_fraction", "arch_a"])["disagreement"]
    base_a = baseline.reindex(list(zip(cells["data_fraction"], cells["arch_a"]))).to_numpy()
    base_b = baseline.reindex(list(zip(cells["data_fraction"], cells["arch_b"]))).to_numpy()
    cells["baseline"] = (base_a + base_b) / 2
    cells["excess"] = cells["disagreement"] - cells["baseline"]
    return cells, across

