"""The sweep's tables: one Arrow schema per table, the single source of their column names.

Every row carries stable keys, so tables join without guesswork: `trial_id` (derived from
the trial's configuration, `orchestrator.grid`), and for layers `layer` with `layer_name`,
`layer_kind`, `stage`, `block` (`models.LayerInfo`). The `trials` table's configuration
columns (`TRIAL_CONFIG`) are the grid axes and one column per field of the spec's model,
dataset and training sections, the columns `TrialConfig.config_row` fills; a test holds the
two in step (tests/test_grid.py), and a row with a column its table does not know is refused
(`SweepStore.write_part`). Nothing here imports the orchestrator: the tables are what the
orchestrator writes and the analysis reads.
"""

from __future__ import annotations

import pyarrow as pa


class TableError(ValueError):
    """An unknown table or column, or a part that cannot be read; the message names what exists."""


_LAYER_KEYS = [("layer", pa.int32()), ("layer_name", pa.string()), ("layer_kind", pa.string()),
               ("stage", pa.int32()), ("block", pa.int32())]

GRID_AXES = ("depth", "width", "data_fraction", "seed")  # a trial's numeric grid point (its columns, its id)
TRIAL_CONFIG = [
    # the grid point
    ("depth", pa.float64()), ("width", pa.float64()), ("data_fraction", pa.float64()), ("seed", pa.int64()),
    # the spec's model section (a field `name` is the section's own column)
    ("model_family", pa.string()), ("model_scale", pa.string()), ("model", pa.string()),
    ("model_tokens", pa.string()),
    # the dataset section
    ("dataset", pa.string()), ("dataset_root", pa.string()), ("dataset_image_size", pa.int64()),
    ("dataset_augment", pa.bool_()),
    # the training section, its fields by their own names
    ("epochs", pa.int64()), ("batch_size", pa.int64()), ("lr", pa.float64()), ("momentum", pa.float64()),
    ("weight_decay", pa.float64()), ("warmup_epochs", pa.float64()), ("zero_init_residual", pa.bool_()),
    ("min_steps", pa.int64()), ("budget", pa.string()), ("grad_clip", pa.float64()),
]

