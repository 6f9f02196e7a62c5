"""The study's analyses as comparison steps: each one's inputs, its computation, its table.

The computations live in `analysis/` (pure functions of arrays and frames); this module only
says what each one reads and writes and in which order they run (`STEPS`):

1. with the tiles, per trial: linear probes (`probes`) and block deletion (`deletion`);
2. derived from the tables: class_accuracy and disagreement (analysis/predictions.py), blocks
   (analysis/blocks.py), example_stats, example_disagreement and class_diff (analysis/errors.py);
3. per trial with a block: the block without its dominant datapoints (`dominant_removal`);
4. derived: dominant_overlap (analysis/dominance.py), then findings (analysis/findings.py).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from repsweep.analysis import blocks, deletion, dominance, errors, findings, predictions, probes
from repsweep.analysis.store import SweepStore
from repsweep.models import RepresentationModel
from repsweep.orchestrator.data import Dataset, fraction_indices
from repsweep.orchestrator.grid import TrialConfig
from repsweep.orchestrator.plan import Plan
from repsweep.orchestrator.spec import SweepSpec
from repsweep.orchestrator.stages import DerivedTable, Step, TrialStage

FEATURE_BATCH = 512  # examples per forward pass when collecting a probe's features
FEATURE_BYTES = 2 << 30  # float32 features held at once by a probe stage: 2 GiB


def _probe_set(data: Dataset, spec: SweepSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The comparison's probe set (the test set, or its first compare.probe_examples) and labels."""
    n = spec.compare.probe_examples or len(data.x_test)
    return data.x_test[:n], data.y_test[:n]


def _done_trials(store: SweepStore, plan: Plan) -> pd.DataFrame:
    trials = store.read_table("trials")
    return trials[trials["trial_id"].isin(plan.n_layers)]


# -------------------------------------------------------------------- per-trial stages

@torch.inference_mode()
def _features(model: RepresentationModel, x: torch.Tensor, layers: range) -> list[tuple[np.ndarray, str]]:
    """Features of the given layers for x, each pooled by probes.pool_features (at most 1,024 per example)."""
    fast = model.inference_copy()
    chunks = [[probes.pool_features(a.float().cpu().numpy()) for a in fast.forward_layers(x[s:s + FEATURE_BATCH])[
        layers.start:layers.stop]] for s in range(0, len(x), FEATURE_BATCH)]  # [batch][layer] -> (features, pooling)
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


def _central_blocks(store: SweepStore, plan: Plan) -> pd.DataFrame:
    """The blocks found at the central threshold, one row per trial that has one."""
    found = store.read_table("blocks")
    found = found[(found["threshold"] == blocks.CENTRAL_THRESHOLD) & found["found"]]
    return found[found["trial_id"].isin(plan.n_layers)]


def _with_block(store: SweepStore, plan: Plan) -> list[str]:
    return list(_central_blocks(store, plan)["trial_id"])


def _dominant_removal(model: RepresentationModel, data: Dataset, trial: TrialConfig, spec: SweepSpec,
                      store: SweepStore) -> pd.DataFrame:
    """The block's CKA on the probe set without its dominant examples, and without random ones."""
    block = store.read_part("blocks", trial.trial_id)
    block = block[(block["threshold"] == blocks.CENTRAL_THRESHOLD) & block["found"]].iloc[0]
    start, end = int(block["start"]), int(block["end"])
    dominant = store.read_table("dominant")
    k = spec.compare.dominant
    top = dominance.block_dominant_set(dominant[dominant["trial_id"] == trial.trial_id], range(start, end + 1), k)
    x, _ = _probe_set(data, spec)
    others = np.setdiff1d(np.arange(len(x)), top)
    random = np.random.default_rng(trial.seed).choice(others, size=min(len(top), len(others)), replace=False)
    c = spec.compare
    run = lambda removed: dominance.block_cka_without(model, x, start, end, list(removed),  # noqa: E731
                                                      batch_size=c.batch_size, passes=c.passes)
    full, without, control = run([]), run(top), run(random)
    return pd.DataFrame([{"trial_id": trial.trial_id, "threshold": blocks.CENTRAL_THRESHOLD, "start": start,
                          "end": end, "n_removed": len(top), "inside": full["inside"],
                          "inside_without_dominant": without["inside"], "inside_without_random": control["inside"],
                          "before": full["before"], "before_without_dominant": without["before"],
                          "before_without_random": control["before"]}])


