"""Evidence for a claim: an effect over independent units, its interval, n, a verdict, what would resolve it.

A scientific claim of the study ("the block grows with depth") is tested on *units* that are
independent draws of the thing the claim is about: models (seeds), matched pairs of models
that differ only in the axis under test, or configurations (each the mean over its seeds).
Each unit gives one number, the effect, signed so that a positive value is what the claim
says; the units' mean is summarised with a confidence interval, and the verdict is read off
the interval (`verdict`):

- holds: the interval excludes 0 on the claimed side;
- contradicted: it excludes 0 on the other side (the data show the opposite);
- inconclusive: it contains 0 (not shown, which is not "shown to be false"); `resolve` then
  says how many units an effect of the measured size would need at the measured spread;
- not testable: the sweep has no units for it (a grid without the axis, no model with a block).

Intervals. Over units, Student's t (scipy.stats: `ttest_1samp`, and Welch's `ttest_ind` for an
effect against a control group): with the 2-10 seeds a laptop affords, a percentile
bootstrap covers far less than its nominal level (with 2 seeds its interval is little more
than the range of the two), while t's interval widens as n falls (12.7 standard errors at
n = 2, 95%). Over test examples, where n is in the hundreds, the bootstrap is used
(analysis/study/errors.py). "Resolve": the smallest n at which a test at this level would show an
effect of the measured mean with the measured standard deviation with probability `power`,
n >= ((t_{1-a/2} + t_power) sd / |mean|)^2 (the usual normal-approximation sample size, with
t quantiles at n - 1 degrees of freedom; Cohen 1988, ch. 2).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from scipy import stats

HOLDS, CONTRADICTED, INCONCLUSIVE, UNTESTABLE = "holds", "contradicted", "inconclusive", "not testable"
MAX_UNITS = 10**6  # beyond this many seeds "resolve" says the effect is too small to show at this spread


@dataclass(frozen=True)
class Evidence:
    """One statistic over units: mean effect, interval, n and the verdict the interval gives."""

    effect: float  # mean over units (or difference of means against a control), claimed > 0
    ci_low: float
    ci_high: float
    n: int  # units behind the effect (both groups' for a difference)
    unit: str  # what one unit is, plural: "models", "seed pairs", "configurations"
    verdict: str
    resolve: str = ""  # for an inconclusive verdict: what would decide it
    p: float = float("nan")  # the test's p-value where one is computed (permutation tests)


def verdict(low: float, high: float) -> str:
    """holds / contradicted / inconclusive from an interval of an effect claimed to be positive."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return INCONCLUSIVE
    return HOLDS if low > 0 else CONTRADICTED if high < 0 else INCONCLUSIVE


def units_needed(mean: float, sd: float, *, confidence: float, power: float, groups: int = 1) -> int | None:
    """Units per group at which an effect `mean` with spread `sd` is shown with probability `power`.

    groups=1: a one-sample interval; groups=2: a difference of two groups' means (n per group,
    variance doubled). None when the effect is 0 or the spread unknown (no n would show it).
    """
    if not (math.isfinite(mean) and math.isfinite(sd)) or mean == 0:
        return None
    if sd == 0:
        return 2
    z = stats.norm.ppf(1 - (1 - confidence) / 2) + stats.norm.ppf(power)
    n = max(2, math.ceil(groups * (z * sd / mean) ** 2))  # the normal approximation: a lower bound
    if n > MAX_UNITS:
        return None
    while n <= MAX_UNITS:  # t quantiles at n - 1 degrees of freedom per group add a few units
        df = groups * (n - 1)
        if n >= groups * ((stats.t.ppf(1 - (1 - confidence) / 2, df) + stats.t.ppf(power, df)) * sd / mean) ** 2:
            return n
        n += 1
    return None


