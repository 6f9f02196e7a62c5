"""The study's six claims, each checked against this sweep's tables: its numbers and a verdict.

Nguyen, Raghu & Kornblith, "Do Wide and Deep Networks Learn the Same Things?" (ICLR 2021), and
"On the Origins of the Block Structure Phenomenon in Neural Network Representations" (TMLR 2022):

1. the block structure grows with width and with depth;
2. it appears at smaller capacity when there is less data;
3. the block's layers share a dominant first principal component, and the block fades with it removed;
4. cross-seed CKA is high outside the block and low inside it;
5. wide and deep models of similar accuracy disagree more than seeds do, per example and per class;
6. the block rests on a few dominant datapoints, which differ between seeds.

Each verdict is "holds", "does not hold" or "not testable" (with why: the grid lacks a second
depth, seed, data fraction, or no model has a block). The criteria are stated in `why` with
the numbers; the thresholds below are the module's, chosen so that a verdict needs an effect
well beyond the minibatch estimator's noise (one shuffled pass is ~0.1 off the full-batch
value; ten passes came within 0.02: DESIGN.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from repsweep.analysis.blocks import CENTRAL_THRESHOLD

INPUTS = ("blocks", "cka", "pc1_pairs", "example_disagreement", "class_diff", "dominant_removal", "dominant_overlap")
HOLDS, FAILS, UNTESTABLE = "holds", "does not hold", "not testable"
MARGIN = 0.2  # CKA or first-PC share: the smallest difference a verdict counts (10x the 10-pass noise)
COS2_SHARED = 0.8  # mean squared cosine of block layers' first PCs that counts as "one shared PC"
SIMILAR_ACCURACY = 0.01  # test accuracies within 1 percentage point are "similar"
ALPHA = 0.05  # significance level of the error-pattern tests
DIFFERENT_SETS = 0.5  # mean Jaccard below this: the seeds' dominant sets differ


def _fmt(values: pd.Series) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in values.items())


def _block_fraction(trials: pd.DataFrame, blocks: pd.DataFrame) -> pd.DataFrame:
    """Per trial: the share of its layers in the block at the central threshold (0 without one)."""
    central = blocks[blocks["threshold"] == CENTRAL_THRESHOLD].set_index("trial_id")
    frac = central["fraction"].where(central["found"], 0.0)
    return trials.assign(block=trials["trial_id"].map(frac)).dropna(subset=["block"])


def _grows(trials: pd.DataFrame, blocks: pd.DataFrame) -> dict:
    t = _block_fraction(trials, blocks)
    t = t[t["data_fraction"] == t["data_fraction"].max()]
    if t.empty:
        return {"verdict": UNTESTABLE, "numbers": "", "why": "no within-model CKA yet"}
    mean = t.groupby(["depth", "width", "arch"])["block"].mean().reset_index()
    numbers = "block share of layers (all data): " + _fmt(mean.set_index("arch")["block"])
    parts, verdicts = [], []
    for axis, other in (("depth", "width"), ("width", "depth")):
        if mean[axis].nunique() < 2:
            parts.append(f"one {axis} only")
            verdicts.append(None)
            continue
        ends = mean.sort_values(axis).groupby(other)["block"].agg(["first", "last"])
        ends = ends[(ends["first"] > 0) | (ends["last"] > 0)] if axis == "width" else ends
        grows = bool(len(ends)) and bool((ends["last"] > ends["first"]).all())
        parts.append(f"{'grows' if grows else 'does not grow'} from the smallest to the largest {axis} "
                     f"({'every' if grows else 'not every'} {other} with a block)")
        verdicts.append(grows)
    testable = [v for v in verdicts if v is not None]
    verdict = UNTESTABLE if not testable else HOLDS if all(testable) and len(testable) == 2 else FAILS
    if verdict == FAILS and len(testable) == 1 and testable[0]:
        verdict = UNTESTABLE
    return {"verdict": verdict, "numbers": numbers, "why": "; ".join(parts)}


def _less_data(trials: pd.DataFrame, blocks: pd.DataFrame) -> dict:
    t = _block_fraction(trials, blocks)
    if t["data_fraction"].nunique() < 2:
        return {"verdict": UNTESTABLE, "numbers": "", "why": "one data fraction only"}
    cell = t.groupby(["data_fraction", "arch"]).agg(block=("block", "mean"), params=("params", "mean")).reset_index()
    smallest = {}
    for frac, rows in cell.groupby("data_fraction"):
        with_block = rows[rows["block"] > 0].sort_values("params")
        smallest[frac] = (with_block["arch"].iloc[0], with_block["params"].iloc[0]) if len(with_block) else None
    lo, hi = min(smallest), max(smallest)
    numbers = "; ".join(f"fraction {f:g}: smallest model with a block {s[0]} ({s[1]:,.0f} params)" if s else
                        f"fraction {f:g}: no block" for f, s in sorted(smallest.items()))
    if smallest[lo] is None:
        return {"verdict": FAILS, "numbers": numbers, "why": f"no block at data fraction {lo:g}"}
    if smallest[hi] is None or smallest[lo][1] < smallest[hi][1]:
        return {"verdict": HOLDS, "numbers": numbers, "why": "a smaller model has a block with less data"}
    return {"verdict": FAILS, "numbers": numbers, "why": "the smallest model with a block is no smaller with less data"}


def _in_block(rows: pd.DataFrame, found: pd.DataFrame, col_a: str = "layer_a", col_b: str = "layer_b") -> pd.DataFrame:
    """Rows of layer pairs whose layers both lie in trial_a's block (start, end), off the diagonal."""
    rows = rows.merge(found[["trial_id", "start", "end"]], left_on="trial_a", right_on="trial_id")
    inside = rows[col_a].between(rows["start"], rows["end"]) & rows[col_b].between(rows["start"], rows["end"])
    return rows[inside & (rows[col_a] != rows[col_b])]


