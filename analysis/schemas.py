"""The sweep's tables: one Arrow schema per table, the single source of their column names.

Every row carries stable keys, so tables join without guesswork: `trial_id` (derived from
the trial's configuration, `orchestrator.grid`), and for layers `layer` with `layer_name`,
`layer_kind`, `stage`, `block` (`models.LayerInfo`). The `trials` table's configuration
columns are not listed here: they are derived from the spec's dataclasses
(`TrialConfig.config_columns`), so a field added to the spec becomes a column, and a row
with a column its table does not know is refused (`SweepStore.write_part`).
"""

from __future__ import annotations

import types
import typing

import pyarrow as pa

from repsweep.orchestrator.grid import TrialConfig


class TableError(ValueError):
    """An unknown table or column, or a part that cannot be read; the message names what exists."""


_ARROW = {int: pa.int64(), float: pa.float64(), bool: pa.bool_(), str: pa.string()}


def arrow_type(annotation: typing.Any) -> pa.DataType:
    """The Arrow type of a spec field's annotation (`int`, `float`, `bool`, `str`, `X | None`)."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        (annotation,) = [a for a in typing.get_args(annotation) if a is not type(None)]
    return _ARROW[annotation]


_LAYER_KEYS = [("layer", pa.int32()), ("layer_name", pa.string()), ("layer_kind", pa.string()),
               ("stage", pa.int32()), ("block", pa.int32())]

_CONFIG = [(name, arrow_type(tp)) for name, tp in TrialConfig.config_columns()]

SCHEMAS: dict[str, pa.Schema] = {
    # one row per trial: its id, its configuration (from the spec), then how it went
    "trials": pa.schema([
        ("trial_id", pa.string()), ("sweep", pa.string()), ("arch", pa.string()), *_CONFIG,
        ("status", pa.string()),  # running | done | failed
        ("error", pa.string()), ("epochs_done", pa.int32()),
        ("train_loss", pa.float64()), ("train_acc", pa.float64()),
        ("test_loss", pa.float64()), ("test_acc", pa.float64()),
        ("n_train", pa.int32()), ("params", pa.int64()), ("flops", pa.int64()),
        ("wall_time_s", pa.float64()), ("device", pa.string()),
        ("checkpoint_uri", pa.string()), ("code_version", pa.string()),
        ("torch_version", pa.string()), ("ray_version", pa.string()),
        ("updated_at", pa.timestamp("s", tz="UTC")),
    ]),
    # one row per captured layer of each trial
    "layers": pa.schema([("trial_id", pa.string()), *_LAYER_KEYS, ("dim", pa.int64())]),
    # one row per test example per trial
    "predictions": pa.schema([
        ("trial_id", pa.string()), ("example", pa.int32()), ("label", pa.int32()),
        ("prediction", pa.int32()), ("correct", pa.bool_()), ("confidence", pa.float32()),
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
    "pca": pa.schema([("trial_id", pa.string()), ("layer", pa.int32()),
                      ("pc1_fraction", pa.float64()), ("n_batches", pa.int32())]),
    # prediction agreement of each compared model pair on the full test set
    "disagreement": pa.schema([
        ("trial_a", pa.string()), ("trial_b", pa.string()), ("pair_kind", pa.string()),
        ("n_examples", pa.int32()), ("agreement", pa.float64()), ("both_wrong", pa.float64()),
        ("only_a_wrong", pa.float64()), ("only_b_wrong", pa.float64()),
    ]),
    # accuracy of each trial on each class of the test set
    "class_accuracy": pa.schema([("trial_id", pa.string()), ("label", pa.int32()),
                                 ("n_examples", pa.int32()), ("accuracy", pa.float64())]),
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
