"""The study's six claims, each measured as the paper measured it, over independent models, with a verdict.

Nguyen, Raghu & Kornblith, "Do Wide and Deep Networks Learn the Same Things?" (ICLR 2021), and
"On the Origins of the Block Structure Phenomenon in Neural Network Representations" (TMLR 2022):

1. the block structure grows with depth (a) and with width (b);
2. it appears at smaller capacity when there is less data;
3. the block's layers share a dominant first principal component (a), and the block fades with
   it removed (b);
4. cross-seed CKA is high outside the block and low inside it;
5. wide and deep models of similar accuracy make different errors, per example (a) and per class (b);
6. the block rests on a few dominant datapoints (a), which differ between seeds (b).

Every part is one statistic over independent units, signed so that positive is what the claim
says, summarised by `analysis/study/evidence.py` (mean, interval, n, verdict: holds, contradicted,
inconclusive with what would resolve it, or not testable). The statistics, per unit:

- 1, 2: a model's *late first-PC share* (mean first-PC share of variance over the last half of
  its hidden layers, logits left out): DESIGN.md found it separates the regimes where a
  threshold on runs of alike layers does not. 1a: per series of models equal in all but depth
  (width, data fraction, seed), the deepest minus the shallowest; 1b the same across width.
  2: per architecture and seed, the smallest data fraction minus all the data; the onset (the
  smallest model with a block in half its seeds) per fraction is reported beside it, with
  whether the grid has a smaller model for the onset to move to.
- 3a: per model with a run of alike layers (analysis/study/blocks.py), first-PC share inside minus
  outside. 3b: per model with a block carried by its first PC (`blocks.carried_by_pc1`), the
  drop of the block's contrast (its distinctness, `blocks.span_contrast`) when each layer's
  first PC is removed, against the same drop on the same relative layers of the models
  without one (`pc1_removal` table); residual layers stay alike whatever is removed, so the
  mean CKA inside a block is not the statistic (the paper's heatmaps lose the block's
  distinctness, not its inner similarity).
- 4: per configuration with a block in one of its seeds, over its seed pairs, cross-seed CKA of
  the same layer in neither seed's block minus in either's (the logits left out).
- 5a: the closest-in-accuracy deeper-narrower / wider-shallower pair: per-example disagreement
  in excess of disjoint seed groups, its interval by bootstrap over test examples and its
  p by a permutation test over seeds (analysis/study/errors.py). 5b: that pair's classes, each a
  permutation test over seeds, Benjamini-Hochberg across classes. Both read 0/1 correctness, or,
  where the pair's models make a median of under `findings.min_errors` test errors, the true
  class's probability (errors.MEASURES): a few errors leave 0/1 correctness nothing to differ on.
- 6a: per model with a block, the contrast without as many random examples (the mean over
  RANDOM_DRAWS random sets, orchestrator/comparison/analyses.py) minus the contrast
  without its dominant ones (`dominant_removal`); 6b: per configuration, over its seed pairs,
  `findings.same_sets` minus the Jaccard overlap of the two dominant sets.

Trials that did not train (`trials.excluded`, analysis/study/quality.py) are left out, and claim 0
says which. Settings: the spec's `findings` section (analysis/study/findings_spec.py: FindingsSpec).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from repsweep.analysis.study.evidence import (CONTRADICTED, HOLDS, INCONCLUSIVE, UNTESTABLE, Evidence, combine,
                                        difference_effect, mean_effect, units_for_p, units_needed)
from repsweep.analysis.study.findings_spec import FindingsSpec

INPUTS = ("blocks", "cka", "pca", "pc1_pairs", "pc1_removal", "example_disagreement", "class_diff",
          "dominant_removal", "dominant_overlap")
TITLES = {
    0: "The trials the findings rest on",
    1: "The block structure grows with depth and with width",
    2: "It appears at smaller capacity when there is less data",
    3: "The block's layers share a dominant first principal component, and the block fades with it removed",
    4: "Cross-seed CKA is high outside the block and low inside it",
    5: "Wide and deep models of similar accuracy make different errors, per example and per class",
    6: "The block rests on a few dominant datapoints, which differ between seeds",
}
NAN = float("nan")


def _none(unit: str, why: str) -> Evidence:
    return Evidence(NAN, NAN, NAN, 0, unit, UNTESTABLE, why)


def _row(claim: int, part: str, statistic: str, ev: Evidence, numbers: str = "",
         units: dict[str, float] | None = None, control: dict[str, float] | None = None) -> dict[str, Any]:
    units, control = units or {}, control or {}
    return {"claim": claim, "part": part, "title": TITLES[claim], "statistic": statistic, "effect": ev.effect,
            "ci_low": ev.ci_low, "ci_high": ev.ci_high, "n": ev.n, "unit": ev.unit, "p": ev.p,
            "verdict": ev.verdict, "numbers": numbers, "resolve": ev.resolve,
            "units": list(units), "values": [float(v) for v in units.values()],
            "control_units": list(control), "control_values": [float(v) for v in control.values()]}


def _fmt(values: pd.Series, digits: int = 2) -> str:
    return ", ".join(f"{k} {v:.{digits}f}" for k, v in values.items())


# ------------------------------------------------------------------ per-model statistics

def _models(trials: pd.DataFrame, pca: pd.DataFrame, blocks: pd.DataFrame, s: FindingsSpec) -> pd.DataFrame:
    """Kept trials with late_pc1 (late first-PC share), run (a run found) and block (carried by PC1)."""
    late = {}
    for tid, rows in pca.groupby("trial_id"):
        hidden = rows["layer"].max()  # the last layer is the logits: hidden layers are 0..L-2
        late[tid] = rows.loc[rows["layer"].between(hidden // 2, hidden - 1), "pc1_fraction"].mean()
    central = blocks[blocks["threshold"] == s.block_threshold].set_index("trial_id")
    out = trials.assign(late_pc1=trials["trial_id"].map(late),
                        run=trials["trial_id"].map(central["found"]).astype("boolean").fillna(False).astype(bool),
                        block=trials["trial_id"].map(central["carried_by_pc1"]).astype("boolean").fillna(False)
                        .astype(bool))
    out["block_share"] = np.where(out["block"], out["trial_id"].map(central["fraction"]), 0.0)
    return out


def _blocks_of(models: pd.DataFrame, blocks: pd.DataFrame, column: str, s: FindingsSpec) -> pd.DataFrame:
    """The rows at findings.block_threshold of the models whose `column` (run or block) is True."""
    central = blocks[blocks["threshold"] == s.block_threshold]
    return central[central["trial_id"].isin(models.loc[models[column], "trial_id"])]


# ------------------------------------------------------------------------- claims 1, 2

def _axis_series(models: pd.DataFrame, axis: str, s: FindingsSpec) -> tuple[Evidence, dict[str, float]]:
    """Per series equal in every axis but `axis`: late_pc1 of its largest value minus its smallest."""
    others = [a for a in ("depth", "width", "data_fraction", "seed") if a != axis]
    units = {}
    for (*_, frac, seed), g in models.dropna(subset=["late_pc1"]).groupby(others):
        if g[axis].nunique() >= 2:
            g = g.sort_values(axis)
            lo, hi = g.iloc[0], g.iloc[-1]
            units[f"{hi['arch']} - {lo['arch']} f{frac:g} s{seed}"] = hi["late_pc1"] - lo["late_pc1"]
    if not units:
        return _none("model pairs", f"the grid has one {axis}" if models[axis].nunique() < 2 else
                     f"no two finished models differ in {axis} alone"), units
    return mean_effect(np.array(list(units.values())), unit="model pairs", confidence=s.confidence,
                       power=s.power), units


def _grows(models: pd.DataFrame, s: FindingsSpec) -> list[dict]:
    full = models[models["data_fraction"] == models["data_fraction"].max()]
    by_arch = full.groupby("arch", sort=False)
    numbers = (f"all data, mean over seeds: late first-PC share {_fmt(by_arch['late_pc1'].mean())}; "
               f"block share of layers {_fmt(by_arch['block_share'].mean())}")
    rows = []
    for part, axis in (("a", "depth"), ("b", "width")):
        ev, units = _axis_series(models, axis, s)
        rows.append(_row(1, part, f"late first-PC share, largest minus smallest {axis} (others equal)", ev,
                         numbers if part == "a" else "", units))
    return rows


def _onset(models: pd.DataFrame) -> str:
    """The smallest model (by parameters) with a block in at least half its seeds, per data fraction."""
    cells = models.groupby(["data_fraction", "arch"]).agg(rate=("block", "mean"), params=("params", "mean"))
    smallest = models.groupby("arch")["params"].mean().idxmin()
    parts = []
    for frac, rows in cells.groupby(level="data_fraction", sort=False):
        with_block = rows[rows["rate"] >= 0.5].sort_values("params")
        parts.append((frac, with_block.index[0][1] if len(with_block) else None))
    parts.sort(key=lambda p: -p[0])
    text = "; ".join(f"fraction {f:g}: {a or 'none'}" for f, a in parts)
    full_onset = parts[0][1]
    if full_onset == smallest:
        text += f" (with all data the onset is already the grid's smallest model, {smallest}: it cannot move lower)"
    return "onset, the smallest model with a block in half its seeds: " + text


def _less_data(models: pd.DataFrame, s: FindingsSpec) -> list[dict]:
    stat = "late first-PC share, smallest data fraction minus all the data (same architecture and seed)"
    fractions = sorted(models["data_fraction"].unique())
    if len(fractions) < 2:
        return [_row(2, "", stat, _none("model pairs", "the grid has one data fraction"))]
    lo, hi = fractions[0], fractions[-1]
    units = {}
    for (arch, seed), g in models.dropna(subset=["late_pc1"]).groupby(["arch", "seed"]):
        by_frac = g.set_index("data_fraction")["late_pc1"]
        if lo in by_frac and hi in by_frac:
            units[f"{arch} s{seed} f{lo:g} - f{hi:g}"] = by_frac[lo] - by_frac[hi]
    by_frac = models.groupby("data_fraction")
    numbers = (f"mean over models per fraction: late first-PC share {_fmt(by_frac['late_pc1'].mean())}; "
               f"block share {_fmt(by_frac['block_share'].mean())}; {_onset(models)}; {_budget(models)}")
    ev = (mean_effect(np.array(list(units.values())), unit="model pairs", confidence=s.confidence, power=s.power)
          if units else _none("model pairs", "no architecture and seed trained at both fractions"))
    return [_row(2, "", stat, ev, numbers, units)]


def _budget(models: pd.DataFrame) -> str:
    """The training budget the fractions had (`training.budget`), and the SGD steps each fraction trained."""
    budgets = set(models["budget"].fillna("epochs")) if "budget" in models else {"epochs"}
    text = "training budget " + " and ".join(sorted(budgets))
    if {"n_train", "epochs_done", "batch_size"} <= set(models.columns):
        steps = models["epochs_done"] * np.ceil(models["n_train"] / models["batch_size"])
        per_frac = steps.groupby(models["data_fraction"]).mean().sort_index(ascending=False)
        text += ", SGD steps per model " + _fmt(per_frac, 0)
    if budgets == {"epochs"}:
        text += (" (with budget epochs a smaller fraction trains fewer steps, a confound of data with training; "
                 "training.budget: steps gives every fraction the steps of all the data)")
    return text


# --------------------------------------------------------------------------- claim 3

def _shared_pc(models: pd.DataFrame, blocks: pd.DataFrame, pc1_pairs: pd.DataFrame,
               removal: pd.DataFrame, s: FindingsSpec) -> list[dict]:
    runs = _blocks_of(models, blocks, "run", s)
    stat_a = "first-PC share inside the run of alike layers minus outside it, per model"
    if runs.empty:
        return [_row(3, "a", stat_a, _none("models", "no model has a run of alike layers")),
                _row(3, "b", "drop of the block's contrast with PC1 removed", _none("models", "no model has a block"))]
    units_a = dict(zip(runs["trial_id"], runs["pc1_inside"] - runs["pc1_outside"]))
    ev_a = mean_effect(np.array(list(units_a.values())), unit="models", confidence=s.confidence, power=s.power)
    pc_blocks = _blocks_of(models, blocks, "block", s)
    within = pc1_pairs[(pc1_pairs["trial_a"] == pc1_pairs["trial_b"]) & (pc1_pairs["layer_a"] != pc1_pairs["layer_b"])]
    inner = within.merge(pc_blocks[["trial_id", "start", "end"]], left_on="trial_a", right_on="trial_id")
    inner = inner[inner["layer_a"].between(inner["start"], inner["end"]) & inner["layer_b"].between(inner["start"],
                                                                                                     inner["end"])]
    numbers_a = (f"{len(runs)} models with a run, {len(pc_blocks)} of them carried by a first PC with share >= "
                 f"{s.dominant_pc1:g} (blocks): share {runs['pc1_inside'].mean():.2f} inside vs "
                 f"{runs['pc1_outside'].mean():.2f} outside")
    if len(inner):
        numbers_a += f"; PC1 cos^2 between a block's layers {inner['pc1_cos2'].mean():.2f}"
    rows = [_row(3, "a", stat_a, ev_a, numbers_a, units_a)]

    stat_b = "drop of the block's contrast with each layer's PC1 removed, blocks minus controls (models without one)"
    kept = removal[removal["trial_id"].isin(models["trial_id"])]
    is_block = kept["trial_id"].isin(pc_blocks["trial_id"]) & (kept["role"] == "block")
    b, c = kept[is_block], kept[~is_block & (kept["role"] == "control")]
    block_units = dict(zip(b["trial_id"], b["contrast"] - b["contrast_without_pc1"]))
    control_units = dict(zip(c["trial_id"], c["contrast"] - c["contrast_without_pc1"]))
    if not block_units:
        return rows + [_row(3, "b", stat_b, _none("models", f"no model has a block (first-PC share >= "
                                                             f"{s.dominant_pc1:g} inside a run)"))]
    numbers_b = (f"contrast in {len(b)} blocks {b['contrast'].mean():.2f} -> {b['contrast_without_pc1'].mean():.2f} "
                 f"without PC1 (inside {b['inside'].mean():.2f} -> {b['inside_without_pc1'].mean():.2f}, outside "
                 f"{b['outside'].mean():.2f} -> {b['outside_without_pc1'].mean():.2f})")
    if len(control_units) >= 2:
        numbers_b += (f"; in {len(c)} controls {c['contrast'].mean():.2f} -> {c['contrast_without_pc1'].mean():.2f}")
        ev_b = difference_effect(np.array(list(block_units.values())), np.array(list(control_units.values())),
                                 unit="models", confidence=s.confidence, power=s.power)
    else:
        numbers_b += "; under 2 models without a block to control with: the drop is tested against 0"
        stat_b = "drop of the block's contrast with each layer's PC1 removed, per model with a block"
        ev_b = mean_effect(np.array(list(block_units.values())), unit="models", confidence=s.confidence,
                           power=s.power)
    return rows + [_row(3, "b", stat_b, ev_b, numbers_b, block_units, control_units)]


# --------------------------------------------------------------------------- claim 4

def _cross_seed(models: pd.DataFrame, blocks: pd.DataFrame, cka: pd.DataFrame, s: FindingsSpec) -> list[dict]:
    stat = "cross-seed CKA of the same layer, in neither seed's block minus in either's, per configuration"
    if models.groupby(["arch", "data_fraction"])["seed"].nunique().max() < 2:
        return [_row(4, "", stat, _none("configurations", "one seed per configuration"))]
    spans = _blocks_of(models, blocks, "block", s).set_index("trial_id")[["start", "end"]]
    if spans.empty:
        return [_row(4, "", stat, _none("configurations", "no model has a block"))]
    config = models.set_index("trial_id")[["arch", "data_fraction"]].apply(tuple, axis=1)
    pairs = cka[(cka["trial_a"] != cka["trial_b"]) & (cka["layer_a"] == cka["layer_b"])
                & cka["trial_a"].isin(config.index) & cka["trial_b"].isin(config.index)]
    pairs = pairs[pairs["trial_a"].map(config) == pairs["trial_b"].map(config)]
    last = cka[cka["trial_a"] == cka["trial_b"]].groupby("trial_a")["layer_a"].max()  # the logits
    units, inside_all, outside_all = {}, [], []
    for key, g in pairs.groupby(pairs["trial_a"].map(config)):
        per_pair = []
        for (a, b), rows in g.groupby(["trial_a", "trial_b"]):
            if a not in spans.index and b not in spans.index:
                continue
            rows = rows[rows["layer_a"] < last.get(a, np.inf)]
            either = np.zeros(len(rows), dtype=bool)
            for t in (a, b):
                if t in spans.index:
                    either |= rows["layer_a"].between(spans.loc[t, "start"], spans.loc[t, "end"]).to_numpy()
            if either.any() and (~either).any():
                cin, cout = rows["cka"][either].mean(), rows["cka"][~either].mean()
                per_pair.append(cout - cin)
                inside_all.append(cin)
                outside_all.append(cout)
        if per_pair:
            units[f"{key[0]} f{key[1]:g}"] = float(np.mean(per_pair))
    if not units:
        return [_row(4, "", stat, _none("configurations", "no cross-seed CKA of a model with a block"))]
    numbers = (f"mean over seed pairs: {np.mean(inside_all):.2f} inside either block, {np.mean(outside_all):.2f} "
               f"in neither ({len(inside_all)} seed pairs)")
    ev = mean_effect(np.array(list(units.values())), unit="configurations", confidence=s.confidence, power=s.power)
    return [_row(4, "", stat, ev, numbers, units)]


# --------------------------------------------------------------------------- claim 5

def _wide_vs_deep(models: pd.DataFrame, example: pd.DataFrame, classes: pd.DataFrame, s: FindingsSpec) -> list[dict]:
    stat_a = "per-example disagreement in excess of disjoint seed groups (closest-in-accuracy wide/deep pair)"
    stat_b = "classes whose accuracy differs (permutation test over seeds, Benjamini-Hochberg q)"
    alpha = 1 - s.confidence
    arch = models.groupby(["arch", "data_fraction"]).agg(depth=("depth", "first"), width=("width", "first"),
                                                        acc=("test_acc", "mean"))
    pairs = example[example["measure"] == "correct"].copy()  # the pair is chosen on accuracy, whatever the measure
    for side in ("a", "b"):
        keys = list(zip(pairs[f"arch_{side}"], pairs["data_fraction"]))
        for col in ("depth", "width", "acc"):
            pairs[f"{col}_{side}"] = arch[col].reindex(keys).to_numpy()
    pairs = pairs[np.sign(pairs["depth_a"] - pairs["depth_b"]) * np.sign(pairs["width_a"] - pairs["width_b"]) < 0]
    if pairs.empty:
        why = "no pair of a deeper-narrower and a wider-shallower model"
        return [_row(5, "a", stat_a, _none("seeds", why)), _row(5, "b", stat_b, _none("seeds", why))]
    if not pairs["testable"].any():
        why = str(pairs["reason"].dropna().iloc[0])
        return [_row(5, "a", stat_a, _none("seeds", why)), _row(5, "b", stat_b, _none("seeds", why))]
    pairs = pairs[pairs["testable"]].assign(gap=lambda d: (d["acc_a"] - d["acc_b"]).abs(),
                                            seeds=lambda d: d["n_seeds_a"] + d["n_seeds_b"])
    similar = pairs[pairs["gap"] <= s.similar_accuracy]
    pick = (similar if len(similar) else pairs).sort_values(["seeds", "gap"], ascending=[False, True]).iloc[0]
    name = f"{pick['arch_a']} vs {pick['arch_b']} f{pick['data_fraction']:g}"
    note = (f"{len(similar)} pairs within {s.similar_accuracy:g} accuracy" if len(similar) else
            f"none within {s.similar_accuracy:g} accuracy: the closest, {pick['gap']:.3f} apart")
    pick, measure_note = _measured(pick, example, s)
    n_a, n_b, seeds = int(pick["n_seeds_a"]), int(pick["n_seeds_b"]), int(pick["seeds"])
    low, high, p, min_p = (float(pick[c]) for c in ("ci_low", "ci_high", "p", "min_p"))
    if high < 0:
        v = CONTRADICTED
    elif low > 0 and p < alpha:
        v = HOLDS
    else:
        v = INCONCLUSIVE
    more = _seeds_for(alpha)
    resolve = "" if v != INCONCLUSIVE else _resolve_excess(pick, alpha, more, s)
    ev_a = Evidence(float(pick["excess"]), low, high, seeds, "seeds", v, resolve, p)
    numbers_a = (f"{name} ({note}; test accuracy {pick['acc_a']:.3f} and {pick['acc_b']:.3f}; {measure_note}): disagreement "
                 f"{pick['between']:.4f} against seed baseline {pick['baseline']:.4f}, p = {p:.3f} (permutation "
                 f"over {n_a} + {n_b} seeds), interval over {int(pick['n_examples'])} test examples")
    rows = [_row(5, "a", stat_a, ev_a, numbers_a, {name: float(pick["excess"])})]

    cd = classes[(classes["arch_a"] == pick["arch_a"]) & (classes["arch_b"] == pick["arch_b"])
                 & (classes["data_fraction"] == pick["data_fraction"]) & (classes["measure"] == pick["measure"])
                 & classes["testable"]]
    if cd.empty:
        return rows + [_row(5, "b", stat_b, _none("seeds", f"no testable class for {name}"))]
    sig = cd[cd["q"] < alpha]
    top = cd.loc[cd["difference"].abs().idxmax()]
    v = HOLDS if len(sig) else INCONCLUSIVE  # no class below q is not shown to be equal
    resolve = "" if len(sig) else _resolve_classes(cd, n_a, n_b, alpha, more, s)
    ev_b = Evidence(float(len(sig)), NAN, NAN, seeds, "seeds", v, resolve)
    numbers_b = (f"{_MEASURE_NAMES[pick['measure']]}: {len(sig)} of {len(cd)} classes at q < {alpha:g}; largest "
                 f"difference class {int(top['label'])}: "
                 f"{top['mean_a']:.3f} vs {top['mean_b']:.3f} (p {top['p']:.2f}, q {top['q']:.2f})")
    return rows + [_row(5, "b", stat_b, ev_b, numbers_b, dict(zip(cd["label"].astype(str), cd["difference"])))]


_MEASURE_NAMES = {"correct": "0/1 correctness", "p_true": "the true class's probability"}
_EXCESS = ["measure", "n_examples", "between", "baseline", "excess", "p", "ci_low", "ci_high", "min_p"]


def _measured(pick: pd.Series, example: pd.DataFrame, s: FindingsSpec) -> tuple[pd.Series, str]:
    """The pair's row of the measure claim 5 reads: 0/1 correctness, or the true class's probability where the
    pair's models make a median of under `findings.min_errors` test errors; and a note saying which and why."""
    errors = float(pick["errors_median"])
    if errors >= s.min_errors:
        return pick, f"measure: {_MEASURE_NAMES['correct']}"
    few = f"a median of {errors:g} test errors per model, under findings.min_errors = {s.min_errors}"
    other = example[(example["arch_a"] == pick["arch_a"]) & (example["arch_b"] == pick["arch_b"])
                    & (example["data_fraction"] == pick["data_fraction"]) & (example["measure"] == "p_true")
                    & example["testable"]]
    if other.empty:
        return pick, f"measure: {_MEASURE_NAMES['correct']} ({few}, but no true-class probability was recorded)"
    pick = pick.copy()
    pick[_EXCESS] = other.iloc[0][_EXCESS]
    return pick, f"measure: {_MEASURE_NAMES['p_true']} ({few})"