def units_for_p(p: float, n_now: int, *, alpha: float, power: float, two_sided: bool = False) -> int | None:
    """Units (per group) at which a test that gave `p` with `n_now` would reach `alpha` with `power`.

    For a test whose p-value comes from a test statistic (a permutation test over seeds, say),
    the measured p stands for z = Phi^-1(1 - p) standard errors (p / 2 for two-sided); an effect
    of the measured size over a spread of the measured size grows in standard errors as the
    square root of the units, so n = n_now ((z_alpha + z_power) / z)^2. None where the data show
    no effect in the tested direction (p >= 1/2 one-sided: no number of units would show it).
    """
    z = stats.norm.isf(p / 2 if two_sided else p)
    if not math.isfinite(z) or z <= 0:
        return None
    target = stats.norm.isf(alpha / 2 if two_sided else alpha) + stats.norm.ppf(power)
    n = math.ceil(n_now * (target / z) ** 2 - 1e-9)  # an exact count stays exact through the quantiles' rounding
    return n if n <= MAX_UNITS else None


def _resolve(n_now: int, need: int | None, unit: str, sd: float, per_group: bool = False) -> str:
    if need is None:
        return ("no measured effect to resolve (mean 0 or sd unknown)" if not math.isfinite(sd) or sd == 0 else
                f"the effect is too small for its spread (sd {sd:.3g}) to show with under {MAX_UNITS:,} {unit}")
    scope = " per group" if per_group else ""
    return f"about {need} {unit}{scope} (now {n_now}) at the measured spread (sd {sd:.3g})"


def mean_effect(values: np.ndarray, *, unit: str, confidence: float, power: float) -> Evidence:
    """The mean of per-unit effects with its t interval (one-sample); fewer than 2 units: inconclusive."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n == 0:
        return Evidence(float("nan"), float("nan"), float("nan"), 0, unit, UNTESTABLE, f"no {unit}")
    mean = float(x.mean())
    if n < 2:
        return Evidence(mean, float("nan"), float("nan"), 1, unit, INCONCLUSIVE,
                        f"an interval needs at least 2 {unit}; this sweep has 1")
    sd = float(x.std(ddof=1))
    if sd == 0:
        low = high = mean
    else:
        with warnings.catch_warnings():  # nearly equal units: scipy warns, the interval is still right (narrow)
            warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
            low, high = stats.ttest_1samp(x, 0.0).confidence_interval(confidence)
    v = verdict(float(low), float(high))
    need = units_needed(mean, sd, confidence=confidence, power=power)
    return Evidence(mean, float(low), float(high), n, unit, v, "" if v != INCONCLUSIVE else _resolve(n, need, unit, sd))


def difference_effect(effect: np.ndarray, control: np.ndarray, *, unit: str, confidence: float,
                      power: float) -> Evidence:
    """mean(effect) - mean(control) with Welch's t interval; each group needs 2 units."""
    x, y = (np.asarray(v, dtype=float) for v in (effect, control))
    x, y = x[np.isfinite(x)], y[np.isfinite(y)]
    if len(x) == 0:
        return Evidence(float("nan"), float("nan"), float("nan"), 0, unit, UNTESTABLE, f"no {unit}")
    diff = float(x.mean() - y.mean()) if len(y) else float("nan")
    if len(x) < 2 or len(y) < 2:
        return Evidence(diff, float("nan"), float("nan"), len(x) + len(y), unit, INCONCLUSIVE,
                        f"an interval needs at least 2 {unit} in each group; this sweep has {len(x)} and {len(y)}")
    sd = float(np.sqrt((x.var(ddof=1) + y.var(ddof=1)) / 2))
    if x.var() == 0 and y.var() == 0:
        low = high = diff
    else:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "Precision loss occurred", RuntimeWarning)
            low, high = stats.ttest_ind(x, y, equal_var=False).confidence_interval(confidence)
    v = verdict(float(low), float(high))
    need = units_needed(diff, sd, confidence=confidence, power=power, groups=2)
    return Evidence(diff, float(low), float(high), len(x) + len(y), unit, v,
                    "" if v != INCONCLUSIVE else _resolve(min(len(x), len(y)), need, unit, sd, per_group=True))


def combine(verdicts: list[str]) -> str:
    """A claim's verdict from its parts': contradicted if any part is, holds if every part holds,
    not testable if none can be tested, else inconclusive."""
    if CONTRADICTED in verdicts:
        return CONTRADICTED
    if verdicts and all(v == HOLDS for v in verdicts):
        return HOLDS
    if all(v == UNTESTABLE for v in verdicts):
        return UNTESTABLE
    return INCONCLUSIVE
