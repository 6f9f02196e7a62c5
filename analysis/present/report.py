"""The sweep's report: one self-contained HTML file, and single charts as HTML, PNG or SVG.

    write_report("./repsweep-results/demo", outline=...)   # -> ./repsweep-results/demo/report.html

The report opens with the findings (the study's claims, each with this sweep's numbers and a
verdict: analysis/study/findings.py), then the sweep's summary (grid, trials, failures, accuracies,
comparison) and every chart of `analysis.present.charts.CHARTS`. It needs no network: the Vega, Vega-Lite and
Vega-Embed libraries (from vl-convert's offline bundle, ~0.9 MB) are inlined in the page
with each chart's spec and data. A chart whose tables are still empty shows why instead.
Cost: a few seconds (bundling the JavaScript, building the charts' data with DuckDB).

In the page, each chart's <div class="chart"> gets data-rendered="true" once Vega-Embed has
drawn it, or "error" with the error's text in its place.

What the spec planned (the grid, how many trials, the dataset, the epochs) comes in an
`Outline`, which the orchestrator makes from the sweep's spec (`orchestrator.training.sweep.outline`):
the report reads the tables, never the spec. Without one it shows the grid the tables hold.
"""

from __future__ import annotations

import datetime
import html
import json
import logging
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from repsweep.analysis.present.charts import CHARTS
from repsweep.analysis.tables.query import Results, open_results
from repsweep.analysis.tables.schemas import GRID_AXES, TableError
from repsweep.analysis.tables.store import SweepStore

log = logging.getLogger(__name__)

REPORT_FILE = "report.html"  # written at the sweep's root unless another path is given

_CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; }
h1 { margin-bottom: 0.2em; } h2 { margin-top: 2em; border-bottom: 1px solid #ddd; }
.meta, .caption, .note { color: #555; } .note { font-style: italic; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: right; } th { background: #f5f5f5; }
td:first-child, th:first-child { text-align: left; }
.chart { overflow-x: auto; padding: 0.5em 0; } .error { color: #b00; white-space: pre-wrap; }
.findings li { margin: 0.4em 0; } .verdict { font-weight: 600; } .verdict.holds { color: #1a7f37; }
.verdict.contradicted { color: #b00; } .verdict.inconclusive { color: #9a6700; } .verdict.not-testable { color: #777; }
.findings ul { margin: 0.2em 0; } .findings .resolve { color: #555; }
"""

# Draw every chart; mark each div rendered or failed (the report's tests read these marks).
_EMBED = """
for (const [id, spec] of Object.entries(REPSWEEP_SPECS)) {
  const el = document.getElementById(id);
  vegaEmbed(el, spec, {renderer: "svg", actions: false})
    .then(() => { el.dataset.rendered = "true"; })
    .catch((err) => { el.dataset.rendered = "error"; el.className += " error";
                      el.textContent = "This chart failed to render: " + err; });
}
"""


# ---------------------------------------------------------------------------- writing

@dataclass(frozen=True)
class Outline:
    """What the sweep's spec planned, for the report's summary."""

    name: str
    grids: list[dict[str, list]]  # each sub-grid of the spec: axis -> its values
    planned: int  # trials in the union of the sub-grids
    dataset: str
    epochs: int  # per trial (0: not one number)


def write_report(store_or_location: SweepStore | str, out_path: str | None = None,
                 outline: Outline | None = None) -> str:
    """Write the sweep's report; returns where: `out_path` (a local file) or <sweep>/report.html."""
    res = open_results(store_or_location)
    page = report_html(res, outline).encode()
    if out_path:
        _write_local(out_path, page)
        where = os.path.abspath(out_path)
    else:
        res.store.write_bytes(page, REPORT_FILE)
        where = res.store.uri_of(REPORT_FILE)
    log.info("report: %s (%.1f MB)", where, len(page) / 1e6)
    return where


def save_chart(chart: Any, path: str) -> str:
    """Save one chart by the file's suffix: .html (self-contained, offline), .png (2x) or .svg."""
    import vl_convert as vlc

    suffix = os.path.splitext(path)[1].lower()
    spec = chart.to_dict()
    if suffix == ".html":
        title = spec.get("title", {})
        text = title.get("text", "chart") if isinstance(title, dict) else str(title)
        data = _page(html.escape(text), [("chart", spec)])
    elif suffix == ".png":
        data = vlc.vegalite_to_png(spec, vl_version=_vl_version(), scale=2)  # whole pixels: no seams
    elif suffix == ".svg":
        data = vlc.vegalite_to_svg(spec, vl_version=_vl_version())
    else:
        raise TableError(f"cannot save a chart as '{path}': use a file ending in .html, .png or .svg")
    _write_local(path, data if isinstance(data, bytes) else data.encode())
    return os.path.abspath(path)


def _write_local(path: str, data: bytes) -> None:
    """Write a whole local file atomically (SweepStore.write_bytes: temp name, then rename)."""
    SweepStore(os.path.dirname(os.path.abspath(path))).write_bytes(data, os.path.basename(path))


# ----------------------------------------------------------------------------- the page

def report_html(res: Results, outline: Outline | None = None) -> str:
    """The report of one sweep as an HTML document (see the module docstring)."""
    trials = res.sql("SELECT * FROM trials ORDER BY data_fraction DESC, depth, width, seed")
    outline = outline or _from_tables(res.store, trials)
    name = outline.name
    now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    body = [f"<h1>repsweep report: {html.escape(name)}</h1>",
            f'<p class="meta">{html.escape(res.store.uri)} &middot; written {now}</p>',
            *_findings(res), *_summary(res, outline, trials)]
    charts = []
    for kind, fn in CHARTS.items():
        body.append(f"<h2>{html.escape(kind)}</h2>")
        body.append(f'<p class="caption">{html.escape((fn.__doc__ or "").strip().splitlines()[0])}</p>')
        try:
            chart = fn(res)
        except TableError as e:
            body.append(f'<p class="note">Not drawn: {html.escape(str(e))}</p>')
            continue
        cid = f"chart-{kind}"
        charts.append((cid, chart.to_dict()))
        body.append(f'<div class="chart" id="{cid}"></div>')
    log.info("report of '%s': %d of %d charts drawn", name, len(charts), len(CHARTS))
    return _page(f"repsweep report: {html.escape(name)}", charts, "\n".join(body))


def _page(title: str, charts: list[tuple[str, dict]], body: str | None = None) -> str:
    """A standalone HTML page: inlined Vega libraries, the charts' specs, and `body`."""
    import vl_convert as vlc

    if body is None:
        body = "\n".join(f'<div class="chart" id="{cid}"></div>' for cid, _ in charts)
    specs = json.dumps(dict(charts)).replace("<", "\\u003c")  # no '</script>' inside a script
    bundle = vlc.javascript_bundle(vl_version=_vl_version()).replace("</script", "<\\/script")
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n<title>{title}</title>\n'
            f"<style>{_CSS}</style>\n<script>{bundle}</script>\n</head>\n<body>\n{body}\n"
            f"<script>\nconst REPSWEEP_SPECS = {specs};\n{_EMBED}</script>\n</body>\n</html>\n")


def _vl_version() -> str:
    """Altair's Vega-Lite version as vl-convert names it: v6.4.1 -> 6.4."""
    import altair as alt

    return ".".join(alt.SCHEMA_VERSION.lstrip("v").split(".")[:2])


# --------------------------------------------------------------------------- summary

def _from_tables(store: SweepStore, trials: pd.DataFrame) -> Outline:
    """The outline the tables show, where no spec's was given: the grid of the trials that ran."""
    grid = {a: sorted(trials[a].unique().tolist()) for a in GRID_AXES}
    epochs = trials["epochs"].dropna().unique()
    return Outline(os.path.basename(store.root.rstrip("/")), [grid], int(np.prod([len(v) for v in grid.values()])),
                   ", ".join(trials["dataset"].dropna().unique()), int(epochs[0]) if len(epochs) == 1 else 0)


def _table(df: pd.DataFrame) -> str:
    return df.to_html(index=False, border=0, na_rep="", escape=True,
                      float_format=lambda v: f"{v:.4g}")


def _findings(res: Results) -> list[str]:
    """The study's claims (the findings table): each claim's verdict, then each part's effect, interval,
    n, verdict, numbers and what would resolve it, as HTML pieces."""
    frame = res.sql("SELECT * FROM findings ORDER BY claim, part")
    out = ["<h2>findings</h2>"]
    if frame.empty:
        return out + ['<p class="note">No findings yet: run \'repsweep compare SWEEP\'.</p>']
    verdict = lambda v: f'<span class="verdict {v.replace(" ", "-")}">{html.escape(v)}</span>'  # noqa: E731
    items = []
    for claim, g in frame.groupby("claim", sort=True):
        first = g.iloc[0]
        if claim == 0:
            out.append(f'<p class="meta">{html.escape(first["numbers"])}.</p>')
            continue
        parts = []
        for r in g.itertuples():
            interval = (f", {r.confidence:.0%} CI [{r.ci_low:+.3f}, {r.ci_high:+.3f}]" if pd.notna(r.ci_low) else "")
            effect = "" if pd.isna(r.effect) else f"{r.effect:+.3f}{interval}, n = {r.n} {html.escape(r.unit)}: "
            resolve = f' <span class="resolve">To resolve: {html.escape(r.resolve)}.</span>' if r.resolve else ""
            parts.append(f"<li>{f'({claim}{r.part}) ' if r.part else ''}{html.escape(r.statistic)}: {effect}"
                         f"{verdict(r.verdict)}. {html.escape(r.numbers)}{resolve}</li>")
        items.append(f'<li class="finding"><b>({claim}) {html.escape(first["title"])}</b>: '
                     f'{verdict(first["claim_verdict"])}.<ul>{"".join(parts)}</ul></li>')
    return out + ["<ul class=\"findings\">" + "".join(items) + "</ul>"]


def _values(values: list) -> list[str]:
    """An axis's values as written: 20, not 20.0."""
    return [f"{v:g}" if isinstance(v, float) else str(v) for v in values]


def _summary(res: Results, outline: Outline, trials: pd.DataFrame) -> list[str]:
    """Grid, trial states, failures, accuracies and the comparison's extent, as HTML pieces."""
    out = ["<h2>summary</h2>"]
    grids, planned, dataset, epochs = outline.grids, outline.planned, outline.dataset, outline.epochs
    out.append("<p>" + " &#x222A; ".join("; ".join(f"<b>{html.escape(a)}</b> {html.escape(', '.join(_values(v)))}"
                                                  for a, v in grid.items()) for grid in grids)
               + f" &mdash; {planned} trials planned on <b>{html.escape(str(dataset))}</b>"
               + (f", {epochs} epoch{'s' if epochs != 1 else ''} each" if epochs else "") + "</p>")
    counts = trials["status"].value_counts().to_dict()
    counts["pending"] = max(0, planned - len(trials))
    out.append("<p>trials: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n) + "</p>")

    failed = trials[trials["status"] == "failed"]
    if len(failed):
        out.append("<h3>failed trials</h3>" + _table(failed[["trial_id", "epochs_done", "error"]]))
    tiles = res.sql("SELECT tile, error FROM tiles WHERE status = 'failed'")
    if len(tiles):
        out.append("<h3>failed comparison tiles</h3>" + _table(tiles))

    done = trials[trials["status"] == "done"]
    if len(done):
        best = done.loc[done["test_acc"].idxmax()]
        out.append(f"<h3>test accuracy</h3><p>best {best['test_acc']:.4f} ({html.escape(best['trial_id'])}); "
                   "mean over seeds (and the number of finished seeds) per configuration:</p>")
        cell = done.groupby(["data_fraction", "depth", "width"])["test_acc"].agg(["mean", "size"])
        cell["text"] = [f"{m:.4f} ({n})" for m, n in zip(cell["mean"], cell["size"])]
        table = cell["text"].unstack("width").sort_index(ascending=[False, True])
        table.columns = [f"width {w}" for w in table.columns]
        out.append(_table(table.reset_index().rename(columns={"data_fraction": "data fraction"})))

    extent = res.sql("""
        SELECT (SELECT count(*) FROM cka) AS cka_rows,
               (SELECT count(DISTINCT (trial_a, trial_b)) FROM cka WHERE trial_a <> trial_b) AS model_pairs,
               (SELECT count(DISTINCT trial_a) FROM cka WHERE trial_a = trial_b) AS models,
               (SELECT count(*) FROM tiles WHERE status = 'done') AS tiles_done""").iloc[0]
    out.append(f"<p>comparison: within-model CKA of {extent['models']} models, cross-model CKA of "
               f"{extent['model_pairs']} model pairs ({extent['cka_rows']:,} layer pairs), "
               f"{extent['tiles_done']} tiles done</p>")
    return out