def _resolve_excess(pick: pd.Series, alpha: float, more: int, s: FindingsSpec) -> str:
    """What would decide an inconclusive excess: seeds (from the permutation p, `units_for_p`) and
    test examples (from the bootstrap interval's spread, `units_needed`)."""
    n_a, n_b, p, min_p = int(pick["n_seeds_a"]), int(pick["n_seeds_b"]), float(pick["p"]), float(pick["min_p"])
    n_now, n_ex = min(n_a, n_b), int(pick["n_examples"])
    excess, low, high = (float(pick[c]) for c in ("excess", "ci_low", "ci_high"))
    if min_p >= alpha:
        return (f"with {n_a} and {n_b} seeds the permutation test over seeds cannot reach p < {alpha:g} (smallest "
                f"p {min_p:.2f}); {more} seeds per configuration can")
    need = units_for_p(p, n_now, alpha=alpha, power=s.power)
    seeds = (f"about {max(need, more)} seeds per configuration (now {n_now}) at the measured p = {p:.2f}"
             if need else f"the seeds show no excess (p = {p:.2f}): more seeds would not show one")
    se = (high - low) / (2 * stats.norm.isf((1 - s.confidence) / 2))  # the bootstrap's standard error
    examples = units_needed(excess, se * math.sqrt(n_ex), confidence=s.confidence, power=s.power) if se > 0 else None
    return seeds + (f"; or about {examples:,} test examples (now {n_ex}) at the measured excess {excess:+.4f}"
                    if examples and excess > 0 else f"; the excess over {n_ex} test examples is {excess:+.4f}")