def _shared_pc(found: pd.DataFrame, pc1_pairs: pd.DataFrame, cka: pd.DataFrame) -> dict:
    if found.empty:
        return {"verdict": UNTESTABLE, "numbers": "", "why": "no model has a block"}
    within = pc1_pairs[pc1_pairs["trial_a"] == pc1_pairs["trial_b"]]
    pcs = _in_block(within, found)
    kept = _in_block(cka[cka["trial_a"] == cka["trial_b"]], found)
    share_in, share_out = found["pc1_inside"].mean(), found["pc1_outside"].mean()
    cos2, with_pc1, without = pcs["pc1_cos2"].mean(), kept["cka"].mean(), pcs["cka_without_pc1"].mean()
    numbers = (f"{len(found)} models with a block: first-PC share {share_in:.2f} inside vs {share_out:.2f} outside; "
               f"PC1 cos^2 between block layers {cos2:.2f}; block CKA {with_pc1:.2f}, with PC1 removed {without:.2f}")
    shared = share_in - share_out >= MARGIN and cos2 >= COS2_SHARED
    fades = with_pc1 - without >= MARGIN
    why = (f"{'shared' if shared else 'not shared'} (share +{MARGIN} and cos^2 >= {COS2_SHARED} needed); "
           f"{'fades' if fades else 'does not fade'} without PC1 (a drop >= {MARGIN} needed)")
    return {"verdict": HOLDS if shared and fades else FAILS, "numbers": numbers, "why": why}


def _cross_seed(found: pd.DataFrame, trials: pd.DataFrame, cka: pd.DataFrame) -> dict:
    if trials.groupby(["arch", "data_fraction"])["seed"].nunique().max() < 2:
        return {"verdict": UNTESTABLE, "numbers": "", "why": "one seed per configuration"}
    if found.empty:
        return {"verdict": UNTESTABLE, "numbers": "", "why": "no model has a block"}
    config = trials.set_index("trial_id")[["arch", "data_fraction"]].apply(tuple, axis=1)
    pairs = cka[(cka["trial_a"] != cka["trial_b"]) & (cka["layer_a"] == cka["layer_b"])]
    pairs = pairs[pairs["trial_a"].map(config).eq(pairs["trial_b"].map(config))]  # same layer, other seed
    both = pd.concat([pairs, pairs.rename(columns={"trial_a": "trial_b", "trial_b": "trial_a"})])
    rows = both.merge(found[["trial_id", "start", "end"]], left_on="trial_a", right_on="trial_id")
    if rows.empty:
        return {"verdict": UNTESTABLE, "numbers": "", "why": "no cross-seed CKA of a model with a block"}
    inside = rows["layer_a"].between(rows["start"], rows["end"])
    cin, cout = rows.loc[inside, "cka"].mean(), rows.loc[~inside, "cka"].mean()
    numbers = f"cross-seed CKA of the same layer: {cin:.2f} inside the block, {cout:.2f} outside"
    holds = cout - cin >= MARGIN
    return {"verdict": HOLDS if holds else FAILS, "numbers": numbers,
            "why": f"outside must exceed inside by {MARGIN}: {'it does' if holds else 'it does not'}"}


