"""The `repsweep` command line.

    repsweep run SPEC          train the grid (Ray Tune), then compare the models
    repsweep resume SWEEP      finish an interrupted sweep; finished trials are not re-run
    repsweep compare SWEEP     run (or finish) the comparison stage on its own
    repsweep submit SPEC --address URL   the same as `run`, as a Ray Job on a cluster
    repsweep status SWEEP      done / running / interrupted / failed / pending trials, the driver
    repsweep tables SWEEP      the tables with their columns, types and row counts
    repsweep query SWEEP SQL   SQL over the tables (each one a view), as a table, CSV or JSON
    repsweep plot SWEEP KIND   one chart (figure1, pc1, ...) as HTML, PNG or SVG
    repsweep findings SWEEP    the study's six claims, each with this sweep's numbers and a verdict
    repsweep report SWEEP      the self-contained HTML report: findings first, then every chart
    repsweep demo              run the demo sweep (examples/demo.yaml) end to end on the bundled digits

`run` and `demo` train, compare and write the report; the demo takes about 10 minutes on 2 cores.

SWEEP is the folder (or URI) a run created: <storage>/<name>, e.g. ./repsweep-results/demo.
Bad input ends with one line on stderr and exit code 2; nothing is written before the spec
and the dataset are checked. `--address` joins a running Ray cluster instead of starting one.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
import typing
from pathlib import Path
from typing import Any

from repsweep.orchestrator.cluster.local_ray import joins_cluster, start_ray
from repsweep.orchestrator.progress import TrialProgress, comparison_progress

EXIT_USAGE = 2

log = logging.getLogger("repsweep")


# ----------------------------------------------------------------------- commands

def cmd_run(args: argparse.Namespace) -> int:
    from repsweep.analysis.tables.store import SweepStore
    from repsweep.orchestrator.training.data import check_dataset
    from repsweep.orchestrator.cluster.lock import check_free, hold_sweep
    from repsweep.orchestrator.spec import load_spec
    from repsweep.orchestrator.cluster.submit import record_job
    from repsweep.orchestrator.training.sweep import open_sweep

    spec = load_spec(args.spec)
    check_dataset(spec.dataset)
    check_free(SweepStore(spec.sweep_uri))  # refuse before Ray starts; hold_sweep settles races
    start_ray(args.address)
    _check_resources(spec, args, train=True)  # before anything is written
    store = open_sweep(spec)
    with hold_sweep(store, args.command):
        record_job(store)  # a submitted sweep notes its Ray job, for `repsweep status`
        return _train_and_report(spec, store, args)


def cmd_resume(args: argparse.Namespace) -> int:
    from repsweep.orchestrator.training.data import check_dataset
    from repsweep.orchestrator.cluster.lock import check_free, hold_sweep
    from repsweep.orchestrator.training.sweep import load_sweep

    spec, store = load_sweep(args.sweep)
    check_dataset(spec.dataset)
    check_free(store)
    start_ray(args.address)
    _check_resources(spec, args, train=True)
    with hold_sweep(store, "resume"):
        return _train_and_report(spec, store, args)


def demo_spec() -> Path:
    """The demo's spec, from the installed package's data (`repsweep.examples`), not the source tree."""
    from importlib.resources import files

    return Path(str(files("repsweep.examples") / "demo.yaml"))


def cmd_demo(args: argparse.Namespace) -> int:
    args.spec = str(demo_spec())
    return cmd_run(args)


def _train_and_report(spec: Any, store: Any, args: argparse.Namespace) -> int:
    from repsweep.orchestrator.grid import expand_grid
    from repsweep.orchestrator.training.sweep import train, trial_status

    t0 = time.perf_counter()
    n = len(expand_grid(spec))
    print(f"sweep '{spec.name}': {n} trials -> {store.uri}")
    counts = train(spec, store, progress=TrialProgress(n))
    print(f"training: {_counts(counts)} in {time.perf_counter() - t0:.0f} s")
    status = trial_status(spec, store)
    for _, r in status[status["status"] == "failed"].iterrows():
        print(f"  failed {r['trial_id']}: {r['error']}")
    if counts.get("done", 0) + counts.get("failed", 0) < n:
        print(f"training did not finish; continue with: repsweep resume {store.uri}")
        return 1
    if not counts.get("done", 0):
        print(f"training: every trial failed, nothing to compare; see 'repsweep status {store.uri}'")
        return 1
    rc = _compare(spec, store)
    from repsweep.analysis.present.report import write_report
    from repsweep.orchestrator.grid import outline

    from repsweep.analysis.study.findings import lines
    from repsweep.analysis.tables.query import open_results
    from repsweep.orchestrator.space import reported

    for line in lines(open_results(store).table("findings").sort_values("claim")):
        print(line)
    with reported(store, "the report"):
        print(f"report: {write_report(store, outline=outline(spec))}")
    print(f"tables: {store.uri_of('tables')}")
    print(f"next:   repsweep status {store.uri}    (repsweep findings {store.uri}: the claims again)")
    print(f'        repsweep query {store.uri} "SELECT depth, width, data_fraction, test_acc FROM trials"')
    return rc


def _compare(spec: Any, store: Any) -> int:
    from repsweep.orchestrator.comparison.compare import compare
    from repsweep.orchestrator.space import reported

    t0 = time.perf_counter()
    with reported(store, "the comparison"):
        out = compare(spec, store, progress=comparison_progress)
    for key, err in out["failed"].items():
        print(f"  failed {key}: {err}")
    failed_tiles = sum(k.startswith("tile ") for k in out["failed"])
    print(f"comparison: {len(out['plan'].tiles) - failed_tiles} of {len(out['plan'].tiles)} "
          f"tiles done in {time.perf_counter() - t0:.0f} s")
    return 1 if out["failed"] else 0


def cmd_compare(args: argparse.Namespace) -> int:
    from repsweep.orchestrator.cluster.lock import check_free, hold_sweep
    from repsweep.orchestrator.training.sweep import load_sweep

    spec, store = load_sweep(args.sweep)
    check_free(store)
    start_ray(args.address)
    _check_resources(spec, args, train=False)
    with hold_sweep(store, "compare"):
        return _compare(spec, store)


def _check_resources(spec: Any, args: argparse.Namespace, *, train: bool) -> None:
    from repsweep.orchestrator.cluster.resources import check_resources

    waiting = check_resources(spec, train=train, embedded=not joins_cluster(args.address))
    if waiting:
        print(waiting)


def cmd_status(args: argparse.Namespace) -> int:
    import pandas as pd

    from repsweep.orchestrator.cluster.lock import holder
    from repsweep.orchestrator.cluster.submit import job_states
    from repsweep.orchestrator.training.sweep import load_sweep, trial_status

    spec, store = load_sweep(args.sweep)
    st = trial_status(spec, store)
    driver = holder(store)
    if driver is None:  # trials left 'running' by a driver that is gone
        st["status"] = st["status"].replace("running", "interrupted")
    print(f"sweep '{spec.name}' at {store.uri}: {_counts(st['status'].value_counts().to_dict())}")
    for job_id, state in job_states(store):
        print(f"Ray job {job_id}: {state}")
    if driver is not None:
        print(f"driven by {driver.describe()}")
    elif (st["status"] == "interrupted").any():
        print(f"no driver is running; finish with: repsweep resume {store.uri}")
    done = st[st["status"] == "done"]
    if len(done):
        best = done.loc[done["test_acc"].idxmax()]
        print(f"best test accuracy {best['test_acc']:.4f} ({best['trial_id']})")
    with pd.option_context("display.width", 200, "display.max_rows", 500):
        cols = ["trial_id", "status", "epochs_done", "test_acc", "wall_time_s"]
        print(st[cols].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for _, r in st[st["error"].notna()].iterrows():  # why a trial failed, or how it resumed
        print(f"  {r['status']} {r['trial_id']}: {r['error']}")
    for _, r in st[st["exclusion_reason"].notna()].iterrows():  # set by the comparison (analysis/study/quality.py)
        print(f"  excluded from the findings {r['trial_id']}: {r['exclusion_reason']}")
    return 0


def cmd_submit(args: argparse.Namespace) -> int:
    """repsweep submit SPEC --address URL: the sweep as a Ray Job on a cluster (a few seconds)."""
    from repsweep.orchestrator.cluster.submit import submit

    job_id, spec = submit(args.spec, args.address)
    print(f"submitted sweep '{spec.name}' as Ray job {job_id} to {args.address}")
    print(f"results: {spec.sweep_uri}")
    print(f"follow:  repsweep status {spec.sweep_uri}")
    print(f"         ray job logs -f --address {args.address} {job_id}")
    print(f"stop:    ray job stop --address {args.address} {job_id}   (then 'repsweep resume' goes on)")
    return 0


def cmd_tables(args: argparse.Namespace) -> int:
    """repsweep tables SWEEP: each table's row count, parts, and columns with their SQL types."""
    import textwrap

    from repsweep.analysis.tables.query import open_results

    for _, t in open_results(args.sweep).tables().iterrows():
        print(f"{t['table']}  ({t['rows']:,} rows in {t['parts']} parts)")
        print(textwrap.fill(", ".join(t["columns"]), width=100, initial_indent="    ",
                            subsequent_indent="    "))
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    """repsweep query SWEEP SQL: the result as an aligned table, CSV or JSON (reads only)."""
    import pandas as pd

    from repsweep.analysis.tables.query import open_results

    res = open_results(args.sweep, max_rows=args.limit_rows, max_bytes=args.limit_bytes)
    if args.format == "csv":  # streamed: one batch in memory at a time
        for i, batch in enumerate(res.sql_batches(args.sql)):
            batch.to_pandas().to_csv(sys.stdout, index=False, header=i == 0)
        return 0
    df = res.sql(args.sql)
    if args.format == "json":
        print(df.to_json(orient="records", date_format="iso", indent=1))
    else:
        with pd.option_context("display.width", 250, "display.max_rows", args.max_rows,
                               "display.max_columns", None, "display.max_colwidth", 80):
            print(df.to_string(index=False, max_rows=args.max_rows))
        if len(df) > args.max_rows:
            print(f"({len(df):,} rows; --max-rows N shows more, --format csv shows all)")
    return 0


