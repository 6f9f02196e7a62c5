"""SQL over a real sweep's tables: views, filters, listings, one-line errors, the CLI."""

from __future__ import annotations

import contextlib
import io
import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from repsweep.analysis.tables.query import open_results
from repsweep.analysis.tables.schemas import SCHEMAS, TableError
from repsweep.analysis.tables.store import SweepStore
from repsweep.orchestrator.cli import main
from tests.conftest import LAYERS, N_TRIALS

pytestmark = pytest.mark.timeout(300)


def test_sql_answers_from_every_part_of_the_tables(results_sweep):
    res = open_results(str(results_sweep))
    store = SweepStore(str(results_sweep))
    got = res.sql("SELECT depth, width, count(*) AS n, avg(test_acc) AS acc FROM trials "
                  "GROUP BY ALL ORDER BY ALL")
    want = (store.read_table("trials").groupby(["depth", "width"])["test_acc"]
            .agg(n="size", acc="mean").reset_index())
    assert got["n"].tolist() == want["n"].tolist() == [4, 4, 4, 4]
    assert got["acc"].to_numpy() == pytest.approx(want["acc"].to_numpy())
    n = res.sql("SELECT count(*) AS n FROM predictions")["n"].iloc[0]
    assert n == len(store.read_table("predictions")) == N_TRIALS * 360


def test_tables_join_on_their_keys(results_sweep):
    res = open_results(str(results_sweep))
    # the diagonal of each within-model CKA matrix is 1, one row per captured layer
    diag = res.sql("""
        SELECT t.depth, count(*) AS n, min(c.cka) AS lo, max(c.cka) AS hi
        FROM cka c JOIN trials t ON c.trial_a = t.trial_id
        WHERE c.trial_a = c.trial_b AND c.layer_a = c.layer_b GROUP BY t.depth ORDER BY t.depth""")
    assert diag["n"].tolist() == [8 * LAYERS[8], 8 * LAYERS[14]]
    assert diag["lo"].min() == pytest.approx(1.0) and diag["hi"].max() == pytest.approx(1.0)
    per_layer = res.sql("SELECT l.trial_id, count(*) AS n FROM layers l JOIN pca p "
                        "ON l.trial_id = p.trial_id AND l.layer = p.layer GROUP BY ALL")
    assert len(per_layer) == N_TRIALS


def test_table_filters_by_value_list_and_null(results_sweep):
    res = open_results(str(results_sweep))
    trials = SweepStore(str(results_sweep)).read_table("trials")
    got = res.table("trials", depth=8, seed=[0, 1], status="done")
    assert sorted(got["trial_id"]) == sorted(trials.loc[trials["depth"] == 8, "trial_id"])
    assert list(res.table("trials", columns=["trial_id", "width"], width=2).columns) == ["trial_id", "width"]
    assert len(res.table("trials", error=None)) == N_TRIALS  # no trial failed
    assert res.table("trials", depth=[]).empty


def test_listing_names_every_table_with_types_and_row_counts(results_sweep):
    listing = open_results(str(results_sweep)).tables().set_index("table")
    assert list(listing.index) == list(SCHEMAS)
    store = SweepStore(str(results_sweep))
    for name in SCHEMAS:
        assert listing.loc[name, "rows"] == len(store.read_table(name)), name
        assert [c.split()[0] for c in listing.loc[name, "columns"]] == SCHEMAS[name].names
    assert "depth DOUBLE" in listing.loc["trials", "columns"]
    assert "cka DOUBLE" in listing.loc["cka", "columns"]


def test_a_table_with_no_parts_is_an_empty_view_with_its_columns(results_sweep, tmp_path):
    shutil.copytree(results_sweep / "tables" / "trials", tmp_path / "s" / "tables" / "trials")
    res = open_results(str(tmp_path / "s"))
    cka = res.sql("SELECT * FROM cka")
    assert cka.empty and list(cka.columns) == SCHEMAS["cka"].names
    assert len(res.sql("SELECT * FROM trials")) == N_TRIALS


def test_each_query_sees_the_parts_written_since_opening(results_sweep, tmp_path):
    shutil.copytree(results_sweep / "tables" / "trials", tmp_path / "s" / "tables" / "trials")
    res = open_results(str(tmp_path / "s"))
    assert res.sql("SELECT count(*) AS n FROM class_accuracy")["n"].iloc[0] == 0
    res.store.write_part("class_accuracy", "x", [{"trial_id": "x", "label": 3, "n_examples": 36, "accuracy": 0.5}])
    assert res.sql("SELECT count(*) AS n FROM class_accuracy")["n"].iloc[0] == 1


def test_a_file_uri_reads_the_same_tables(results_sweep):
    by_path = open_results(str(results_sweep)).sql("SELECT * FROM disagreement ORDER BY trial_a, trial_b")
    by_uri = open_results(f"file://{results_sweep}").sql("SELECT * FROM disagreement ORDER BY trial_a, trial_b")
    pd.testing.assert_frame_equal(by_path, by_uri)


@pytest.mark.parametrize("query, message", [
    ("SELECT * FROM trails", "unknown table 'trails'; tables are trials, layers, predictions"),
    ("SELECT acc FROM trials", 'column "acc" not found in FROM clause; trials has trial_id, sweep'),
    ("SELECT c.nope FROM cka c JOIN trials t ON c.trial_a = t.trial_id", "cka has trial_a, layer_a"),
    ("SELEC * FROM trials", 'bad SQL: syntax error at or near "SELEC"'),
])
def test_query_errors_are_one_line_naming_what_exists(results_sweep, query, message):
    with pytest.raises(TableError) as e:
        open_results(str(results_sweep)).sql(query)
    assert message in str(e.value) and "\n" not in str(e.value)