def _wide_vs_deep(trials: pd.DataFrame, example: pd.DataFrame, classes: pd.DataFrame) -> dict:
    arch = trials.groupby(["arch", "data_fraction"]).agg(depth=("depth", "first"), width=("width", "first"),
                                                        acc=("test_acc", "mean"))
    pairs = example.copy()
    for side in ("a", "b"):
        keys = list(zip(pairs[f"arch_{side}"], pairs["data_fraction"]))
        for col in ("depth", "width", "acc"):
            pairs[f"{col}_{side}"] = arch[col].reindex(keys).to_numpy()
    opposite = np.sign(pairs["depth_a"] - pairs["depth_b"]) * np.sign(pairs["width_a"] - pairs["width_b"]) < 0
    pairs["gap"] = (pairs["acc_a"] - pairs["acc_b"]).abs()
    pairs = pairs[opposite]
    if pairs.empty:
        return {"verdict": UNTESTABLE, "numbers": "", "why": "no pair of a deeper-narrower and a wider-shallower model"}
    if not pairs["testable"].any():
        return {"verdict": UNTESTABLE, "numbers": "", "why": pairs["reason"].dropna().iloc[0]}
    pairs = pairs[pairs["testable"]]
    similar = pairs[pairs["gap"] <= SIMILAR_ACCURACY]
    chosen = similar if len(similar) else pairs.nsmallest(1, "gap")
    note = "" if len(similar) else f" (none within {SIMILAR_ACCURACY:.0%}: the closest, {chosen['gap'].iloc[0]:.1%} apart)"
    more = (chosen["excess"] > 0) & (chosen["p"] < ALPHA)
    cd = classes.merge(chosen[["arch_a", "arch_b", "data_fraction"]])
    n_sig, n_cls = int(cd["significant"].sum()), len(cd)
    numbers = (f"{len(chosen)} wide/deep pairs{note}: per-example disagreement {chosen['between'].mean():.3f} vs "
               f"seed baseline {chosen['baseline'].mean():.3f} ({int(more.sum())} of {len(chosen)} above it, "
               f"p < {ALPHA}); classes with a significant accuracy difference (BH q < {ALPHA}): {n_sig} of {n_cls}")
    holds = bool(more.all()) and n_sig > 0
    why = ("per example and per class" if holds else
           "not per example" if not more.all() else "per example but no class differs significantly")
    return {"verdict": HOLDS if holds else FAILS, "numbers": numbers, "why": why}


def _dominant(removal: pd.DataFrame, overlap: pd.DataFrame) -> dict:
    if removal.empty:
        return {"verdict": UNTESTABLE, "numbers": "", "why": "no model has a block"}
    full, dom, rnd = (removal[c].mean() for c in ("inside", "inside_without_dominant", "inside_without_random"))
    n = int(removal["n_removed"].max())
    numbers = (f"{len(removal)} blocks: CKA inside {full:.2f}, without the {n} dominant examples {dom:.2f}, "
               f"without {n} random ones {rnd:.2f}")
    rests = rnd - dom >= MARGIN
    if overlap.empty:
        return {"verdict": UNTESTABLE if rests else FAILS, "numbers": numbers,
                "why": ("the block rests on them; " if rests else "the block does not rest on them; ")
                + "no two seeds of a configuration both have a block to compare their sets"}
    jac = overlap["jaccard"].mean()
    numbers += f"; Jaccard overlap of two seeds' dominant sets {jac:.2f} ({len(overlap)} seed pairs)"
    differ = jac < DIFFERENT_SETS
    why = (f"{'rests' if rests else 'does not rest'} on them (random removal must keep {MARGIN} more CKA); "
           f"the sets {'differ' if differ else 'agree'} between seeds (Jaccard < {DIFFERENT_SETS} to differ)")
    return {"verdict": HOLDS if rests and differ else FAILS, "numbers": numbers, "why": why}


TITLES = {
    1: "The block structure grows with width and with depth",
    2: "It appears at smaller capacity when there is less data",
    3: "The block's layers share a dominant first principal component, and the block fades with it removed",
    4: "Cross-seed CKA is high outside the block and low inside it",
    5: "Wide and deep models of similar accuracy disagree more than seeds do, per example and per class",
    6: "The block rests on a few dominant datapoints, which differ between seeds",
}


def findings(tables: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """One row per claim: claim, title, verdict, numbers, why. `tables` holds INPUTS and `trials`
    (finished trials only)."""
    trials, blocks = tables["trials"], tables["blocks"]
    central = blocks[(blocks["threshold"] == CENTRAL_THRESHOLD) & blocks["found"]]
    found = central[central["trial_id"].isin(trials["trial_id"])]
    results = {
        1: _grows(trials, blocks), 2: _less_data(trials, blocks),
        3: _shared_pc(found, tables["pc1_pairs"], tables["cka"]), 4: _cross_seed(found, trials, tables["cka"]),
        5: _wide_vs_deep(trials, tables["example_disagreement"], tables["class_diff"]),
        6: _dominant(tables["dominant_removal"], tables["dominant_overlap"]),
    }
    return pd.DataFrame([{"claim": k, "title": TITLES[k], **v} for k, v in results.items()])


def lines(frame: pd.DataFrame) -> list[str]:
    """The findings as plain sentences, one per claim (what `repsweep findings` prints)."""
    return [f"({r.claim}) {r.title}: {r.verdict.upper()}. {r.numbers}{'; ' if r.numbers else ''}{r.why}."
            for r in frame.itertuples()]
