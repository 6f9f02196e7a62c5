"""Sweep storage and the Parquet tables: schemas, atomic keyed writes, reads.

A sweep lives at one local path or URI (s3://, gs://, file://, read through pyarrow's
filesystems):

    <sweep>/spec.yaml                    the spec the sweep was created from
    <sweep>/tune/                        Ray Tune's experiment (per-epoch checkpoints)
    <sweep>/checkpoints/<trial_id>.pt    final model of each finished trial
    <sweep>/tables/<table>/<key>.parquet one part per key (a trial, a comparison tile)

Each part is written whole under a temporary name and then renamed (local disks), or put
as one object (object stores), so readers never see half a part; writing a key again
replaces its part, so a re-run never duplicates rows.
"""

from __future__ import annotations

import io
import logging
import os
import posixpath
import uuid

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

log = logging.getLogger(__name__)


class TableError(ValueError):
    """An unknown table or column, or a part that cannot be read; the message names what exists."""


_LAYER_KEYS = [("layer", pa.int32()), ("layer_name", pa.string()), ("layer_kind", pa.string()),
               ("stage", pa.int32()), ("block", pa.int32())]

SCHEMAS: dict[str, pa.Schema] = {
    # one row per trial; config columns mirror spec.GridSpec and spec.TrainingSpec
    "trials": pa.schema([
        ("trial_id", pa.string()), ("sweep", pa.string()), ("dataset", pa.string()),
        ("depth", pa.int32()), ("width", pa.int32()), ("data_fraction", pa.float64()),
        ("seed", pa.int32()),
        ("epochs", pa.int32()), ("batch_size", pa.int32()), ("lr", pa.float64()),
        ("momentum", pa.float64()), ("weight_decay", pa.float64()),
        ("warmup_epochs", pa.float64()), ("zero_init_residual", pa.bool_()),
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
}


def _is_uri(location: str) -> bool:
    return "://" in location


class SweepStore:
    """The files of one sweep at a local path or URI."""

    def __init__(self, location: str) -> None:
        if _is_uri(location):
            try:
                self.fs, self.root = pafs.FileSystem.from_uri(location)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as e:
                raise TableError(f"storage '{location}': cannot open it ({e}); use a local path or an s3://, gs:// or file:// URI") from e
            self.uri = location.rstrip("/")
        else:
            self.fs, self.root = pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(location))
            self.uri = self.root
        self._local = isinstance(self.fs, pafs.LocalFileSystem)

    # ------------------------------------------------------------------ files
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def uri_of(self, *parts: str) -> str:
        return "/".join([self.uri, *parts])

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def read_bytes(self, *parts: str) -> bytes:
        with self.fs.open_input_stream(self.path(*parts)) as f:
            return f.read()

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a whole file atomically: temp name then rename (local) or one put (objects)."""
        final = self.path(*parts)
        self.fs.create_dir(posixpath.dirname(final), recursive=True)
        target = f"{final}.tmp-{uuid.uuid4().hex[:8]}" if self._local else final
        with self.fs.open_output_stream(target) as f:
            f.write(data)
        if self._local:
            self.fs.move(target, final)

    def list_files(self, *parts: str) -> list[str]:
        """Names of the finished files directly under a folder (temp files skipped)."""
        sel = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        return sorted(posixpath.basename(i.path) for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.File and ".tmp-" not in i.path)

    # ----------------------------------------------------------------- tables
    def write_part(self, table: str, key: str, rows: pd.DataFrame | list[dict]) -> None:
        """Replace the part `key` of `table` with `rows`, checked against the table's schema."""
        schema = table_schema(table)
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows, columns=schema.names)
        missing = [c for c in schema.names if c not in df.columns]
        if missing:
            raise TableError(f"table '{table}': rows lack columns {missing}")
        arrow = pa.Table.from_pandas(df[schema.names], schema=schema, preserve_index=False)
        buf = io.BytesIO()
        pq.write_table(arrow, buf)
        self.write_bytes(buf.getvalue(), *_part(table, key))

    def part_path(self, table: str, key: str) -> str:
        """Where the part `key` of `table` lives (a path on `self.fs`)."""
        return self.path(*_part(table, key))

    def has_part(self, table: str, key: str) -> bool:
        return self.exists(*_part(table, key))

    def delete_part(self, table: str, key: str) -> None:
        self.fs.delete_file(self.part_path(table, key))

    def part_keys(self, table: str) -> list[str]:
        return [n[: -len(".parquet")] for n in self.list_files("tables", table) if n.endswith(".parquet")]

    def read_part(self, table: str, key: str) -> pd.DataFrame:
        return self._read(table, [key])

    def read_table(self, table: str) -> pd.DataFrame:
        """Every part of a table as one DataFrame (empty, with the schema's columns, if none)."""
        return self._read(table, self.part_keys(table))

    def _read(self, table: str, keys: list[str]) -> pd.DataFrame:
        schema = table_schema(table)
        parts = []
        for key in keys:
            p = self.part_path(table, key)
            try:
                parts.append(pq.read_table(p, filesystem=self.fs, schema=schema))
            except (pa.ArrowInvalid, OSError) as e:
                raise TableError(f"table '{table}': part '{p}' is unreadable ({e}); delete it and re-run the stage that writes it") from e
        arrow = pa.concat_tables(parts) if parts else schema.empty_table()
        return arrow.to_pandas()


def _part(table: str, key: str) -> tuple[str, str, str]:
    """The file of one table part, as path parts below the sweep's root."""
    return "tables", table, f"{key}.parquet"


def table_schema(table: str) -> pa.Schema:
    """The schema of `table`; TableError naming every table if there is none of that name."""
    if table not in SCHEMAS:
        raise unknown_table(table)
    return SCHEMAS[table]


def unknown_table(table: str) -> TableError:
    return TableError(f"unknown table '{table}'; tables are {', '.join(SCHEMAS)}")