SCHEMAS: dict[str, pa.Schema] = {
    # one row per trial: its id, its configuration (from the spec), then how it went
    "trials": pa.schema([
        ("trial_id", pa.string()), ("sweep", pa.string()), ("arch", pa.string()), *TRIAL_CONFIG,
        ("status", pa.string()),  # running | done | failed
        ("error", pa.string()),
        # set by the comparison (analysis/study/quality.py): a finished trial that did not train, left out of the findings
        ("excluded", pa.bool_()), ("exclusion_reason", pa.string()), ("epochs_done", pa.int32()),
        ("train_loss", pa.float64()), ("train_acc", pa.float64()),
        ("test_loss", pa.float64()), ("test_acc", pa.float64()),
        ("n_train", pa.int32()), ("params", pa.int64()), ("flops", pa.int64()),
        ("wall_time_s", pa.float64()), ("device", pa.string()),
        ("checkpoint_uri", pa.string()), ("code_version", pa.string()),
        ("torch_version", pa.string()), ("ray_version", pa.string()),
        ("updated_at", pa.timestamp("s", tz="UTC")),
    ]),
    # one row per captured layer of each trial
    "layers": pa.schema([("trial_id", pa.string()), *_LAYER_KEYS, ("dim", pa.int64()), ("tokens", pa.string())]),
    # one row per test example per trial
    "predictions": pa.schema([
        ("trial_id", pa.string()), ("example", pa.int32()), ("label", pa.int32()),
        ("prediction", pa.int32()), ("correct", pa.bool_()), ("confidence", pa.float32()),
        ("p_true", pa.float32()),  # the softmax probability of the true class
    ]),
    # the training examples each trial saw (indices into the training set)
    "train_subset": pa.schema([("trial_id", pa.string()), ("example", pa.int32())]),
    # one row per layer pair of each compared model pair (trial_a == trial_b: within-model)
    "cka": pa.schema([
        ("trial_a", pa.string()), ("layer_a", pa.int32()),
        ("trial_b", pa.string()), ("layer_b", pa.int32()),
        ("cka", pa.float64()), ("hsic_ab", pa.float64()), ("hsic_aa", pa.float64()),
        ("hsic_bb", pa.float64()), ("n_batches", pa.int32()), ("batch_size", pa.int32()),
    ]),
    # first principal component's share of each layer's variance, mean over probe batches
    # dominant_share: how much of the first PC the layer's compare.dominant top examples carry
    "pca": pa.schema([("trial_id", pa.string()), ("layer", pa.int32()),
                      ("pc1_fraction", pa.float64()), ("n_batches", pa.int32()),
                      ("dominant_share", pa.float64())]),
    # per layer pair: CKA with each layer's first PC removed (its HSIC1 sums), and the mean squared
    # cosine of the two layers' first-PC score vectors over the same batches (analysis/engine/pcview.py)
    "pc1_pairs": pa.schema([
        ("trial_a", pa.string()), ("layer_a", pa.int32()), ("trial_b", pa.string()), ("layer_b", pa.int32()),
        ("cka_without_pc1", pa.float64()), ("pc1_cos2", pa.float64()), ("hsic_ab", pa.float64()),
        ("hsic_aa", pa.float64()), ("hsic_bb", pa.float64()), ("n_batches", pa.int32()),
    ]),
    # each layer's compare.dominant probe examples with the largest mean share of its first PC
    # (rank 1 = largest): share, RMS first-PC score and RMS distance to the batch mean
    "dominant": pa.schema([
        ("trial_id", pa.string()), ("layer", pa.int32()), ("example", pa.int32()), ("rank", pa.int32()),
        ("label", pa.int32()), ("pc1_share", pa.float64()), ("pc1_score", pa.float64()), ("norm", pa.float64()),
    ]),
    # prediction agreement of each compared model pair on the full test set
    "disagreement": pa.schema([
        ("trial_a", pa.string()), ("trial_b", pa.string()), ("pair_kind", pa.string()),
        ("n_examples", pa.int32()), ("agreement", pa.float64()), ("both_wrong", pa.float64()),
        ("only_a_wrong", pa.float64()), ("only_b_wrong", pa.float64()),
    ]),
    # accuracy of each trial on each class of the test set, and its mean true-class probability there
    "class_accuracy": pa.schema([("trial_id", pa.string()), ("label", pa.int32()),
                                 ("n_examples", pa.int32()), ("accuracy", pa.float64()),
                                 ("mean_p_true", pa.float64())]),
    # ---- the study's analyses (per trial on the pool, or derived from the tables above)
    # block structure of each model, at a few CKA thresholds (analysis/study/blocks.py)
    "blocks": pa.schema([
        ("trial_id", pa.string()), ("threshold", pa.float64()), ("found", pa.bool_()), ("start", pa.int32()),
        ("end", pa.int32()), ("size", pa.int32()), ("fraction", pa.float64()), ("inside", pa.float64()),
        ("before", pa.float64()), ("after", pa.float64()), ("contrast", pa.float64()), ("pc1_inside", pa.float64()),
        ("pc1_outside", pa.float64()),
        ("carried_by_pc1", pa.bool_()),  # pc1_inside >= findings.dominant_pc1: the paper's block, not a mere run
    ]),
    # per model: the block's distinctness (contrast, analysis/study/blocks.py: span_contrast) with and without
    # each layer's first PC; role 'block' (a block carried by its first PC) or 'control' (a model without
    # one, on the layers at the blocks' median relative position): claim 3's units (analysis/study/findings.py)
    "pc1_removal": pa.schema([
        ("trial_id", pa.string()), ("role", pa.string()), ("start", pa.int32()), ("end", pa.int32()),
        ("inside", pa.float64()), ("outside", pa.float64()), ("contrast", pa.float64()),
        ("inside_without_pc1", pa.float64()), ("outside_without_pc1", pa.float64()),
        ("contrast_without_pc1", pa.float64()),
    ]),
    # a linear probe of every captured layer of each model (analysis/study/probes.py)
    "probes": pa.schema([
        ("trial_id", pa.string()), ("layer", pa.int32()), ("accuracy", pa.float64()), ("alpha", pa.float64()),
        ("holdout_accuracy", pa.float64()), ("train_accuracy", pa.float64()), ("n_train", pa.int32()),
        ("n_test", pa.int32()), ("dim", pa.int32()), ("pooling", pa.string()),
    ]),
    # test accuracy with each residual block removed, no retraining (analysis/study/deletion.py)
    "deletion": pa.schema([
        ("trial_id", pa.string()), ("block", pa.string()), ("layer", pa.int32()), ("accuracy", pa.float64()),
        ("drop", pa.float64()), ("intact", pa.float64()),
    ]),
    # the block's CKA with its dominant examples left out of the probe set, and with as many
    # random ones left out (analysis/study/dominance.py)
    "dominant_removal": pa.schema([
        ("trial_id", pa.string()), ("threshold", pa.float64()), ("start", pa.int32()), ("end", pa.int32()),
        ("n_removed", pa.int32()), ("inside", pa.float64()), ("inside_without_dominant", pa.float64()),
        ("inside_without_random", pa.float64()), ("before", pa.float64()),
        ("before_without_dominant", pa.float64()), ("before_without_random", pa.float64()),
        ("outside", pa.float64()), ("outside_without_dominant", pa.float64()),  # every kept layer outside
        ("outside_without_random", pa.float64()),  # the block, before and after pooled (span_contrast)
        # "without_random": the mean over random_draws random sets of n_removed examples; the contrast's
        # (inside - outside) standard deviation over those draws
        ("random_draws", pa.int32()), ("contrast_without_random_sd", pa.float64()),
    ]),
    # how alike two seeds' dominant sets inside their blocks are (analysis/study/dominance.py)
    "dominant_overlap": pa.schema([
        ("arch", pa.string()), ("data_fraction", pa.float64()), ("seed_a", pa.int64()), ("seed_b", pa.int64()),
        ("n", pa.int32()), ("jaccard", pa.float64()), ("shared", pa.int32()),
        ("classes_a", pa.list_(pa.int32())), ("classes_b", pa.list_(pa.int32())),
    ]),
    # per configuration (arch, data fraction) and test example: accuracy over its seeds (analysis/study/errors.py)
    "example_stats": pa.schema([
        ("arch", pa.string()), ("data_fraction", pa.float64()), ("example", pa.int32()), ("label", pa.int32()),
        ("accuracy", pa.float64()), ("n_seeds", pa.int32()),
    ]),
    # per pair of configurations and measure (0/1 "correct" or "p_true"): per-example disagreement against
    # disjoint seed groups; p from a permutation test over the seeds, the interval of the excess from a
    # bootstrap over test examples; errors_median: a model's test errors, median (analysis/study/errors.py)
    "example_disagreement": pa.schema([
        ("arch_a", pa.string()), ("arch_b", pa.string()), ("data_fraction", pa.float64()), ("measure", pa.string()),
        ("seeds_per_group", pa.int32()), ("n_examples", pa.int32()), ("errors_median", pa.float64()),
        ("between", pa.float64()),
        ("baseline_a", pa.float64()), ("baseline_b", pa.float64()), ("baseline", pa.float64()),
        ("excess", pa.float64()), ("p", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()),
        ("n_seeds_a", pa.int32()), ("n_seeds_b", pa.int32()), ("min_p", pa.float64()),
        ("testable", pa.bool_()), ("reason", pa.string()),
    ]),
    # per pair of configurations, measure and class: permutation test over seeds, Benjamini-Hochberg q
    # (analysis/study/errors.py)
    "class_diff": pa.schema([
        ("arch_a", pa.string()), ("arch_b", pa.string()), ("data_fraction", pa.float64()), ("measure", pa.string()),
        ("label", pa.int32()),
        ("mean_a", pa.float64()), ("mean_b", pa.float64()), ("difference", pa.float64()),
        ("p", pa.float64()), ("q", pa.float64()), ("min_p", pa.float64()), ("significant", pa.bool_()),
        ("n_a", pa.int32()), ("n_b", pa.int32()), ("testable", pa.bool_()), ("reason", pa.string()),
    ]),
    # the study's claims, one row per part of a claim: its statistic over independent units (models, seed
    # pairs, configurations), the mean effect (positive = as claimed), its interval, n, the part's verdict,
    # the claim's verdict, what would resolve an inconclusive one, and every unit's value (`units`, `values`;
    # a control group's in control_units, control_values), so any verdict can be recomputed with one query;
    # claim 0: the trials the claims rest on and those left out (analysis/study/findings.py)
    "findings": pa.schema([
        ("claim", pa.int32()), ("part", pa.string()), ("title", pa.string()), ("statistic", pa.string()),
        ("effect", pa.float64()), ("ci_low", pa.float64()), ("ci_high", pa.float64()), ("confidence", pa.float64()),
        ("n", pa.int32()), ("unit", pa.string()), ("p", pa.float64()), ("verdict", pa.string()),
        ("claim_verdict", pa.string()), ("numbers", pa.string()), ("resolve", pa.string()),
        ("units", pa.list_(pa.string())), ("values", pa.list_(pa.float64())),
        ("control_units", pa.list_(pa.string())), ("control_values", pa.list_(pa.float64())),
    ]),
    # comparison tiles: what was computed, where, and how it ended
    "tiles": pa.schema([
        ("tile", pa.string()), ("status", pa.string()), ("error", pa.string()),
        ("trials_a", pa.list_(pa.string())), ("trials_b", pa.list_(pa.string())),
        ("n_rows", pa.int64()), ("wall_time_s", pa.float64()), ("node", pa.string()),
        ("device", pa.string()),
    ]),
    # per-trial stages and derived tables: each job (stage, key) and how it ended
    "stage_runs": pa.schema([
        ("stage", pa.string()), ("key", pa.string()), ("status", pa.string()), ("error", pa.string()),
        ("n_rows", pa.int64()), ("wall_time_s", pa.float64()), ("node", pa.string()),
        ("device", pa.string()),
    ]),
}


def table_schema(table: str) -> pa.Schema:
    """The schema of `table`; TableError naming every table if there is none of that name."""
    if table not in SCHEMAS:
        raise unknown_table(table)
    return SCHEMAS[table]


def unknown_table(table: str) -> TableError:
    return TableError(f"unknown table '{table}'; tables are {', '.join(SCHEMAS)}")