def _resolve_classes(cd: pd.DataFrame, n_a: int, n_b: int, alpha: float, more: int, s: FindingsSpec) -> str:
    """What would decide "no class differs": Benjamini-Hochberg rejects a class once the smallest p
    is below alpha / (classes), and `units_for_p` says at how many seeds the smallest would be."""
    smallest, floor = float(cd["p"].min()), float(cd["min_p"].min())
    if floor >= alpha:
        return (f"with {n_a} and {n_b} seeds no class test can reach p < {alpha:g} (smallest p {floor:.2f}); "
                f"{more} seeds per configuration can")
    need = units_for_p(smallest, min(n_a, n_b), alpha=alpha / len(cd), power=s.power, two_sided=True)
    if need is None:
        return f"no class at q < {alpha:g}, and no class differs at all (smallest p {smallest:.2f})"
    return (f"no class at q < {alpha:g} (smallest p {smallest:.3f} of {len(cd)} classes): about "
            f"{max(need, more)} seeds per configuration (now {min(n_a, n_b)}) at the measured p")


def _seeds_for(alpha: float) -> int:
    """Seeds per configuration at which an exact two-group permutation test can reach p < alpha: 2/C(2s, s) < alpha."""
    s = 2
    while 2 / math.comb(2 * s, s) >= alpha:
        s += 1
    return s


