"""The findings on constructed tables whose verdicts are known: shown, contradicted, inconclusive, not testable."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pandas as pd
import pytest

from repsweep.analysis.study.blocks import CENTRAL_THRESHOLD
from repsweep.analysis.study.errors import class_diff, example_disagreement
from repsweep.analysis.study.evidence import CONTRADICTED, HOLDS, INCONCLUSIVE, UNTESTABLE
from repsweep.analysis.study.findings import findings, lines
from repsweep.analysis.study.predictions import class_accuracy
from repsweep.analysis.study.findings_spec import FindingsSpec

L = 12  # layers per model (the last the logits), for every architecture here
DEPTHS, WIDTHS = (8, 20, 56), (1, 2)


def _trials(seeds=(0, 1, 2, 3), fractions=(1.0, 0.25)) -> pd.DataFrame:
    rows = [{"trial_id": f"d{d}-w{w}-f{f:g}-s{s}", "arch": f"d{d}-w{w}", "depth": d, "width": w,
             "data_fraction": f, "seed": s, "test_acc": 0.95, "params": d * w * w * 1000, "status": "done",
             "excluded": False, "exclusion_reason": None}
            for d, w, f, s in itertools.product(DEPTHS, WIDTHS, fractions, seeds)]
    return pd.DataFrame(rows)


def _strength(t: pd.Series, effect: float) -> float:
    """A model's planted late first-PC share: grows with depth, width and less data (times `effect`)."""
    noise = 0.02 * ((t["seed"] * 7 + t["depth"]) % 5 - 2)  # a small spread between seeds, no randomness
    return 0.15 + effect * (0.004 * t["depth"] + 0.15 * (t["width"] - 1) + 0.2 * (1 - t["data_fraction"])) + noise