PROBES = TrialStage("probes", _probes, enabled=lambda spec: spec.compare.probes)
DELETION = TrialStage("deletion", _deletion, enabled=lambda spec: spec.compare.deletion)
DOMINANT_REMOVAL = TrialStage("dominant_removal", _dominant_removal, select=_with_block)


# ---------------------------------------------------------------------- derived tables

def _class_accuracy(store: SweepStore, plan: Plan, spec: SweepSpec) -> dict[str, pd.DataFrame]:
    preds = store.read_table("predictions")
    acc = predictions.class_accuracy(preds[preds["trial_id"].isin(plan.n_layers)])
    return {tid: part for tid, part in acc.groupby("trial_id")}


def _disagreement(store: SweepStore, plan: Plan, spec: SweepSpec) -> dict[str, pd.DataFrame]:
    pairs = [(p.a, p.b, p.kind) for p in plan.pairs if p.a != p.b]
    return {"pairs": predictions.pair_disagreement(store.read_table("predictions"), pairs)}


def _blocks(store: SweepStore, plan: Plan, spec: SweepSpec) -> dict[str, pd.DataFrame]:
    cka = store.read_table("cka")
    within = dict(tuple(cka[cka["trial_a"] == cka["trial_b"]].groupby("trial_a")))  # one pass, not one per trial
    pc1_of = dict(tuple(store.read_table("pca").groupby("trial_id")))
    out = {}
    for tid, n in plan.n_layers.items():
        rows = within.get(tid)
        if rows is None or len(rows) != n * n or tid not in pc1_of:  # its tile has not run (or failed)
            continue
        matrix = np.full((n, n), np.nan)
        matrix[rows["layer_a"], rows["layer_b"]] = rows["cka"]
        pc1 = pc1_of[tid].set_index("layer")["pc1_fraction"].reindex(range(n)).to_numpy()
        out[tid] = blocks.find_blocks(matrix, pc1).assign(trial_id=tid)
    return out


def _errors(kind: str):
    def compute(store: SweepStore, plan: Plan, spec: SweepSpec) -> dict[str, pd.DataFrame]:
        trials = _done_trials(store, plan)[["trial_id", "arch", "data_fraction", "seed"]]
        if kind == "class_diff":
            acc = store.read_table("class_accuracy")
            return {"all": errors.class_diff(acc[acc["trial_id"].isin(trials["trial_id"])], trials)}
        preds = store.read_table("predictions")
        preds = preds[preds["trial_id"].isin(trials["trial_id"])]
        fn = errors.example_stats if kind == "example_stats" else errors.example_disagreement
        return {"all": fn(preds, trials)}
    return compute


def _dominant_overlap(store: SweepStore, plan: Plan, spec: SweepSpec) -> dict[str, pd.DataFrame]:
    trials = _done_trials(store, plan)
    return {"all": dominance.dominant_overlap(store.read_table("dominant"), _central_blocks(store, plan),
                                              trials, spec.compare.dominant)}


def _findings(store: SweepStore, plan: Plan, spec: SweepSpec) -> dict[str, pd.DataFrame]:
    tables = {t: store.read_table(t) for t in findings.INPUTS}
    tables["trials"] = _done_trials(store, plan)
    return {"all": findings.findings(tables)}


STEPS: tuple[Step, ...] = (
    Step(trial_stages=(PROBES, DELETION), derived=(
        DerivedTable("class_accuracy", _class_accuracy), DerivedTable("disagreement", _disagreement),
        DerivedTable("blocks", _blocks), DerivedTable("example_stats", _errors("example_stats")),
        DerivedTable("example_disagreement", _errors("example_disagreement")),
        DerivedTable("class_diff", _errors("class_diff")))),
    Step(trial_stages=(DOMINANT_REMOVAL,), derived=(
        DerivedTable("dominant_overlap", _dominant_overlap), DerivedTable("findings", _findings))),
)