# --------------------------------------------------------------------------- claim 6

def _dominant(models: pd.DataFrame, removal: pd.DataFrame, overlap: pd.DataFrame, s: FindingsSpec) -> list[dict]:
    stat_a = "block contrast without as many random examples minus without the dominant ones, per model"
    stat_b = f"findings.same_sets ({s.same_sets:g}) minus the Jaccard overlap of two seeds' dominant sets, per configuration"
    blocks = set(models.loc[models["block"], "trial_id"])
    r = removal[removal["trial_id"].isin(blocks)].set_index("trial_id")
    if r.empty:
        why = "no model has a block"
        return [_row(6, "a", stat_a, _none("models", why)), _row(6, "b", stat_b, _none("configurations", why))]
    contrast = {k: r[f"inside{k}"] - r[f"outside{k}"] for k in ("", "_without_dominant", "_without_random")}
    units_a = (contrast["_without_random"] - contrast["_without_dominant"]).to_dict()
    n = int(r["n_removed"].max())
    numbers_a = (f"{len(r)} blocks: contrast {contrast[''].mean():.2f}, without the {n} dominant examples "
                 f"{contrast['_without_dominant'].mean():.2f}, without {n} random ones "
                 f"{contrast['_without_random'].mean():.2f}{_draws(r)} (inside {r['inside'].mean():.2f}, "
                 f"{r['inside_without_dominant'].mean():.2f}, {r['inside_without_random'].mean():.2f})")
    ev_a = mean_effect(np.array(list(units_a.values())), unit="models", confidence=s.confidence, power=s.power)
    rows = [_row(6, "a", stat_a, ev_a, numbers_a, units_a)]
    if overlap.empty:
        return rows + [_row(6, "b", stat_b, _none("configurations", "no two seeds of a configuration both have a block"))]
    per_config = overlap.groupby(["arch", "data_fraction"])["jaccard"].mean()
    units_b = {f"{a} f{f:g}": s.same_sets - j for (a, f), j in per_config.items()}
    numbers_b = f"Jaccard {overlap['jaccard'].mean():.2f} over {len(overlap)} seed pairs in {len(per_config)} configurations"
    ev_b = mean_effect(np.array(list(units_b.values())), unit="configurations", confidence=s.confidence, power=s.power)
    return rows + [_row(6, "b", stat_b, ev_b, numbers_b, units_b)]


