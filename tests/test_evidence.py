"""Verdicts from intervals over independent units, and trials that did not train, on cases whose answer is known."""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from repsweep.analysis.study.evidence import (CONTRADICTED, HOLDS, INCONCLUSIVE, UNTESTABLE, combine, difference_effect,
                                        mean_effect, units_for_p, units_needed, verdict)
from repsweep.analysis.study.quality import flag_trials

LEVEL = dict(confidence=0.95, power=0.8)


def test_the_interval_is_students_t_over_the_units_and_the_verdict_reads_it():
    x = np.array([0.12, 0.30, 0.21, 0.18])
    ev = mean_effect(x, unit="models", **LEVEL)
    half = stats.t.ppf(0.975, 3) * x.std(ddof=1) / math.sqrt(4)  # the naive formula
    assert ev.effect == pytest.approx(x.mean())
    assert (ev.ci_low, ev.ci_high) == pytest.approx((x.mean() - half, x.mean() + half))
    assert ev.n == 4 and ev.verdict == HOLDS and ev.resolve == ""
    assert mean_effect(-x, unit="models", **LEVEL).verdict == CONTRADICTED  # shown the other way
    assert verdict(-0.1, 0.2) == INCONCLUSIVE and verdict(float("nan"), 1.0) == INCONCLUSIVE


def test_one_or_no_unit_gives_no_interval_and_says_so():
    one = mean_effect(np.array([0.4]), unit="models", **LEVEL)
    assert one.verdict == INCONCLUSIVE and math.isnan(one.ci_low) and "at least 2 models" in one.resolve
    assert mean_effect(np.array([]), unit="models", **LEVEL).verdict == UNTESTABLE


def test_an_effect_below_the_noise_is_inconclusive_and_the_seeds_it_names_resolve_it():
    rng = np.random.default_rng(0)
    true_effect, spread = 0.05, 0.1  # an effect half the seed-to-seed spread
    few = rng.normal(true_effect, spread, 3)
    ev = mean_effect(few, unit="seeds", **LEVEL)
    assert ev.verdict == INCONCLUSIVE
    need = int(re.search(r"about (\d+) seeds", ev.resolve)[1])
    assert need == units_needed(few.mean(), few.std(ddof=1), **LEVEL) and need > 3
    rerun = mean_effect(rng.normal(true_effect, spread, need), unit="seeds", **LEVEL)
    assert rerun.verdict == HOLDS, (need, rerun)


def test_units_needed_matches_the_textbook_sample_size():
    # n = ((z_{0.975} + z_{0.8}) sd / d)^2 = 7.85 (sd / d)^2 for large n; t quantiles add a little
    n = units_needed(0.1, 1.0, **LEVEL)
    assert 785 <= n <= 800
    assert units_needed(0.0, 1.0, **LEVEL) is None
    assert units_needed(0.1, 1.0, groups=2, **LEVEL) == pytest.approx(2 * n, rel=0.02)


def test_units_for_p_scales_the_units_by_the_square_of_the_standard_errors_still_missing():
    target = stats.norm.isf(0.05) + stats.norm.ppf(0.8)  # one-sided at 0.05 with power 0.8: 2.49 SE
    assert units_for_p(stats.norm.sf(target), 10, alpha=0.05, power=0.8) == 10  # already enough
    assert units_for_p(stats.norm.sf(target / 2), 10, alpha=0.05, power=0.8) == 40  # half the SE: 4x the units
    two = stats.norm.isf(0.025) + stats.norm.ppf(0.8)
    assert units_for_p(2 * stats.norm.sf(two / 3), 5, alpha=0.05, power=0.8, two_sided=True) == 45
    for p in (0.5, 0.7, 1.0):  # no effect in the tested direction: no number of units shows one
        assert units_for_p(p, 4, alpha=0.05, power=0.8) is None


def test_a_difference_against_a_control_uses_welchs_interval():
    block, control = np.array([0.30, 0.25, 0.35, 0.28]), np.array([0.02, -0.03, 0.05])
    ev = difference_effect(block, control, unit="models", **LEVEL)
    ci = stats.ttest_ind(block, control, equal_var=False).confidence_interval(0.95)
    assert ev.effect == pytest.approx(block.mean() - control.mean())
    assert (ev.ci_low, ev.ci_high) == pytest.approx((ci.low, ci.high)) and ev.verdict == HOLDS and ev.n == 7
    alike = difference_effect(control + 0.01, control, unit="models", **LEVEL)
    assert alike.verdict == INCONCLUSIVE and "per group" in alike.resolve


def test_a_claim_holds_only_when_every_part_does():
    assert combine([HOLDS, HOLDS]) == HOLDS
    assert combine([HOLDS, INCONCLUSIVE]) == INCONCLUSIVE
    assert combine([HOLDS, CONTRADICTED]) == CONTRADICTED
    assert combine([HOLDS, UNTESTABLE]) == INCONCLUSIVE
    assert combine([UNTESTABLE]) == UNTESTABLE


# ------------------------------------------------------------------ trials that did not train

def _trials(accs: dict[str, list[float]]) -> pd.DataFrame:
    return pd.DataFrame([{"trial_id": f"{arch}-s{s}", "arch": arch, "data_fraction": 1.0, "status": "done",
                          "test_acc": a} for arch, seeds in accs.items() for s, a in enumerate(seeds)])


RULE = dict(outlier_ratio=3.0, outlier_gap=0.05, min_test_acc=0.0)


def test_a_diverged_member_is_flagged_and_its_seeds_stay():
    flags = flag_trials(_trials({"d56-w2": [0.64, 0.98], "d8-w1": [0.97, 0.99, 0.98]}), **RULE).set_index("trial_id")
    assert flags.loc["d56-w2-s0", "excluded"] and "0.640 against 0.980" in flags.loc["d56-w2-s0", "exclusion_reason"]
    assert not flags.drop("d56-w2-s0")["excluded"].any()
    assert flags.drop("d56-w2-s0")["exclusion_reason"].isna().all()


@pytest.mark.parametrize("accs, flagged", [
    ([0.995, 0.999], []),  # 5x the error, but 0.004 apart: the spread of a good configuration
    ([0.80, 0.90, 0.88], []),  # a hard configuration: 2x the error
    ([0.55, 0.56], []),  # all seeds alike: nothing says which is right
    ([0.30, 0.97, 0.96, 0.98], ["x-s0"]),
])
def test_only_a_trial_far_below_its_configurations_other_seeds_is_flagged(accs, flagged):
    flags = flag_trials(_trials({"x": accs}), **RULE)
    assert flags.loc[flags["excluded"], "trial_id"].tolist() == flagged


def test_a_stated_floor_flags_every_trial_below_it_and_unfinished_trials_get_no_row():
    trials = _trials({"x": [0.55, 0.56]})
    trials.loc[len(trials)] = {"trial_id": "x-s2", "arch": "x", "data_fraction": 1.0, "status": "failed",
                               "test_acc": float("nan")}
    flags = flag_trials(trials, **{**RULE, "min_test_acc": 0.6})
    assert flags["excluded"].all() and list(flags["trial_id"]) == ["x-s0", "x-s1"]
    assert "below findings.min_test_acc 0.6" in flags["exclusion_reason"].iloc[0]