def _tables(trials: pd.DataFrame, effect: float = 1.0) -> dict[str, pd.DataFrame]:
    """Tables in which every claim holds when effect > 0, reverses when effect < 0 (claims 1-3, 6a)."""
    pca, blocks, pc1_pairs, removal, cka, dom = [], [], [], [], [], []
    for _, t in trials.iterrows():
        late = _strength(t, effect)
        pc1 = np.full(L, 0.1)
        pc1[L // 2 - 1:L - 1] = late  # the last half of the hidden layers (5..10), as findings reads it
        pca += [{"trial_id": t["trial_id"], "layer": i, "pc1_fraction": v} for i, v in enumerate(pc1)]
        block = late > 0.5
        start, end = 6, 10
        blocks.append({"trial_id": t["trial_id"], "threshold": CENTRAL_THRESHOLD, "found": block,
                       "start": start if block else None, "end": end if block else None,
                       "fraction": 5 / L if block else 0.0, "pc1_inside": late if block else np.nan,
                       "pc1_outside": 0.1 if block else np.nan, "carried_by_pc1": block})
        drop = 0.3 * effect + 0.01 * t["seed"] if block else 0.01 * t["seed"]
        removal.append({"trial_id": t["trial_id"], "role": "block" if block else "control", "start": start,
                        "end": end, "inside": 0.95, "outside": 0.45, "contrast": 0.5,
                        "inside_without_pc1": 0.9, "outside_without_pc1": 0.4 + drop,
                        "contrast_without_pc1": 0.5 - drop})
        if block:
            pc1_pairs += [{"trial_a": t["trial_id"], "layer_a": a, "trial_b": t["trial_id"], "layer_b": b,
                           "pc1_cos2": 0.95} for a, b in itertools.permutations(range(start, end + 1), 2)]
            lost = 0.3 * effect + 0.02 * t["seed"]
            dom.append({"trial_id": t["trial_id"], "n_removed": 20, "inside": 0.95, "outside": 0.45,
                        "inside_without_dominant": 0.95, "outside_without_dominant": 0.45 + lost,
                        "inside_without_random": 0.95, "outside_without_random": 0.46})
    for (arch, frac), g in trials.groupby(["arch", "data_fraction"]):  # cross-seed CKA: low inside the block
        has_block = {r["trial_id"]: _strength(r, effect) > 0.5 for _, r in g.iterrows()}
        for a, b in itertools.combinations(sorted(g["trial_id"]), 2):
            for layer in range(L):
                inside = (has_block[a] or has_block[b]) and 6 <= layer <= 10
                cka.append({"trial_a": a, "layer_a": layer, "trial_b": b, "layer_b": layer,
                            "cka": (0.3 if effect > 0 else 0.95) if inside else 0.85 + 0.01 * (len(cka) % 3)})
        for layer in range(L):  # within-model diagonal rows (the logits' index comes from them)
            cka += [{"trial_a": tid, "layer_a": layer, "trial_b": tid, "layer_b": layer, "cka": 1.0}
                    for tid in g["trial_id"]]
    tables = {"trials": trials, "pca": pd.DataFrame(pca), "blocks": pd.DataFrame(blocks),
              "pc1_pairs": pd.DataFrame(pc1_pairs, columns=["trial_a", "layer_a", "trial_b", "layer_b", "pc1_cos2"]),
              "pc1_removal": pd.DataFrame(removal), "cka": pd.DataFrame(cka), "dominant_removal": pd.DataFrame(
                  dom, columns=["trial_id", "n_removed", "inside", "outside", "inside_without_dominant",
                                "outside_without_dominant", "inside_without_random", "outside_without_random"])}
    tables.update(_errors(trials))
    with_block = tables["blocks"][tables["blocks"]["carried_by_pc1"]].merge(trials, on="trial_id")
    overlap = [{"arch": arch, "data_fraction": frac, "seed_a": a, "seed_b": b, "jaccard": 0.1 + 0.02 * a}
               for (arch, frac), g in with_block.groupby(["arch", "data_fraction"])
               for a, b in itertools.combinations(sorted(g["seed"]), 2)]
    tables["dominant_overlap"] = pd.DataFrame(overlap, columns=["arch", "data_fraction", "seed_a", "seed_b", "jaccard"])
    return tables


def _errors(trials: pd.DataFrame, *, p: float = 1e-3, min_p: float = 2 / 70, low: float = 0.01,
            high: float = 0.05, q3: float = 0.01) -> dict[str, pd.DataFrame]:
    seeds = trials.groupby(["arch", "data_fraction"])["seed"].nunique().min()
    testable = bool(seeds >= 2)
    pairs = [{"arch_a": a, "arch_b": b, "data_fraction": f, "measure": "correct", "n_examples": 360,
              "errors_median": 30.0, "between": 0.05, "baseline": 0.02,
              "excess": 0.03, "ci_low": low, "ci_high": high, "p": p, "min_p": min_p, "n_seeds_a": seeds,
              "n_seeds_b": seeds, "testable": testable, "reason": None if testable else f"{a} has 1 seed"}
             for a, b in itertools.combinations(sorted(trials["arch"].unique()), 2)
             for f in trials["data_fraction"].unique()]
    example = pd.DataFrame(pairs)
    classes = example[["arch_a", "arch_b", "data_fraction", "measure", "testable"]].merge(
        pd.DataFrame({"label": range(10)}), how="cross")
    classes = classes.assign(mean_a=0.95, mean_b=np.where(classes["label"] == 3, 0.80, 0.95), p=0.5, q=0.5,
                             min_p=min_p)
    classes["difference"] = classes["mean_a"] - classes["mean_b"]
    classes.loc[classes["label"] == 3, ["p", "q"]] = q3
    return {"example_disagreement": example, "class_diff": classes}


def _out(tables: dict[str, pd.DataFrame], **settings) -> pd.DataFrame:
    return findings(tables, FindingsSpec(**settings)).set_index(["claim", "part"])


def test_every_claim_holds_on_tables_built_to_show_it_with_its_interval_and_n():
    out = _out(_tables(_trials()))
    verdicts = out.loc[out.index.get_level_values("claim") > 0]
    assert (verdicts["verdict"] == HOLDS).all(), verdicts[["verdict", "numbers", "resolve"]].to_string()
    assert (verdicts["claim_verdict"] == HOLDS).all()
    assert out.loc[(1, "a"), "n"] == 2 * 2 * 4  # one depth series per width, fraction and seed
    assert out.loc[(1, "b"), "n"] == 3 * 2 * 4
    assert out.loc[(2, ""), "n"] == 6 * 4  # each architecture and seed at both fractions
    for key in [(1, "a"), (1, "b"), (2, ""), (3, "a"), (3, "b"), (4, ""), (6, "a"), (6, "b")]:
        row = out.loc[key]
        assert row["ci_low"] > 0 and row["ci_low"] <= row["effect"] <= row["ci_high"], key
        assert len(row["units"]) == len(row["values"]) == (row["n"] if key != (3, "b") else len(row["units"]))
    # the raw units recompute the effect: mean of the block group minus mean of the control group
    b = out.loc[(3, "b")]
    assert b["effect"] == pytest.approx(np.mean(b["values"]) - np.mean(b["control_values"]))
    assert out.loc[(5, "a"), "p"] == pytest.approx(1e-3) and "1 of 10 classes" in out.loc[(5, "b"), "numbers"]
    text = lines(findings(_tables(_trials())))
    assert text[0].startswith("Trials: 48 of 48 finished trials")
    assert any(t.startswith("(1) The block structure grows with depth and with width: HOLDS.") for t in text)
    assert any("95% CI [" in t and "n = 16 model pairs: holds" in t for t in text)


def test_claim_2_names_the_training_budget_and_the_steps_each_fraction_trained():
    trials = _trials().assign(n_train=lambda t: (1437 * t["data_fraction"]).astype(int), batch_size=128,
                              epochs_done=40, budget="epochs")
    numbers = _out(_tables(trials)).loc[(2, ""), "numbers"]
    assert "training budget epochs, SGD steps per model 1.0 480, 0.25 120" in numbers and "a confound" in numbers
    steps = trials.assign(epochs_done=lambda t: 40 * 12 // np.ceil(t["n_train"] / 128), budget="steps")
    numbers = _out(_tables(steps)).loc[(2, ""), "numbers"]
    assert "training budget steps, SGD steps per model 1.0 480, 0.25 480" in numbers and "confound" not in numbers


def test_the_reverse_is_called_contradicted_not_merely_unshown():
    out = _out(_tables(_trials(), effect=-1.0))
    assert out.loc[(1, "a"), "verdict"] == CONTRADICTED and out.loc[(1, "a"), "ci_high"] < 0
    assert out.loc[(2, ""), "verdict"] == CONTRADICTED
    assert out.loc[(1, "a"), "claim_verdict"] == CONTRADICTED


def test_an_effect_the_seeds_cannot_resolve_is_inconclusive_with_what_would_resolve_it():
    tables = _tables(_trials())
    tables.update(_errors(_trials(), p=1 / 3, min_p=1 / 3, low=-0.01, high=0.05, q3=0.6))
    out = _out(tables)
    assert out.loc[(5, "a"), "verdict"] == INCONCLUSIVE and out.loc[(5, "b"), "verdict"] == INCONCLUSIVE
    assert "cannot reach p < 0.05 (smallest p 0.33); 4 seeds per configuration can" in out.loc[(5, "a"), "resolve"]
    assert out.loc[(5, "a"), "claim_verdict"] == INCONCLUSIVE


def _wide_deep_errors(seeds: int, rng_seed: int) -> dict[str, pd.DataFrame]:
    """Real error tables (analysis/study/errors.py) for d20-w1 against d8-w2 on 1,000 test examples: both
    right 90% of the time, but on examples 0-99 one is 7.5 points easier and the other harder
    (a planted per-example difference below the noise of 4 seeds)."""
    rng = np.random.default_rng(rng_seed)
    trials = pd.DataFrame([{"trial_id": f"{a}-f1-s{s}", "arch": a, "data_fraction": 1.0, "seed": s}
                           for a in ("d20-w1", "d8-w2") for s in range(seeds)])
    ease = {"d20-w1": np.full(1000, 0.9), "d8-w2": np.full(1000, 0.9)}
    ease["d20-w1"][:100] += 0.075
    ease["d8-w2"][:100] -= 0.075
    labels = np.arange(1000) % 10
    preds = pd.concat([pd.DataFrame({"trial_id": t.trial_id, "example": np.arange(1000), "label": labels,
                                     "correct": rng.random(1000) < ease[t.arch]}) for t in trials.itertuples()])
    return {"example_disagreement": example_disagreement(preds, trials),
            "class_diff": class_diff(class_accuracy(preds), trials)}


def test_an_excess_below_the_noise_names_the_seeds_that_then_resolve_it():
    tables = _tables(_trials())
    tables.update(_wide_deep_errors(4, rng_seed=1))
    row = _out(tables).loc[(5, "a")]
    assert row["verdict"] == INCONCLUSIVE and row["p"] > 0.05
    need = int(re.search(r"about (\d+) seeds per configuration \(now 4\)", row["resolve"]).group(1))
    assert 4 < need <= 40, row["resolve"]
    assert re.search(r"or about [\d,]+ test examples \(now 1000\)", row["resolve"]), row["resolve"]

    tables.update(_wide_deep_errors(need, rng_seed=2))  # new seeds, as many as it said
    again = _out(tables).loc[(5, "a")]
    assert again["verdict"] == HOLDS and again["p"] < 0.05 and again["n"] == 2 * need


def _sure_and_unsure(seeds: int) -> dict[str, pd.DataFrame]:
    """Real error tables, both measures, for d20-w1 against d8-w2 on 360 test examples that every model gets
    right: d20-w1 is sure (p_true 0.95) of examples 0-179 and hesitant (0.6) of the rest, d8-w2 the reverse."""
    rng = np.random.default_rng(5)
    trials = pd.DataFrame([{"trial_id": f"{a}-f1-s{s}", "arch": a, "data_fraction": 1.0, "seed": s}
                           for a in ("d20-w1", "d8-w2") for s in range(seeds)])
    first = np.arange(360) < 180
    sure = {"d20-w1": np.where(first, 0.95, 0.6), "d8-w2": np.where(first, 0.6, 0.95)}
    preds = pd.concat([pd.DataFrame({"trial_id": t.trial_id, "example": np.arange(360), "label": np.arange(360) % 10,
                                     "correct": True, "p_true": np.clip(sure[t.arch] + 0.05 * rng.standard_normal(360),
                                                                        0.51, 1)}) for t in trials.itertuples()])
    measures = ("correct", "p_true")
    return {"example_disagreement": pd.concat([example_disagreement(preds, trials, measure=m) for m in measures]),
            "class_diff": pd.concat([class_diff(class_accuracy(preds), trials, measure=m) for m in measures])}


def test_models_that_rarely_err_are_compared_by_the_true_class_probability():
    tables = _tables(_trials())
    tables.update(_sure_and_unsure(6))
    out = _out(tables)
    row = out.loc[(5, "a")]
    assert row["verdict"] == HOLDS and row["p"] == pytest.approx(2 / 924), row["numbers"]
    assert ("measure: the true class's probability (a median of 0 test errors per model, under "
            "findings.min_errors = 20)") in row["numbers"]
    assert out.loc[(5, "b"), "numbers"].startswith("the true class's probability: ")
    by_correct = _out(tables, min_errors=0).loc[(5, "a")]  # 0/1 correctness: nothing to differ on
    assert by_correct["verdict"] == INCONCLUSIVE and by_correct["effect"] == 0 and by_correct["p"] == 1
    assert "measure: 0/1 correctness" in by_correct["numbers"]
    assert "the seeds show no excess (p = 1.00)" in by_correct["resolve"]


def test_a_grid_with_one_seed_and_one_fraction_says_what_it_cannot_test():
    out = _out(_tables(_trials(seeds=(0,), fractions=(1.0,))))
    assert out.loc[(2, ""), "verdict"] == UNTESTABLE and out.loc[(2, ""), "resolve"] == "the grid has one data fraction"
    assert out.loc[(4, ""), "verdict"] == UNTESTABLE and out.loc[(4, ""), "resolve"] == "one seed per configuration"
    assert out.loc[(5, "a"), "verdict"] == UNTESTABLE and "1 seed" in out.loc[(5, "a"), "resolve"]
    text = lines(findings(_tables(_trials(seeds=(0,), fractions=(1.0,)))))
    assert "    (4) cross-seed CKA of the same layer, in neither seed's block minus in either's, per configuration: " \
           "not testable: one seed per configuration." in text


def test_no_block_anywhere_leaves_the_first_pc_claims_untestable():
    tables = _tables(_trials())
    tables["blocks"] = tables["blocks"].assign(found=False, carried_by_pc1=False)
    out = _out(tables)
    for key in [(3, "a"), (3, "b"), (4, ""), (6, "a"), (6, "b")]:
        assert out.loc[key, "verdict"] == UNTESTABLE, key


def test_a_trial_that_did_not_train_is_left_out_and_named():
    trials = _trials()
    bad = "d56-w2-f1-s0"
    trials.loc[trials["trial_id"] == bad, ["excluded", "exclusion_reason", "test_acc"]] = [True, "test accuracy 0.64", 0.64]
    out = _out(_tables(trials))
    assert out.loc[(0, ""), "n"] == 47 and f"{bad} (test accuracy 0.64)" in out.loc[(0, ""), "numbers"]
    for key in [(1, "a"), (1, "b"), (3, "a"), (3, "b"), (6, "a")]:
        assert not any(bad in u for u in out.loc[key, "units"]), key
        assert not any(bad in u for u in out.loc[key, "control_units"]), key
    assert "d20-w2 - d8-w2 f1 s0" in out.loc[(1, "a"), "units"]  # its depth series ends one depth short


def test_a_run_not_carried_by_the_first_pc_is_not_a_block_for_the_first_pc_claims():
    tables = _tables(_trials())
    tables["blocks"]["carried_by_pc1"] = False  # runs of alike layers, no dominant first PC
    out = _out(tables)
    assert out.loc[(3, "a"), "verdict"] == HOLDS  # a run's first-PC share can still be compared
    assert out.loc[(3, "b"), "verdict"] == UNTESTABLE and "no model has a block" in out.loc[(3, "b"), "resolve"]