def cmd_plot(args: argparse.Namespace) -> int:
    """repsweep plot SWEEP KIND --out FILE: one chart of analysis.present.charts.CHARTS, saved by suffix."""
    from repsweep.analysis.present.charts import make_chart
    from repsweep.analysis.tables.query import open_results
    from repsweep.analysis.present.report import save_chart

    options = {k: getattr(args, k) for k in ("data_fraction", "depth", "width", "seed", "a", "b")}
    chart = make_chart(args.kind, open_results(args.sweep), **options)
    print(save_chart(chart, args.out))
    return 0


def cmd_findings(args: argparse.Namespace) -> int:
    """repsweep findings SWEEP: the study's six claims, each with this sweep's numbers and a verdict."""
    from repsweep.analysis.study.findings import lines
    from repsweep.analysis.tables.query import open_results

    frame = open_results(args.sweep).table("findings").sort_values("claim")
    if frame.empty:
        print(f"no findings yet; run 'repsweep compare {args.sweep}'")
        return 1
    for line in lines(frame):
        print(line)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """repsweep report SWEEP: the self-contained HTML report (a few seconds)."""
    from repsweep.analysis.present.report import write_report
    from repsweep.orchestrator.grid import stored_outline

    print(write_report(args.sweep, args.out, stored_outline(args.sweep)))
    return 0