def _refused(where: Path) -> list[str]:
    """Queries that would write, attach, install or read outside the sweep (targets under `where`)."""
    return [
        f"COPY (SELECT * FROM trials) TO '{where}/tables/trials/x.parquet'",  # would double the trials
        f"COPY trials TO '{where}/out.csv'", f"EXPORT DATABASE '{where}/db'", f"ATTACH '{where}/x.db' AS x",
        "INSTALL httpfs", "LOAD httpfs", "SET enable_external_access = true", "CREATE TABLE t AS SELECT 1",
        "CREATE VIEW v AS SELECT 1", "DROP VIEW trials", "INSERT INTO trials SELECT * FROM trials",
        "SELECT * FROM read_csv('/etc/passwd')", "SELECT * FROM '/etc/hostname'",
        f"SELECT * FROM read_parquet('{where}/tables/trials/*.parquet')", "SELECT 1; SELECT 2", "", "  ;  ",
        "PRAGMA database_list", "CALL pragma_version()",
    ]


def test_every_query_that_writes_attaches_installs_or_reads_outside_is_refused(results_sweep, tmp_path):
    sweep = tmp_path / "s"
    shutil.copytree(results_sweep / "tables", sweep / "tables")
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    res = open_results(str(sweep))
    for query in _refused(sweep):
        with pytest.raises(TableError) as e:
            res.sql(query)
        assert "\n" not in str(e.value), query
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before  # nothing written
    assert len(res.sql("SELECT * FROM trials")) == N_TRIALS
    # ordinary reads still work: a CTE, a join across tables, aggregates, parameters
    got = res.sql("""WITH deep AS (SELECT trial_id FROM trials WHERE depth = 14)
                     SELECT count(*) AS n FROM predictions p JOIN deep USING (trial_id) WHERE p.correct OR NOT p.correct""")
    assert got["n"].iloc[0] == 8 * 360
    assert res.sql("SELECT count(*) AS n FROM trials WHERE depth = ?", [8])["n"].iloc[0] == N_TRIALS // 2


def test_cli_refuses_a_writing_query_and_a_bad_max_rows_in_one_line(results_sweep, capsys):
    for args in (["query", str(results_sweep), "COPY trials TO 'x.csv'"],
                 ["query", str(results_sweep), "SELECT 1", "--max-rows", "-1"], ["query", str(results_sweep), ""]):
        with pytest.raises(SystemExit) if "--max-rows" in args else contextlib.nullcontext():
            rc = main(args)
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("repsweep: error: "), err
        if "--max-rows" not in args:
            assert rc == 2


def test_table_errors_list_the_tables_or_the_columns(results_sweep):
    res = open_results(str(results_sweep))
    with pytest.raises(TableError, match=r"unknown table 'trial'; tables are trials, layers"):
        res.table("trial")
    with pytest.raises(TableError, match=r"table 'pca' has no column 'pc1'; its columns are trial_id, layer, pc1_fraction"):
        res.table("pca", pc1=0.5)


def test_a_folder_without_a_sweep_is_refused(tmp_path):
    with pytest.raises(TableError, match="no sweep at"):
        open_results(str(tmp_path))


def test_cli_query_prints_a_table_csv_or_json(results_sweep, capsys):
    sql = "SELECT depth, width, data_fraction, seed, test_acc FROM trials ORDER BY ALL"
    want = open_results(str(results_sweep)).sql(sql)
    assert main(["query", str(results_sweep), sql, "--format", "csv"]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(io.StringIO(capsys.readouterr().out)), want, check_dtype=False)
    assert main(["query", str(results_sweep), sql, "--format", "json"]) == 0
    assert len(json.loads(capsys.readouterr().out)) == N_TRIALS
    assert main(["query", str(results_sweep), sql, "--max-rows", "4"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].split() == ["depth", "width", "data_fraction", "seed", "test_acc"]
    assert out[-1] == f"({N_TRIALS} rows; --max-rows N shows more, --format csv shows all)"


def test_cli_tables_lists_rows_and_columns(results_sweep, capsys):
    assert main(["tables", str(results_sweep)]) == 0
    out = capsys.readouterr().out
    assert f"trials  ({N_TRIALS} rows in {N_TRIALS} parts)" in out
    assert "predictions  (5,760 rows" in out and "tiles  (" in out and "trial_a VARCHAR" in out


def test_cli_bad_query_exits_2_with_one_line(results_sweep, capsys):
    assert main(["query", str(results_sweep), "SELECT * FROM nope"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("repsweep: error: unknown table 'nope'; tables are") and err.count("\n") == 1


def test_an_unreadable_part_is_named_with_what_to_do(results_sweep, tmp_path):
    shutil.copytree(results_sweep / "tables" / "trials", tmp_path / "s" / "tables" / "trials")
    part = sorted((tmp_path / "s" / "tables" / "trials").iterdir())[0]
    part.write_bytes(b"not parquet")
    res = open_results(str(tmp_path / "s"))
    for call in (lambda: res.sql("SELECT count(*) FROM trials"), res.tables):
        with pytest.raises(TableError, match=rf"unreadable .*{part.name}.*delete it and re-run the stage"):
            call()