def _draws(r: pd.DataFrame) -> str:
    """How many random sets the control's mean is over, and its spread between them."""
    if "random_draws" not in r or r["random_draws"].isna().all():
        return ""
    return (f" (mean of {int(r['random_draws'].max())} random draws per model, their sd "
            f"{r['contrast_without_random_sd'].mean():.3f})")


# ------------------------------------------------------------------------------ all

def _trials_row(trials: pd.DataFrame, kept: pd.DataFrame) -> dict:
    out = trials[~trials["trial_id"].isin(kept["trial_id"])]
    numbers = f"{len(kept)} of {len(trials)} finished trials"
    if len(out):
        numbers += "; left out, did not train: " + "; ".join(
            f"{r.trial_id} ({r.exclusion_reason})" for r in out.itertuples())
    ev = Evidence(NAN, NAN, NAN, len(kept), "trials", "")
    return _row(0, "", "finished trials that trained (analysis/study/quality.py)", ev, numbers, {})


def findings(tables: dict[str, pd.DataFrame], settings: FindingsSpec | None = None) -> pd.DataFrame:
    """One row per part of each claim (the `findings` table's columns, analysis/tables/schemas.py).

    `tables` holds INPUTS and `trials` (finished trials, with `excluded` where the comparison set it).
    """
    s = settings or FindingsSpec()
    trials = tables["trials"]
    excluded = trials["excluded"].astype("boolean").fillna(False).astype(bool) if "excluded" in trials else False
    kept = trials[~excluded] if "excluded" in trials else trials
    models = _models(kept, tables["pca"], tables["blocks"], s)
    rows = [_trials_row(trials, kept), *_grows(models, s), *_less_data(models, s),
            *_shared_pc(models, tables["blocks"], tables["pc1_pairs"], tables["pc1_removal"], s),
            *_cross_seed(models, tables["blocks"], tables["cka"], s),
            *_wide_vs_deep(models, tables["example_disagreement"], tables["class_diff"], s),
            *_dominant(models, tables["dominant_removal"], tables["dominant_overlap"], s)]
    frame = pd.DataFrame(rows)
    claim_verdict = {c: ("" if c == 0 else combine(list(g["verdict"]))) for c, g in frame.groupby("claim")}
    return frame.assign(claim_verdict=frame["claim"].map(claim_verdict), confidence=s.confidence)


