"""SQL over a sweep's tables: every table of `SCHEMAS` is a DuckDB view, results are DataFrames.

    res = open_results("./repsweep-results/demo")         # a local path or a URI
    res.sql("SELECT depth, width, avg(test_acc) FROM trials GROUP BY ALL ORDER BY ALL")
    res.table("cka", trial_a="d56-w1-f1-s0-1d468584")      # one table, filtered by columns
    res.tables()                                            # names, columns, types, row counts

Each view is a lazy Arrow dataset over the table's Parquet parts, found and read through the
sweep's `SweepStore` (its filesystem works for local paths, s3:// and gs://), so a query reads
only the columns and row groups it needs. A table with no parts yet is an empty view with the
schema's columns. The views are rebuilt for every query, so a query sees the parts present
when it runs (a sweep still training or comparing keeps growing).

A result is bounded: at most MAX_RESULT_ROWS rows and MAX_RESULT_BYTES bytes (settable), DuckDB's
working memory at most QUERY_MEMORY, with no spilling, and the process may grow by at most
QUERY_GROWTH while the query runs (one huge value, which DuckDB does not count against its
memory, is interrupted); the bound reached is named in the error.
`sql_batches` streams a result batch by batch (the CLI's CSV), holding one batch at a time.

Errors are `TableError`, one line that names what exists: an unknown table lists the tables,
an unknown column lists the columns of the tables the query reads, bad SQL names the problem.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from repsweep.analysis.tables.schemas import SCHEMAS, TableError, table_schema, unknown_table
from repsweep.analysis.tables.store import SweepStore

if TYPE_CHECKING:
    from collections.abc import Iterator

    import duckdb
    import pyarrow.dataset


MAX_RESULT_ROWS = 1_000_000  # rows a query may return: more is an export, narrow it or raise the limit
MAX_RESULT_BYTES = 512 << 20  # bytes of a result held at once (a whole result, or one streamed batch)
QUERY_MEMORY = "1GB"  # DuckDB's own working memory (joins, sorts, aggregates); it may not spill to disk
BATCH_ROWS = 65_536  # rows per streamed batch
# how much this process may grow while a query runs: DuckDB's working memory and the result, with
# room to spare; what it catches is what DuckDB does not count, one huge value (repeat('x', 1e9))
QUERY_GROWTH = 2 << 30


def open_results(location: str | SweepStore, **limits: int) -> Results:
    """The tables of the sweep at `location` (a local path, a URI, or an open SweepStore);
    `limits`: max_rows, max_bytes of a query's result (see Results)."""
    store = location if isinstance(location, SweepStore) else SweepStore(location)
    if not store.exists("tables") and not store.exists("spec.yaml"):
        raise TableError(f"no sweep at '{store.uri}' (no tables/ and no spec.yaml); pass the folder "
                         f"'repsweep run' created, <storage>/<name>, e.g. ./repsweep-results/demo")
    return Results(store, **limits)


