"""What every chart shares: the size limits, the finished trials, option checks, facet headers.

Charts stay small by design: a chart's inline data never exceeds MAX_ROWS rows. Heatmaps
whose layer pairs would exceed it average CKA over bins of consecutive layers, and charts
that cap panels or average over seeds say so in their subtitle; nothing is dropped silently
and Altair's row limit is never lifted. A chart whose tables hold no data raises TableError
naming the command that fills them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pandas as pd

from repsweep.analysis.tables.query import Results
from repsweep.analysis.tables.schemas import TableError

MAX_ROWS = 5000  # rows of inline data per chart: Altair's default max_rows, kept by design
MAX_PANELS = 36  # heatmap panels per chart; more pairs are capped, and the subtitle says so
PANEL_PX = 150  # side of one heatmap panel, pixels
CKA_SCALE = dict(domain=[0, 1], clamp=True, scheme="magma")  # unbiased CKA can dip below 0


def done_trials(res: Results) -> pd.DataFrame:
    """The finished trials, with `excluded` (False until the comparison marks one that did not train)."""
    trials = res.sql("SELECT trial_id, arch, depth, width, data_fraction, seed, test_acc, "
                     "coalesce(excluded, false) AS excluded, exclusion_reason FROM trials "
                     "WHERE status = 'done' ORDER BY data_fraction DESC, depth, width, seed")
    if trials.empty:
        raise TableError("no finished trials in this sweep yet; see 'repsweep status SWEEP'")
    return trials


def excluded_note(trials: pd.DataFrame, shown: set[str]) -> list[str]:
    """A subtitle line naming the shown trials that did not train (drawn, but left out of the findings)."""
    bad = trials[trials["excluded"] & trials["trial_id"].isin(shown)]["trial_id"].tolist()
    return [f"did not train, drawn but left out of the findings (trials.excluded): {', '.join(bad)}"] if bad else []


def choose(trials: pd.DataFrame, column: str, value: Any, default: Callable) -> Any:
    """`value` if some finished trial has it, else the default of the available values."""
    available = sorted(trials[column].unique())
    if value is None:
        return default(available)
    if value not in available:
        raise TableError(f"no finished trial has {column} {value}; finished trials have "
                         f"{column} {', '.join(f'{v:g}' for v in available)}")
    return value


def parse_config(text: str) -> dict[str, Any]:
    """'d56-w1' or 'd56-w1-f0.5' (or a trial id) -> {'arch': 'd56-w1', 'data_fraction': 0.5, ...}.

    The architecture is a trials' `arch` label; f<fraction> and s<seed> may follow it, and a
    trial id's hash is ignored.
    """
    keys = {"f": ("data_fraction", float), "s": ("seed", int)}
    out: dict[str, Any] = {}
    tokens = text.split("-")
    if len(tokens) > 2 and re.fullmatch(r"[0-9a-f]{8}", tokens[-1]) and re.fullmatch(r"s\d+", tokens[-2]):
        tokens.pop()  # a trial id's hash
    while len(tokens) > 1 and (m := re.fullmatch(r"([fs])(\d+(?:\.\d+)?)", tokens[-1])) and keys[m[1]][0] not in out:
        name, cast = keys[m[1]]
        out[name] = cast(m[2])
        tokens.pop()
    if not tokens[0]:
        raise TableError(f"configuration '{text}': expected <arch>[-f<fraction>][-s<seed>], e.g. d56-w1 or d8-w2-f0.5")
    return {"arch": "-".join(tokens), **out}


def facet_header(field: str, prefix: str, *, fmt: str = "", sort: str = "ascending") -> dict:
    import altair as alt

    label = f"'{prefix} ' + format(datum.value, '{fmt}')" if fmt else f"'{prefix} ' + datum.value"
    return dict(shorthand=f"{field}:O", sort=sort, header=alt.Header(labelExpr=label, title=None,
                                                                    labelFontSize=12))
