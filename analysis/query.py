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

Errors are `TableError`, one line that names what exists: an unknown table lists the tables,
an unknown column lists the columns of the tables the query reads, bad SQL names the problem.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import pandas as pd
import pyarrow as pa

from repsweep.analysis.schemas import SCHEMAS, TableError, table_schema, unknown_table
from repsweep.analysis.store import SweepStore

if TYPE_CHECKING:
    import duckdb
    import pyarrow.dataset


def open_results(location: str | SweepStore) -> Results:
    """The tables of the sweep at `location` (a local path, a URI, or an open SweepStore)."""
    store = location if isinstance(location, SweepStore) else SweepStore(location)
    if not store.exists("tables") and not store.exists("spec.yaml"):
        raise TableError(f"no sweep at '{store.uri}' (no tables/ and no spec.yaml); pass the folder "
                         f"'repsweep run' created, <storage>/<name>, e.g. ./repsweep-results/demo")
    return Results(store)


class Results:
    """SQL and table access over one sweep's Parquet tables (see the module docstring)."""

    def __init__(self, store: SweepStore) -> None:
        import duckdb

        self.store = store
        # a query reads the sweep's tables and nothing else: no files, no databases, no extensions,
        # and no statement can switch that back on (the tables are Arrow datasets read by pyarrow)
        self._con = duckdb.connect(config={"enable_external_access": False, "autoinstall_known_extensions": False,
                                           "autoload_known_extensions": False})
        self._con.execute("SET lock_configuration = true")
        self._datasets: dict[str, pyarrow.dataset.Dataset] = {}

    # ----------------------------------------------------------------- queries
    def sql(self, query: str, params: list[Any] | dict[str, Any] | None = None) -> pd.DataFrame:
        """Run one SELECT (DuckDB dialect; CTEs and joins too) over the tables; `params` fill `?` or `$name`.

        Anything else (more than one statement, COPY, ATTACH, INSTALL, CREATE, SET, ...) is a
        TableError: a query only reads.
        """
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
        try:
            return self._con.sql(query, params=params).to_arrow_table().to_pandas()
        except duckdb.Error as e:
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