class Results:
    """SQL and table access over one sweep's Parquet tables (see the module docstring)."""

    def __init__(self, store: SweepStore, *, max_rows: int = MAX_RESULT_ROWS,
                 max_bytes: int = MAX_RESULT_BYTES) -> None:
        import duckdb

        self.store, self.max_rows, self.max_bytes = store, max_rows, max_bytes
        # a query reads the sweep's tables and nothing else: no files, no databases, no extensions,
        # and no statement can switch that back on (the tables are Arrow datasets read by pyarrow)
        self._con = duckdb.connect(config={"enable_external_access": False, "autoinstall_known_extensions": False,
                                           "autoload_known_extensions": False, "memory_limit": QUERY_MEMORY,
                                           "max_temp_directory_size": "0KiB"})
        self._con.execute("SET enable_progress_bar = false")  # it draws on the process's stdout: into a CSV
        self._con.execute("SET lock_configuration = true")
        self._datasets: dict[str, pyarrow.dataset.Dataset] = {}

    # ----------------------------------------------------------------- queries
    def sql(self, query: str, params: list[Any] | dict[str, Any] | None = None) -> pd.DataFrame:
        """Run one SELECT (DuckDB dialect; CTEs and joins too) over the tables; `params` fill `?` or `$name`.

        Anything else (more than one statement, COPY, ATTACH, INSTALL, CREATE, SET, ...) is a
        TableError: a query only reads. A result past the row or byte limit is a TableError too.
        """
        self._prepare(query)
        with self._watched():
            reader = self._reader(query, params)
            table = pa.Table.from_batches(list(self._bounded(reader, query)), schema=reader.schema)
        return table.to_pandas()

    def sql_batches(self, query: str, params: list[Any] | dict[str, Any] | None = None) -> Iterator[pa.RecordBatch]:
        """The result of `sql(query)` as Arrow record batches, streamed (e.g. CSV written as it comes):
        the byte limit applies to each batch, the row limit to all of them."""
        self._prepare(query)
        with self._watched():
            yield from self._bounded(self._reader(query, params), query, total_bytes=False)

    @contextlib.contextmanager
    def _watched(self) -> Iterator[None]:
        """Interrupt the query running in the block once the process has grown by QUERY_GROWTH."""
        watch = _Growth(self._con, QUERY_GROWTH)
        try:
            with watch:
                yield
        except Exception:  # DuckDB's InterruptException, or pyarrow's OSError reading the stream
            if watch.tripped:
                raise TableError(f"the query grew this process by more than {QUERY_GROWTH:,} bytes (the limit), "
                                 f"building a value or result too large to hold; select shorter values "
                                 f"(e.g. left(s, 1000)) or fewer rows") from None
            raise

    def _prepare(self, query: str) -> None:
        """Refuse anything but one SELECT; register the views of the tables it names."""
        import duckdb

        try:
            statements = duckdb.extract_statements(query)
        except duckdb.Error as e:
            raise TableError(self._explain(e, query)) from e
        if not statements:
            raise TableError('empty query; pass one SELECT, e.g. "SELECT depth, width, test_acc FROM trials"')
        if len(statements) != 1:
            raise TableError(f"expected one SQL statement, got {len(statements)}; run one SELECT at a time")
        if statements[0].type != duckdb.StatementType.SELECT:
            kind = statements[0].type.name.replace("_STATEMENT", "")
            raise TableError(f"only SELECT queries read a sweep; {kind} statements are refused (tables are read-only)")
        try:  # only the tables the query names: on object storage each one costs a listing
            named = {t.lower() for t in duckdb.get_table_names(query)} & set(SCHEMAS)
        except duckdb.Error:
            named = set(SCHEMAS)
        self._register(sorted(named))

    def _reader(self, query: str, params: Any) -> pa.RecordBatchReader:
        import duckdb

        try:
            return self._con.sql(query, params=params).to_arrow_reader(BATCH_ROWS)
        except duckdb.Error as e:
            raise TableError(self._explain(e, query)) from e

    def _bounded(self, reader: pa.RecordBatchReader, query: str, *, total_bytes: bool = True) -> Iterator[pa.RecordBatch]:
        """The reader's batches; past `max_rows` rows, or `max_bytes` bytes (in all when
        `total_bytes`, else per batch: a stream holds one batch at a time), a TableError."""
        import duckdb

        rows = size = 0
        try:
            for batch in reader:
                rows, size = rows + batch.num_rows, (size if total_bytes else 0) + batch.nbytes
                if rows > self.max_rows:
                    raise TableError(f"the query's result passed {self.max_rows:,} rows (the limit); add LIMIT or "
                                     f"WHERE, aggregate, or raise the limit (--limit-rows)")
                if size > self.max_bytes:
                    raise TableError(f"the query's result passed {self.max_bytes:,} bytes (the limit); select fewer "
                                     f"or shorter columns, or raise the limit (--limit-bytes)")
                yield batch
        except (duckdb.Error, pa.ArrowException) as e:
            raise TableError(self._explain(e, query)) from e

    def table(self, name: str, *, columns: list[str] | None = None, **filters: Any) -> pd.DataFrame:
        """Rows of one table, optionally only some `columns`, where every filter holds.

        A filter `col=value` keeps rows equal to value; a list, tuple or set keeps rows in
        it; None keeps rows where the column is null. E.g. ``table("trials", depth=[8, 56],
        status="done")``.
        """
        known = table_schema(name).names
        unknown = [c for c in [*(columns or []), *filters] if c not in known]
        if unknown:
            raise TableError(f"table '{name}' has no column {', '.join(map(repr, unknown))}; "
                             f"its columns are {', '.join(known)}")
        where, params = [], []
        for col, value in filters.items():
            if value is None:
                where.append(f'"{col}" IS NULL')
            elif isinstance(value, (list, tuple, set, frozenset)):
                values = list(value)
                where.append(f'"{col}" IN ({", ".join("?" * len(values))})' if values else "false")
                params.extend(values)
            else:
                where.append(f'"{col}" = ?')
                params.append(value)
        select = ", ".join(f'"{c}"' for c in columns) if columns else "*"
        clause = f" WHERE {' AND '.join(where)}" if where else ""
        return self.sql(f'SELECT {select} FROM "{name}"{clause}', params)

    def tables(self) -> pd.DataFrame:
        """One row per table: name, rows, parts, and its columns as 'name TYPE' strings."""
        self._register()
        rows = []
        for name in SCHEMAS:
            desc = self._con.execute(f'DESCRIBE "{name}"').df()
            try:
                n_rows = self._datasets[name].count_rows()  # from the parts' footers
            except (pa.ArrowInvalid, OSError) as e:
                raise TableError(f"table '{name}': a part is unreadable ({e}); delete it and re-run the "
                                 f"stage that writes it") from e
            parts = len(getattr(self._datasets[name], "files", []))  # an empty table: in memory
            rows.append({"table": name, "rows": n_rows, "parts": parts,
                         "columns": [f"{c} {t}" for c, t in zip(desc["column_name"], desc["column_type"])]})
        return pd.DataFrame(rows)

    # --------------------------------------------------------------- internals
    def _register(self, names: list[str] | None = None) -> None:
        """(Re)create one view per table (`names`, default all) over the parts present now."""
        for name in SCHEMAS if names is None else names:
            self._datasets[name] = _dataset(self.store, name)
            self._con.register(name, self._datasets[name])

    def _explain(self, e: duckdb.Error, query: str) -> str:
        """DuckDB's error as one line naming what exists."""
        import duckdb

        text = str(e).strip()
        first = re.sub(r"^[A-Za-z ]+ Error: ", "", text.splitlines()[0]).rstrip("!")
        first = first.replace("Values list ", "Table ")  # DuckDB's name for a registered view
        missing_table = re.search(r"Table with name (\S+) does not exist", text)
        if isinstance(e, duckdb.CatalogException) and missing_table:
            return str(unknown_table(missing_table.group(1)))
        if isinstance(e, duckdb.BinderException) and "column" in first:
            try:
                used = sorted(t for t in duckdb.get_table_names(query) if t in SCHEMAS)
            except duckdb.Error:
                used = []
            listing = "; ".join(f"{t} has {', '.join(SCHEMAS[t].names)}" for t in used)
            return f"{first}; {listing}" if listing else first
        if isinstance(e, duckdb.PermissionException):
            return (f"a query reads only the sweep's tables ({', '.join(SCHEMAS)}); files, databases and "
                    f"extensions are refused ({first})")
        if isinstance(e, duckdb.OutOfMemoryException):
            return (f"the query needs more than {QUERY_MEMORY} of working memory (the limit); aggregate or "
                    f"filter before joining or sorting, or add LIMIT")
        if isinstance(e, duckdb.ParserException):
            return f"bad SQL: {first}"
        if isinstance(e, (duckdb.IOException, duckdb.InvalidInputException)) and "parquet" in text.lower():
            return (f"a table part is unreadable ({first}); delete it and re-run the stage that "
                    f"writes it")
        return f"query failed: {first}"


def _dataset(store: SweepStore, name: str) -> pyarrow.dataset.Dataset:
    """A lazy Arrow dataset over the table's finished Parquet parts, read with the table's schema."""
    import pyarrow.dataset as ds

    keys = store.part_keys(name)
    if not keys:
        return ds.dataset(SCHEMAS[name].empty_table())
    paths = [store.part_path(name, k) for k in keys]
    return ds.dataset(paths, schema=SCHEMAS[name], format="parquet", filesystem=store.fs)


class _Growth:
    """While open, a thread reads this process's resident memory every 20 ms (Linux: /proc/self/statm)
    and interrupts `con`'s query once it has grown by more than `limit` bytes; `tripped` says so."""

    def __init__(self, con: duckdb.DuckDBPyConnection, limit: int) -> None:
        self.con, self.limit, self.tripped = con, limit, False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True, name="repsweep-query-memory")

    @staticmethod
    def _resident() -> int | None:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
        except OSError:
            return None  # not Linux: no watch

    def __enter__(self) -> _Growth:
        self._base = self._resident()
        if self._base is not None:
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            if (self._resident() or 0) - self._base > self.limit:
                self.tripped = True
                self.con.interrupt()
                return
