"""The HTML report of a real sweep: its summary, every chart, and rendering offline in Chromium."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from repsweep.analysis.present.charts import CHARTS
from repsweep.analysis.tables.query import open_results
from repsweep.analysis.present.report import REPORT_FILE, report_html, write_report
from repsweep.orchestrator.cli import main
from repsweep.orchestrator.grid import stored_outline
from tests.conftest import N_TRIALS

pytestmark = pytest.mark.timeout(300)

CHROMIUM = next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)
needs_chromium = pytest.mark.skipif(
    CHROMIUM is None, reason="headless Chromium is not installed (Debian: apt-get install chromium; .ci/run installs it)")

# Injected first into <head>: collect script errors, unhandled rejections and console errors
# and warnings; once every chart div is marked (rendered or error), write them into the DOM.
_PROBE = """<script>
window.__problems = [];
addEventListener("error", (e) => __problems.push("error: " + e.message));
addEventListener("unhandledrejection", (e) => __problems.push("unhandled rejection: " + e.reason));
for (const level of ["error", "warn"]) {
  const original = console[level];
  console[level] = (...args) => { __problems.push("console." + level + ": " + args.join(" ")); original(...args); };
}
function __finish() {
  if ([...document.querySelectorAll("div.chart")].some((c) => !c.dataset.rendered)) return setTimeout(__finish, 50);
  document.body.dataset.problems = JSON.stringify(__problems);
  document.body.dataset.probeDone = "yes";
}
addEventListener("load", () => setTimeout(__finish, 50));
</script>"""


def _render(page: Path, tmp: Path) -> str:
    """The DOM of `page` after headless Chromium ran its scripts, with every host unreachable."""
    probed = tmp / f"probed-{page.name}"
    probed.write_text(page.read_text().replace("<head>", "<head>\n" + _PROBE, 1))
    out = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--host-resolver-rules=MAP * ~NOTFOUND", f"--user-data-dir={tmp / 'chromium-profile'}",
         "--virtual-time-budget=60000", "--dump-dom", probed.as_uri()],
        capture_output=True, text=True, timeout=180)
    assert 'data-probe-done="yes"' in out.stdout, f"Chromium did not finish the page: {out.stderr[-2000:]}"
    return out.stdout


def _drawable(page: Path) -> list[str]:
    """The chart kinds a report should draw: all but dominant-removal when no model has a block."""
    skipped = "dominant-removal" if "Not drawn: no dominant_removal table yet" in page.read_text() else None
    return [k for k in CHARTS if k != skipped]


def _charts_in(dom: str) -> dict[str, str]:
    """Each chart div's id -> its HTML up to the next chart div."""
    starts = [m.start() for m in re.finditer(r'<div class="chart[^"]*" id="', dom)] + [len(dom)]
    chunks = [dom[a:b] for a, b in zip(starts, starts[1:])]
    return {re.search(r'id="([^"]+)"', c).group(1): c for c in chunks}


def _problems(dom: str) -> list[str]:
    raw = re.search(r'data-problems="([^"]*)"', dom).group(1)
    return json.loads(raw.replace("&quot;", '"').replace("&amp;", "&"))


def _copy_tables(sweep: Path, dest: Path, tables: tuple[str, ...] | None = None) -> Path:
    dest.mkdir(parents=True)
    shutil.copy(sweep / "spec.yaml", dest / "spec.yaml")
    for table in tables or [p.name for p in (sweep / "tables").iterdir()]:
        shutil.copytree(sweep / "tables" / table, dest / "tables" / table)
    return dest


