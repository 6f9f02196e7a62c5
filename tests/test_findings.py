"""The findings on constructed tables whose verdicts are known: all hold, none hold, not testable."""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd
import pytest

from repsweep.analysis.blocks import CENTRAL_THRESHOLD
from repsweep.analysis.findings import FAILS, HOLDS, UNTESTABLE, findings, lines

L = 12  # layers per model, for every architecture here


def _trials(seeds=(0, 1), fractions=(1.0, 0.5)) -> pd.DataFrame:
    rows = [{"trial_id": f"d{d}-w{w}-f{f:g}-s{s}", "arch": f"d{d}-w{w}", "depth": d, "width": w,
             "data_fraction": f, "seed": s, "test_acc": 0.95, "params": d * w * w * 1000}
            for d, w, f, s in itertools.product((8, 56), (1, 2), fractions, seeds)]
    return pd.DataFrame(rows)


def _block_size(row: pd.Series, strong: bool) -> int:
    """Planted block sizes: none at depth 8 except with half the data and width 2; growing with width."""
    if not strong:
        return 0
    if row["depth"] == 56:
        return 4 + 2 * row["width"]
    return 3 if (row["data_fraction"] == 0.5 and row["width"] == 2) else 0


def _tables(trials: pd.DataFrame, strong: bool = True) -> dict[str, pd.DataFrame]:
    blocks, cka, pcs, removal = [], [], [], []
    for _, t in trials.iterrows():
        size = _block_size(t, strong)
        start, end = L - 1 - size, L - 2  # the block ends before the logits
        found = size > 0
        blocks.append({"trial_id": t["trial_id"], "threshold": CENTRAL_THRESHOLD, "found": found,
                       "start": start if found else None, "end": end if found else None, "size": size,
                       "fraction": size / L if found else np.nan, "pc1_inside": 0.8 if found else np.nan,
                       "pc1_outside": 0.2 if found else np.nan})
        for a, b in itertools.product(range(L), repeat=2):
            inside = found and start <= a <= end and start <= b <= end
            cka.append({"trial_a": t["trial_id"], "layer_a": a, "trial_b": t["trial_id"], "layer_b": b,
                        "cka": 1.0 if a == b else 0.95 if inside else 0.5})
            pcs.append({"trial_a": t["trial_id"], "layer_a": a, "trial_b": t["trial_id"], "layer_b": b,
                        "pc1_cos2": 0.95 if inside else 0.3, "cka_without_pc1": 0.3 if inside else 0.5})
        if found:
            removal.append({"trial_id": t["trial_id"], "n_removed": 20, "inside": 0.95,
                            "inside_without_dominant": 0.4, "inside_without_random": 0.93})
    by_config = trials.groupby(["arch", "data_fraction"])
    for (arch, frac), seeds in by_config:  # cross-seed CKA of the same layer: low inside seed 0's block
        ids = sorted(seeds["trial_id"])
        for a, b in itertools.combinations(ids, 2):
            t = trials.set_index("trial_id").loc[a]
            size = _block_size(t, strong)
            for layer in range(L):
                inside = size and L - 1 - size <= layer <= L - 2
                cka.append({"trial_a": a, "layer_a": layer, "trial_b": b, "layer_b": layer,
                            "cka": 0.2 if inside else 0.9})
    archs = sorted(trials["arch"].unique())
    many_seeds = trials.groupby(["arch", "data_fraction"])["seed"].nunique().min() >= 2
    example = pd.DataFrame([{"arch_a": a, "arch_b": b, "data_fraction": f, "between": 0.1, "baseline": 0.02,
                             "excess": 0.08, "p": 1e-4, "testable": bool(many_seeds),
                             "reason": None if many_seeds else f"{a} has 1 seed"}
                            for a, b in itertools.combinations(archs, 2) for f in trials["data_fraction"].unique()])
    classes = example[["arch_a", "arch_b", "data_fraction"]].merge(pd.DataFrame({"label": range(10)}), how="cross")
    classes["significant"] = classes["label"] == 3
    overlap = pd.DataFrame([{"arch": "d56-w1", "data_fraction": 1.0, "seed_a": 0, "seed_b": 1, "jaccard": 0.1}])
    return {"trials": trials, "blocks": pd.DataFrame(blocks), "cka": pd.DataFrame(cka), "pc1_pairs": pd.DataFrame(pcs),
            "example_disagreement": example, "class_diff": classes,
            "dominant_removal": pd.DataFrame(removal, columns=["trial_id", "n_removed", "inside",
                                                               "inside_without_dominant", "inside_without_random"]),
            "dominant_overlap": overlap if strong else overlap.iloc[:0]}


def test_every_claim_holds_on_tables_built_to_show_it():
    out = findings(_tables(_trials())).set_index("claim")
    assert list(out.index) == [1, 2, 3, 4, 5, 6]
    assert (out["verdict"] == HOLDS).all(), out[["verdict", "why"]].to_string()
    assert "d56-w2 0.67" in out.loc[1, "numbers"] and "d8-w1 0.00" in out.loc[1, "numbers"]
    assert "smallest model with a block d8-w2" in out.loc[2, "numbers"]
    assert "0.20 inside the block, 0.90 outside" in out.loc[4, "numbers"]
    assert "without the 20 dominant examples 0.40, without 20 random ones 0.93" in out.loc[6, "numbers"]


def test_no_claim_holds_where_no_model_has_a_block():
    out = findings(_tables(_trials(), strong=False)).set_index("claim")
    assert out.loc[1, "verdict"] == FAILS and out.loc[2, "verdict"] == FAILS
    for claim in (3, 4, 6):
        assert out.loc[claim, "verdict"] == UNTESTABLE and out.loc[claim, "why"] == "no model has a block"


def test_a_grid_with_one_seed_and_one_fraction_says_what_it_cannot_test():
    out = findings(_tables(_trials(seeds=(0,), fractions=(1.0,)))).set_index("claim")
    assert out.loc[2, "verdict"] == UNTESTABLE and out.loc[2, "why"] == "one data fraction only"
    assert out.loc[4, "verdict"] == UNTESTABLE and out.loc[4, "why"] == "one seed per configuration"
    assert out.loc[5, "verdict"] == UNTESTABLE and "1 seed" in out.loc[5, "why"]
    text = lines(findings(_tables(_trials(seeds=(0,), fractions=(1.0,)))))
    assert len(text) == 6 and text[3].startswith("(4) Cross-seed CKA is high outside the block and low inside it: "
                                                 "NOT TESTABLE.")


@pytest.mark.parametrize("gap, verdict", [(0.005, HOLDS), (0.05, HOLDS)])
def test_wide_and_deep_pairs_are_chosen_by_similar_accuracy_or_else_the_closest(gap, verdict):
    trials = _trials()
    trials.loc[trials["arch"] == "d56-w1", "test_acc"] = 0.95 + gap
    out = findings(_tables(trials)).set_index("claim")
    assert out.loc[5, "verdict"] == verdict
    assert ("none within" in out.loc[5, "numbers"]) == (gap > 0.01)
