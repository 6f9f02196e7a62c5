"""Sweep storage: the files of one sweep, atomic keyed writes of table parts, reads.

A sweep lives at one local path or URI (s3://, gs://, file://), parsed by
`location.parse_location` and read through pyarrow's filesystems; an s3:// or gs:// bucket is
opened by `objectstore.open_bucket`, which takes endpoint, region and credentials from the
environment and fails within seconds:

    <sweep>/spec.yaml                    the spec the sweep reads (checked against spec.started.yaml,
                                         the copy written when the sweep began)
    <sweep>/tune/                        Ray Tune's experiment (per-epoch checkpoints)
    <sweep>/checkpoints/<trial_id>.pt    final model of each finished trial
    <sweep>/tables/<table>/<key>.parquet one part per key (a trial, a comparison tile)

Each part is written whole under a temporary name and then renamed (local disks), or put
as one object (object stores), so readers never see half a part; writing a key again
replaces its part, so a re-run never duplicates rows.
"""

from __future__ import annotations

import contextlib
import io
import logging
import posixpath
import re
import uuid

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from repsweep.analysis.tables.location import Location, parse_location
from repsweep.analysis.tables.objectstore import open_bucket
from repsweep.analysis.tables.schemas import TableError, table_schema

log = logging.getLogger(__name__)


_TEMP = re.compile(r"\.tmp-[0-9a-f]{8}$")  # write_bytes' temporary names: <final>.tmp-<8 hex digits>


class SweepStore:
    """The files of one sweep at a local path or URI."""

    def __init__(self, location: str | Location) -> None:
        where = location if isinstance(location, Location) else parse_location(location)
        self.fs = open_bucket(where) if where.scheme else pafs.LocalFileSystem()
        self.root, self.uri = where.path, where.uri
        self._local = not where.scheme

    # ------------------------------------------------------------------ files
    def path(self, *parts: str) -> str:
        return posixpath.join(self.root, *parts)

    def uri_of(self, *parts: str) -> str:
        return "/".join([self.uri, *parts])

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def read_bytes(self, *parts: str, max_bytes: int | None = None) -> bytes:
        """The file's bytes; with `max_bytes`, a larger file is a TableError, found before reading."""
        if max_bytes is None:
            with self.fs.open_input_stream(self.path(*parts)) as f:
                return f.read()
        info = self.fs.get_file_info(self.path(*parts))
        if info.type != pafs.FileType.File or (info.size or 0) > max_bytes:
            what = f"{info.size:,} bytes" if info.type == pafs.FileType.File else "not a file"
            raise TableError(f"'{self.uri_of(*parts)}' is {what}; expected a file of at most {max_bytes:,} bytes")
        with self.fs.open_input_stream(self.path(*parts)) as f:
            data = f.read(max_bytes + 1)  # it may have grown since it was measured
        if len(data) > max_bytes:
            raise TableError(f"'{self.uri_of(*parts)}' is over {max_bytes:,} bytes; expected at most that")
        return data

    def write_bytes(self, data: bytes, *parts: str) -> None:
        """Write a whole file atomically: temp name then rename (local) or one put (objects, which
        need no folders: creating them would cost a request per level)."""
        final = self.path(*parts)
        if not self._local:
            with self.fs.open_output_stream(final) as f:
                f.write(data)
            return
        self.fs.create_dir(posixpath.dirname(final), recursive=True)
        target = f"{final}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            with self.fs.open_output_stream(target) as f:
                f.write(data)
        except BaseException:  # a full disk, a signal: no half-written temp file is left behind
            with contextlib.suppress(OSError):
                self.fs.delete_file(target)
            raise
        self.fs.move(target, final)

    def list_files(self, *parts: str) -> list[str]:
        """Names of the finished files directly under a folder (temp files skipped)."""
        sel = pafs.FileSelector(self.path(*parts), allow_not_found=True)
        return sorted(posixpath.basename(i.path) for i in self.fs.get_file_info(sel)
                      if i.type == pafs.FileType.File and not _TEMP.search(posixpath.basename(i.path)))

    # ----------------------------------------------------------------- tables
    def write_part(self, table: str, key: str, rows: pd.DataFrame | list[dict]) -> None:
        """Replace the part `key` of `table` with `rows`, checked against the table's schema.

        Columns the rows leave out are null; a column the table does not know is an error
        (a field that would otherwise be dropped without a word).
        """
        buf = io.BytesIO()
        pq.write_table(self.as_table(table, rows), buf)
        self.write_bytes(buf.getvalue(), *_part(table, key))

    @staticmethod
    def as_table(table: str, rows: pd.DataFrame | list[dict]) -> pa.Table:
        """`rows` as an Arrow table of `table`'s schema (see write_part for the column rules)."""
        schema = table_schema(table)
        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(rows)
        unknown = [c for c in df.columns if c not in schema.names]
        if unknown:
            raise TableError(f"table '{table}' has no column {', '.join(map(repr, unknown))}; "
                             f"add it to analysis/tables/schemas.py (its columns are {', '.join(schema.names)})")
        return pa.Table.from_pandas(df.reindex(columns=schema.names), schema=schema, preserve_index=False)

    def part_readable(self, table: str, key: str) -> bool:
        """Whether part `key` exists and is a whole Parquet file (its footer reads)."""
        try:
            pq.read_metadata(self.part_path(table, key), filesystem=self.fs)
        except (pa.ArrowInvalid, OSError):
            return False
        return True

    def part_holds(self, table: str, key: str, rows: pd.DataFrame | list[dict]) -> bool:
        """Whether part `key` exists and holds exactly `rows` (compared as Arrow tables: nulls, lists)."""
        if not self.has_part(table, key):
            return False
        try:
            stored = self._read_part(table, key)
        except (pa.ArrowInvalid, OSError):
            return False  # unreadable: it will be written again
        return stored.equals(self.as_table(table, rows))

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
            try:
                parts.append(self._read_part(table, key))
            except (pa.ArrowInvalid, OSError) as e:
                raise TableError(f"table '{table}': part '{self.part_path(table, key)}' is unreadable ({e}); "
                                 f"delete it and re-run the stage that writes it") from e
        arrow = pa.concat_tables(parts) if parts else schema.empty_table()
        return arrow.to_pandas()

    def _read_part(self, table: str, key: str) -> pa.Table:
        """One part, fetched whole and then parsed: on an object store two requests (size, body)
        instead of four (pyarrow's file reader asks for the size twice, then footer and body apart)."""
        return pq.read_table(pa.BufferReader(self.read_bytes(*_part(table, key))), schema=table_schema(table))


def _part(table: str, key: str) -> tuple[str, str, str]:
    """The file of one table part, as path parts below the sweep's root."""
    return "tables", table, f"{key}.parquet"