@pytest.fixture(scope="module")
def report(results_sweep, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("report") / "report.html"
    assert write_report(str(results_sweep), str(out), stored_outline(str(results_sweep))) == str(out)
    return out


def test_report_holds_the_summary_and_a_div_per_chart(report, results_sweep):
    page = report.read_text()
    assert "<h1>repsweep report: results</h1>" in page
    assert f"{N_TRIALS} trials planned on <b>digits</b>, 1 epoch each" in page  # not "1 epochs"
    assert f"trials: {N_TRIALS} done" in page and "failed trials" not in page
    acc = open_results(str(results_sweep)).sql(
        "SELECT avg(test_acc) AS a FROM trials WHERE depth = 14 AND width = 1 AND data_fraction = 0.5")
    assert f"{acc['a'].iloc[0]:.4f} (2)" in page  # mean over the 2 seeds, in the accuracy table
    assert "cross-model CKA of 32 model pairs" in page  # 8 cross-seed + 24 cross-architecture
    drawn = re.findall(r'<div class="chart" id="chart-([a-z0-9-]+)">', page)
    not_drawn = [k for k in CHARTS if k not in drawn]
    assert drawn == [k for k in CHARTS if k in drawn] and set(not_drawn) <= {"dominant-removal"}
    assert page.index("<h2>findings</h2>") < page.index("<h2>summary</h2>")  # the report opens with them
    assert len(re.findall(r'<li class="finding">', page)) == 6


def test_without_the_specs_outline_the_summary_shows_the_grid_the_tables_hold(results_sweep):
    page = report_html(open_results(str(results_sweep)))  # no outline: as for a sweep whose spec.yaml is gone
    assert f"{N_TRIALS} trials planned on <b>digits</b>, 1 epoch each" in page
    assert stored_outline(str(results_sweep)).planned == N_TRIALS  # the spec's grid is that product


def test_report_needs_no_network(report):
    page = report.read_text()
    assert not re.search(r"<script[^>]+src=", page) and not re.search(r"<link[^>]+href=", page)
    assert "window.vegaEmbed=" in page  # the libraries are inlined


@needs_chromium
def test_report_renders_every_chart_in_headless_chromium_without_errors(report, tmp_path):
    dom = _render(report, tmp_path)
    rendered = _charts_in(dom)
    assert list(rendered) == [f"chart-{k}" for k in _drawable(report)]
    for cid, html in rendered.items():
        assert 'data-rendered="true"' in html.split(">", 1)[0], cid
        assert re.search(r'<svg[^>]* class="marks"', html), cid
    assert _problems(dom) == []


@needs_chromium
def test_report_of_an_uncompared_sweep_with_a_failure_says_what_is_missing(results_sweep, tmp_path):
    sweep = _copy_tables(results_sweep, tmp_path / "s", ("trials", "layers", "predictions"))
    res = open_results(str(sweep))
    key = res.store.part_keys("trials")[0]
    res.store.write_part("trials", key, res.store.read_part("trials", key).assign(
        status="failed", error="diverged: training loss became nan in epoch 2", test_acc=np.nan))
    where = write_report(str(sweep))
    assert where == str(sweep / REPORT_FILE)
    page = Path(where).read_text()
    assert f"trials: {N_TRIALS - 1} done, 1 failed" in page and "diverged: training loss became nan" in page
    assert page.count("Not drawn: ") == len(CHARTS) - 1 and "repsweep compare SWEEP" in page
    dom = _render(Path(where), tmp_path)
    assert list(_charts_in(dom)) == ["chart-accuracy"] and _problems(dom) == []
    assert 'data-rendered="true"' in dom


@needs_chromium
def test_a_single_chart_saved_as_html_renders_offline(results_sweep, tmp_path, capsys):
    out = tmp_path / "figure1.html"
    assert main(["plot", str(results_sweep), "figure1", "--out", str(out)]) == 0
    dom = _render(out, tmp_path)
    assert 'data-rendered="true"' in dom and re.search(r'<svg[^>]* class="marks"', dom) and _problems(dom) == []


def test_cli_report_writes_into_the_sweep_or_to_out(results_sweep, tmp_path, capsys):
    sweep = _copy_tables(results_sweep, tmp_path / "s")
    assert main(["report", str(sweep)]) == 0
    assert capsys.readouterr().out.strip() == str(sweep / REPORT_FILE) and (sweep / REPORT_FILE).is_file()
    assert main(["report", f"file://{sweep}", "--out", str(tmp_path / "r.html")]) == 0
    assert (tmp_path / "r.html").read_text().count('<div class="chart"') == len(_drawable(sweep / REPORT_FILE))