def _counts(counts: dict[str, int]) -> str:
    order = ["done", "running", "interrupted", "failed", "pending"]
    return ", ".join(f"{counts.get(k, 0)} {k}" for k in order if counts.get(k, 0)) or "no trials"


# --------------------------------------------------------------------------- main

class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr (exit code 2), like every other bad input."""

    def error(self, message: str) -> typing.NoReturn:
        self.exit(EXIT_USAGE, f"repsweep: error: {message} (see '{self.prog} --help')\n")


def _positive_int(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 1, got {text!r}")
    return int(text)


def build_parser() -> argparse.ArgumentParser:
    from repsweep.analysis.tables.query import MAX_RESULT_BYTES, MAX_RESULT_ROWS
    from repsweep.orchestrator.training.sweep import package_version

    p = _Parser(prog="repsweep", description=__doc__.split("\n\n")[0])
    p.add_argument("--version", action="version", version=f"repsweep {package_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    addr = dict(default=None, help="Ray cluster address (default: start Ray locally)")
    s = sub.add_parser("run", help="train (and compare) the sweep a YAML spec describes")
    s.add_argument("spec")
    s.add_argument("--address", **addr)
    s.set_defaults(func=cmd_run)
    s = sub.add_parser("resume", help="finish an interrupted sweep")
    s.add_argument("sweep")
    s.add_argument("--address", **addr)
    s.set_defaults(func=cmd_resume)
    s = sub.add_parser("compare", help="run (or finish) the comparison stage of a sweep")
    s.add_argument("sweep")
    s.add_argument("--address", **addr)
    s.set_defaults(func=cmd_compare)
    s = sub.add_parser("submit", help="run the sweep a YAML spec describes as a Ray Job on a cluster")
    s.add_argument("spec")
    s.add_argument("--address", required=True, help="the cluster's job API, e.g. http://127.0.0.1:8265 "
                   "(forwarded by 'ray dashboard cluster.yaml')")
    s.set_defaults(func=cmd_submit)
    s = sub.add_parser("status", help="trial states and best accuracy of a sweep")
    s.add_argument("sweep")
    s.set_defaults(func=cmd_status)
    s = sub.add_parser("demo", help="run the demo sweep end to end (digits, local Ray; its spec ships as repsweep/examples/demo.yaml)")
    s.add_argument("--address", **addr)
    s.set_defaults(func=cmd_demo)
    s = sub.add_parser("tables", help="list a sweep's tables: columns, types, row counts")
    s.add_argument("sweep")
    s.set_defaults(func=cmd_tables)
    s = sub.add_parser("query", help="run SQL over a sweep's tables (each table is a view)")
    s.add_argument("sweep")
    s.add_argument("sql", help='e.g. "SELECT depth, width, avg(test_acc) FROM trials GROUP BY ALL"')
    s.add_argument("--format", choices=["table", "csv", "json"], default="table")
    s.add_argument("--max-rows", type=_positive_int, default=100, help="rows an aligned table shows (default 100)")
    s.add_argument("--limit-rows", type=_positive_int, default=MAX_RESULT_ROWS,
                   help=f"rows a result may have (default {MAX_RESULT_ROWS:,}); more is refused in one line")
    s.add_argument("--limit-bytes", type=_positive_int, default=MAX_RESULT_BYTES,
                   help=f"bytes a result may hold (default {MAX_RESULT_BYTES:,}; with --format csv, per streamed batch)")
    s.set_defaults(func=cmd_query)
    from repsweep.analysis.present.charts import CHARTS  # light: Altair is imported when a chart is drawn

    s = sub.add_parser("plot", help="draw one chart of a sweep as HTML, PNG or SVG")
    s.add_argument("sweep")
    s.add_argument("kind", choices=list(CHARTS))
    s.add_argument("--out", required=True, help="file to write: .html (offline), .png or .svg")
    s.add_argument("--data-fraction", type=float, help="figure1, cross-seed, cross-arch: which fraction")
    s.add_argument("--depth", type=int, help="fractions: which architecture's depth")
    s.add_argument("--width", type=int, help="fractions: which architecture's width")
    s.add_argument("--seed", type=int, help="figure1, fractions, cross-arch: which seed")
    s.add_argument("--a", help="class-accuracy: configuration a, e.g. d56-w1 or d56-w1-f0.5")
    s.add_argument("--b", help="class-accuracy: configuration b, e.g. d8-w2")
    s.set_defaults(func=cmd_plot)
    s = sub.add_parser("findings", help="the study's claims with this sweep's numbers and a verdict each")
    s.add_argument("sweep")
    s.set_defaults(func=cmd_findings)
    s = sub.add_parser("report", help="write the sweep's self-contained HTML report")
    s.add_argument("sweep")
    s.add_argument("--out", default=None, help="file to write (default: <sweep>/report.html)")
    s.set_defaults(func=cmd_report)
    return p


def main(argv: list[str] | None = None) -> int:
    from repsweep.analysis.tables.schemas import TableError
    from repsweep.models import CheckpointError
    from repsweep.orchestrator.spec import SpecError

    args = build_parser().parse_args(argv)
    signal.signal(signal.SIGTERM, _terminated)  # what Ray Jobs and schedulers send: ends as Ctrl-C does
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except (SpecError, TableError) as e:
        print(f"repsweep: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except CheckpointError as e:
        print(f"repsweep: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nrepsweep: interrupted; finish with 'repsweep resume <sweep>'", file=sys.stderr)
        return 130
    except BrokenPipeError:  # output piped into `head` and the like
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except Exception as e:
        library = _raised_in(e)
        if library is None or os.environ.get("REPSWEEP_TRACEBACK"):
            raise  # repsweep's own bug: the traceback is what a report needs
        print(f"repsweep: error: {library}: {_one_line(e)} (REPSWEEP_TRACEBACK=1 shows where)", file=sys.stderr)
        return 1


def _terminated(signum: int, frame: Any) -> None:
    """SIGTERM: raise KeyboardInterrupt, so the driver ends its Ray and says how to resume."""
    raise KeyboardInterrupt


LIBRARIES = ("pyarrow", "duckdb", "ray", "torch", "torchvision", "altair", "vl_convert", "yaml")


def _raised_in(e: BaseException) -> str | None:
    """The library (of LIBRARIES) that raised `e`: the innermost frame of it or of repsweep decides
    (None for repsweep's own code), else the module of the exception's type."""
    tb, library = e.__traceback__, None
    while tb is not None:
        module = str(tb.tb_frame.f_globals.get("__name__", "")).split(".")[0]
        if module == "repsweep":
            library = None
        elif module in LIBRARIES:
            library = module
        tb = tb.tb_next
    return library or next((n for n in LIBRARIES if type(e).__module__.split(".")[0].lstrip("_") == n), None)


def _one_line(e: BaseException, limit: int = 300) -> str:
    """The exception's first non-empty line, cut to `limit` characters."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = f"{type(e).__name__}: {lines[0] if lines else '(no message)'}"
    return text if len(text) <= limit else text[:limit - 3] + "..."


if __name__ == "__main__":
    sys.exit(main())