def lines(frame: pd.DataFrame) -> list[str]:
    """The findings as plain sentences (what `repsweep findings` prints): per claim its verdict, then
    each part's effect, interval, n and verdict, its numbers and what would resolve it."""
    out = []
    for claim, g in frame.sort_values(["claim", "part"]).groupby("claim"):
        first = g.iloc[0]
        if claim == 0:
            out.append(f"Trials: {first['numbers']}.")
            continue
        out.append(f"({claim}) {first['title']}: {first['claim_verdict'].upper()}.")
        for r in g.itertuples():
            label = f"({claim}{r.part})" if r.part else f"({claim})"
            if r.verdict == UNTESTABLE:
                out.append(f"    {label} {r.statistic}: not testable: {r.resolve}.")
                continue
            interval = (f", {r.confidence:.0%} CI [{r.ci_low:+.3f}, {r.ci_high:+.3f}]"
                        if np.isfinite(r.ci_low) else "")
            p = f", p = {r.p:.3f}" if np.isfinite(r.p) else ""
            text = f"    {label} {r.statistic}: {r.effect:+.3f}{interval}{p}, n = {r.n} {r.unit}: {r.verdict}."
            if r.numbers:
                text += f" {r.numbers}."
            if r.resolve:
                text += f" To resolve: {r.resolve}."
            out.append(text)
    return out
