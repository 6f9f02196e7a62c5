"""The study's analyses as comparison steps: each one's inputs, its computation, its table.

The computations live in `analysis/` (pure functions of arrays and frames); this module only
says what each one reads and writes and in which order they run (`STEPS`):

1. with the tiles, per trial: linear probes (`probes`) and block deletion (`deletion`);
2. derived from the tables: the trials that did not train, marked in `trials`
   (analysis/study/quality.py), class_accuracy and disagreement (analysis/study/predictions.py), blocks
   (analysis/study/blocks.py) and each block's contrast with and without its first PC
   (`pc1_removal`), example_stats, example_disagreement and class_diff (analysis/study/errors.py);
3. per trial with a block carried by a dominant first PC (the runs of alike layers without one
   are not what the claim is about): the block without its dominant datapoints, and without
   as many random examples (`dominant_removal`);
4. derived: dominant_overlap (analysis/study/dominance.py), then findings (analysis/study/findings.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from repsweep.analysis.study import blocks, deletion, dominance, errors, findings, predictions, probes, quality
from repsweep.analysis.tables.store import SweepStore
from repsweep.analysis.engine.stream import batches, in_order
from repsweep.models import RepresentationModel
from repsweep.orchestrator.training.data import Dataset, fraction_indices
from repsweep.orchestrator.grid import TrialConfig
from repsweep.orchestrator.comparison.plan import Plan
from repsweep.orchestrator.spec import SweepSpec
from repsweep.orchestrator.comparison.stages import DerivedTable, Step, TrialStage

FEATURE_BATCH = 512  # examples per forward pass when collecting a probe's features
FEATURE_BYTES = 2 << 30  # float32 features held at once by a probe stage: 2 GiB


def _probe_set(data: Dataset, spec: SweepSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The comparison's probe set (the test set, or its first compare.probe_examples) and labels."""
    n = spec.compare.probe_examples or len(data.x_test)
    return data.x_test[:n], data.y_test[:n]


def _done_trials(store: SweepStore, plan: Plan) -> pd.DataFrame:
    trials = store.read_table("trials")
    return trials[trials["trial_id"].isin(plan.n_layers)]


def _kept_trials(store: SweepStore, plan: Plan) -> pd.DataFrame:
    """The finished trials the statistics rest on: those that trained (not `excluded`, analysis/study/quality.py)."""
    trials = _done_trials(store, plan)
    return trials[~trials["excluded"].fillna(False).astype(bool)]


# -------------------------------------------------------------------- per-trial stages

@torch.inference_mode()
def _features(model: RepresentationModel, x: torch.Tensor, layers: range) -> list[tuple[np.ndarray, str]]:
    """Features of the given layers for x, each pooled by probes.pool_features (at most 1,024 per example)."""
    fast = model.inference_copy()
    chunks = [[probes.pool_features(a.float().cpu().numpy()) for a in fast.forward_layers(xb)[layers.start:layers.stop]]
              for xb in batches(x, in_order(len(x), FEATURE_BATCH))]  # [batch][layer] -> (features, pooling)
    return [(np.concatenate([c[i][0] for c in chunks]), chunks[0][i][1]) for i in range(len(layers))]


def _probes(model: RepresentationModel, data: Dataset, trial: TrialConfig, spec: SweepSpec,
            store: SweepStore) -> pd.DataFrame:
    """A linear probe per layer, trained on the training subset the trial saw.

    Layers are probed in groups whose pooled features fit FEATURE_BYTES, one forward pass of
    the data per group (digits: one group; CIFAR ResNet-56 on all 50,000 images: about four).
    """
    subset = fraction_indices(data.y_train.cpu().numpy(), trial.data_fraction, trial.seed)
    idx = torch.from_numpy(subset).to(data.x_train.device)
    x_train, y_train, y_test = data.x_train[idx], data.y_train[idx].cpu().numpy(), data.y_test.cpu().numpy()
    n_layers = len(model.layer_info(data.input_shape))
    group = max(1, FEATURE_BYTES // (4 * probes.MAX_FEATURES * (len(x_train) + len(data.x_test))))
    rows = []
    for first in range(0, n_layers, group):
        layers = range(first, min(n_layers, first + group))
        train, test = _features(model, x_train, layers), _features(model, data.x_test, layers)
        for layer, (f_train, pooling), (f_test, _) in zip(layers, train, test):
            fit = probes.linear_probe(f_train, y_train, f_test, y_test, seed=trial.seed)
            rows.append({"trial_id": trial.trial_id, "layer": layer, "pooling": pooling,
                         **{k: fit[k] for k in ("accuracy", "alpha", "holdout_accuracy", "train_accuracy",
                                                "n_train", "n_test", "dim")}})
    return pd.DataFrame(rows)


def _deletion(model: RepresentationModel, data: Dataset, trial: TrialConfig, spec: SweepSpec,
              store: SweepStore) -> pd.DataFrame:
    rows = deletion.deletion_accuracy(model, data.x_test, data.y_test, data.input_shape)
    return rows.assign(trial_id=trial.trial_id)


def _central_blocks(store: SweepStore, plan: Plan, spec: SweepSpec) -> pd.DataFrame:
    """The runs found at findings.block_threshold, one row per trial that has one (`carried_by_pc1`
    tells the paper's blocks from runs of alike layers)."""
    found = store.read_table("blocks")
    found = found[(found["threshold"] == spec.findings.block_threshold) & found["found"]]
    return found[found["trial_id"].isin(plan.n_layers)]


def _pc_blocks(store: SweepStore, plan: Plan, spec: SweepSpec) -> pd.DataFrame:
    """The blocks carried by a dominant first PC, of trials that trained: the first-PC claims' units."""
    found = _central_blocks(store, plan, spec)
    found = found[found["carried_by_pc1"].fillna(False).astype(bool)]
    return found[found["trial_id"].isin(_kept_trials(store, plan)["trial_id"])]


def _with_block(store: SweepStore, plan: Plan, spec: SweepSpec) -> list[str]:
    """The trials the dominant-datapoint claims rest on: trained, with a block carried by its first PC."""
    return list(_pc_blocks(store, plan, spec)["trial_id"])


def _dominant_removal(model: RepresentationModel, data: Dataset, trial: TrialConfig, spec: SweepSpec,
                      store: SweepStore) -> pd.DataFrame:
    """The block's CKA on the probe set without its dominant examples, and without random ones."""
    block = store.read_part("blocks", trial.trial_id)
    threshold = spec.findings.block_threshold
    block = block[(block["threshold"] == threshold) & block["found"]].iloc[0]
    start, end = int(block["start"]), int(block["end"])
    dominant = store.read_table("dominant")
    k = spec.compare.dominant
    top = dominance.block_dominant_set(dominant[dominant["trial_id"] == trial.trial_id], range(start, end + 1), k)
    x, _ = _probe_set(data, spec)
    if len(x) - len(top) < 4:  # analysis.engine.cka.MIN_BATCH: too few examples left for one minibatch
        raise ValueError(f"compare.dominant ({k}) leaves {len(x) - len(top)} of the probe set's {len(x)} examples; "
                         f"lower compare.dominant or use more test examples")
    others = np.setdiff1d(np.arange(len(x)), top)
    c = spec.compare
    run = lambda removed: dominance.block_cka_without(model, x, start, end, list(removed),  # noqa: E731
                                                      batch_size=c.batch_size, passes=c.passes)
    full, without = run([]), run(top)
    draws = [run(np.random.default_rng([trial.seed, d]).choice(others, size=min(len(top), len(others)),
                                                                replace=False)) for d in range(RANDOM_DRAWS)]
    control = {stat: float(np.mean([d[stat] for d in draws])) for stat in ("inside", "before", "outside")}
    spread = np.std([d["inside"] - d["outside"] for d in draws], ddof=1)
    return pd.DataFrame([{"trial_id": trial.trial_id, "threshold": threshold, "start": start,
                          "end": end, "n_removed": len(top), "random_draws": RANDOM_DRAWS,
                          "contrast_without_random_sd": float(spread),
                          **{f"{stat}{suffix}": out[stat] for stat in ("inside", "before", "outside")
                             for suffix, out in (("", full), ("_without_dominant", without),
                                                 ("_without_random", control))}}])


RANDOM_DRAWS = 4  # random sets removed as the dominant set's control: their mean, and their spread


PROBES = TrialStage("probes", _probes, enabled=lambda spec: spec.compare.probes)
DELETION = TrialStage("deletion", _deletion, enabled=lambda spec: spec.compare.deletion)
DOMINANT_REMOVAL = TrialStage("dominant_removal", _dominant_removal, select=_with_block)


# ---------------------------------------------------------------------- derived tables

def _trial_quality(store: SweepStore, plan: Plan, spec: SweepSpec) -> dict[str, pd.DataFrame]:
    """Each finished trial's row of `trials`, with `excluded` and its reason set (analysis/study/quality.py)."""
    trials = _done_trials(store, plan)
    f = spec.findings
    flags = quality.flag_trials(trials, outlier_ratio=f.outlier_ratio, outlier_gap=f.outlier_gap,
                                min_test_acc=f.min_test_acc).set_index("trial_id")
    marked = trials.drop(columns=["excluded", "exclusion_reason"]).join(flags, on="trial_id")
    return {row["trial_id"]: marked.loc[[i]] for i, row in marked.iterrows()}


def _class_accuracy(store: SweepStore, plan: Plan, spec: SweepSpec) -> dict[str, pd.DataFrame]:
    preds = store.read_table("predictions")
    acc = predictions.class_accuracy(preds[preds["trial_id"].isin(plan.n_layers)])
    return {tid: part for tid, part in acc.groupby("trial_id")}


def _disagreement(store: SweepStore, plan: Plan, spec: SweepSpec) -> dict[str, pd.DataFrame]:
    pairs = [(p.a, p.b, p.kind) for p in plan.pairs if p.a != p.b]
    return {"pairs": predictions.pair_disagreement(store.read_table("predictions"), pairs)}


def _blocks(store: SweepStore, plan: Plan, spec: SweepSpec) -> dict[str, pd.DataFrame]:
    within = _within_matrices(store.read_table("cka"), "cka", plan.n_layers)
    pc1_of = dict(tuple(store.read_table("pca").groupby("trial_id")))
    out = {}
    for tid, matrix in within.items():
        if tid not in pc1_of:  # its tile has not run (or failed)
            continue
        pc1 = pc1_of[tid].set_index("layer")["pc1_fraction"].reindex(range(len(matrix))).to_numpy()
        f = spec.findings
        found = blocks.find_blocks(matrix, pc1, thresholds=sorted({*blocks.THRESHOLDS, f.block_threshold}),
                                   min_size=f.block_min_layers)
        out[tid] = found.assign(trial_id=tid, carried_by_pc1=found["found"]
                                & (found["pc1_inside"] >= f.dominant_pc1))
    return out


def _within_matrices(table: pd.DataFrame, column: str, n_layers: dict[str, int]) -> dict[str, np.ndarray]:
    """Each trial's (L, L) within-model matrix of `column` from a cka-like table (trials with every pair)."""
    out = {}
    for tid, rows in table[table["trial_a"] == table["trial_b"]].groupby("trial_a"):  # one pass, not one per trial
        n = n_layers.get(tid)
        if n is not None and len(rows) == n * n:
            matrix = np.full((n, n), np.nan)
            matrix[rows["layer_a"], rows["layer_b"]] = rows[column]
            out[tid] = matrix
    return out


def _pc1_removal(store: SweepStore, plan: Plan, spec: SweepSpec) -> dict[str, pd.DataFrame]:
    """Per trial, the contrast of its block (or, without one, of the layers where the blocks lie) with
    and without each layer's first PC (analysis/study/blocks.py: span_contrast)."""
    with_pc1 = _within_matrices(store.read_table("cka"), "cka", plan.n_layers)
    without = _within_matrices(store.read_table("pc1_pairs"), "cka_without_pc1", plan.n_layers)
    spans = blocks.pc1_spans(store.read_table("blocks"), plan.n_layers, threshold=spec.findings.block_threshold)
    out = {}
    for tid, (role, start, end) in spans.items():
        if tid not in with_pc1 or tid not in without:
            continue
        a, b = blocks.span_contrast(with_pc1[tid], start, end), blocks.span_contrast(without[tid], start, end)
        out[tid] = pd.DataFrame([{"trial_id": tid, "role": role, "start": start, "end": end, **a,
                                  **{f"{k}_without_pc1": v for k, v in b.items()}}])
    return out


def _measures(frame: pd.DataFrame, column: str) -> list[str]:
    """The error measures `frame` has for every trial: 0/1 correctness, and the true-class probability
    unless some trial was trained before it was recorded (analysis/study/errors.py: MEASURES)."""
    return ["correct", *(["p_true"] if len(frame) and frame[column].notna().all() else [])]


def _errors(kind: str):
    def compute(store: SweepStore, plan: Plan, spec: SweepSpec) -> dict[str, pd.DataFrame]:
        trials = _kept_trials(store, plan)[["trial_id", "arch", "data_fraction", "seed"]]
        if kind == "class_diff":
            acc = store.read_table("class_accuracy")
            acc = acc[acc["trial_id"].isin(trials["trial_id"])]
            return {"all": pd.concat([errors.class_diff(acc, trials, alpha=1 - spec.findings.confidence, measure=m)
                                      for m in _measures(acc, "mean_p_true")], ignore_index=True)}
        preds = store.read_table("predictions")
        preds = preds[preds["trial_id"].isin(trials["trial_id"])]
        if kind == "example_stats":
            return {"all": errors.example_stats(preds, trials)}
        return {"all": pd.concat([errors.example_disagreement(preds, trials, confidence=spec.findings.confidence,
                                                              measure=m) for m in _measures(preds, "p_true")],
                                 ignore_index=True)}
    return compute


def _dominant_overlap(store: SweepStore, plan: Plan, spec: SweepSpec) -> dict[str, pd.DataFrame]:
    return {"all": dominance.dominant_overlap(store.read_table("dominant"), _pc_blocks(store, plan, spec),
                                              _kept_trials(store, plan), spec.compare.dominant)}


def _findings(store: SweepStore, plan: Plan, spec: SweepSpec) -> dict[str, pd.DataFrame]:
    tables = {t: store.read_table(t) for t in findings.INPUTS}
    tables["trials"] = _done_trials(store, plan)
    return {"all": findings.findings(tables, spec.findings)}


STEPS: tuple[Step, ...] = (
    Step(trial_stages=(PROBES, DELETION), derived=(
        DerivedTable("trials", _trial_quality),
        DerivedTable("class_accuracy", _class_accuracy), DerivedTable("disagreement", _disagreement),
        DerivedTable("blocks", _blocks), DerivedTable("pc1_removal", _pc1_removal),
        DerivedTable("example_stats", _errors("example_stats")),
        DerivedTable("example_disagreement", _errors("example_disagreement")),
        DerivedTable("class_diff", _errors("class_diff")))),
    Step(trial_stages=(DOMINANT_REMOVAL,), derived=(
        DerivedTable("dominant_overlap", _dominant_overlap), DerivedTable("findings", _findings))),
)
