"""Tests of block detection on constructed CKA matrices whose answer is known.

Every input is built here (nothing read from disk); the statistics of a found block are
checked against naive formulas written out with plain slicing, not against the prefix sums
the module uses.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

from repsweep.analysis.study.blocks import BLOCK_COLUMNS, CENTRAL_THRESHOLD, MIN_SIZE, THRESHOLDS, find_blocks, span_contrast

N_LAYERS = 30  # a depth-56 CIFAR ResNet: stem, 27 residual blocks, pool, logits


def decay(n_layers: int, rho: float) -> np.ndarray:
    """(L, L) residual-path pattern: CKA = rho^|i - j|, alike only to near neighbours."""
    distance = np.abs(np.subtract.outer(np.arange(n_layers), np.arange(n_layers)))
    return rho ** distance.astype(float)


def planted(start: int = 18, end: int = 27, inside: float = 0.95, before: float = 0.3) -> np.ndarray:
    """30 layers decaying smoothly (0.93^|i-j|), but layers start..end at CKA `inside` among
    themselves and `before` with every layer before them."""
    cka = decay(N_LAYERS, 0.93)
    block = slice(start, end + 1)
    cka[block, block] = inside
    cka[:start, block] = cka[block, :start] = before
    np.fill_diagonal(cka, 1.0)
    return cka


def pc1_profile(n_layers: int = N_LAYERS) -> np.ndarray:
    """(L,) first-PC shares that differ from layer to layer, so any wrong mean shows."""
    return np.linspace(0.1, 0.9, n_layers) ** 2


def longest_run(cka: np.ndarray, t: float) -> int:
    """Naive: the most consecutive layers whose every pair has CKA >= t."""
    n = len(cka)
    return max(e - s + 1 for s in range(n) for e in range(s, n) if (cka[s:e + 1, s:e + 1] >= t).all())


# ---------------------------------------------------------------------------- found blocks


def test_planted_block_is_found_at_exactly_its_layers_with_the_naive_statistics():
    cka, pc1 = planted(), pc1_profile()
    out = find_blocks(cka, pc1)
    assert list(out["threshold"]) == list(THRESHOLDS)
    assert out["found"].all()
    assert (out["start"] == 18).all() and (out["end"] == 27).all()
    block, before = np.arange(18, 28), np.arange(0, 18)
    off_diagonal = ~np.eye(10, dtype=bool)
    inside = cka[np.ix_(block, block)][off_diagonal].mean()
    mean_before = cka[np.ix_(before, block)].mean()
    others = [i for i in range(N_LAYERS - 1) if i not in block]  # the logits (29) left out
    for row in out.itertuples():
        assert row.size == 10 and row.fraction == pytest.approx(10 / 30)
        assert row.inside == pytest.approx(inside) and row.inside == pytest.approx(0.95)
        assert row.before == pytest.approx(mean_before) and row.before == pytest.approx(0.3)
        assert row.after == pytest.approx(cka[28, block].mean())  # the pool; the logits left out
        assert row.contrast == pytest.approx(inside - cka[np.ix_(others, block)].mean())
        assert row.pc1_inside == pytest.approx(pc1[block].mean())
        assert row.pc1_outside == pytest.approx(pc1[others].mean())


@pytest.mark.parametrize("near, found", [(0.84, True), (0.86, False)])
def test_unlike_means_1_minus_t_below_inside_against_the_layers_just_before(near, found):
    # block 18-27 at 0.95; the 10 layers just before it (8-17) at `near` with it, 0-7 at 0.3:
    # at t = 0.9 it is a block iff 0.95 - near >= 0.1, whatever the far layers say
    cka = planted()
    cka[8:18, 18:28] = cka[18:28, 8:18] = near
    out = find_blocks(cka, pc1_profile(), thresholds=(0.9,)).iloc[0]
    assert out["found"] == found
    all_before = cka[:18, 18:28].mean()
    assert 0.95 - all_before > 0.3  # the mean over all earlier layers would call both a block
    if found:
        assert (out["start"], out["end"]) == (18, 27)
        assert out["before"] == pytest.approx(all_before)


def test_a_larger_threshold_never_gives_a_larger_block():
    # a nested block: layers 14-27 alike at 0.85, its core 18-27 at 0.97
    cka = planted(14, 27, inside=0.85)
    cka[18:28, 18:28] = 0.97
    np.fill_diagonal(cka, 1.0)
    thresholds = (0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 0.97)
    out = find_blocks(cka, pc1_profile(), thresholds=thresholds)
    assert len(out) == len(thresholds) and list(out["threshold"]) == list(thresholds)
    assert out["found"].all()
    assert (np.diff(out["size"].to_numpy()) <= 0).all()
    assert out["size"].tolist() == [14, 14, 14, 14, 10, 10, 10]
    assert (out["end"] == 27).all()


def test_a_block_shorter_than_min_size_is_found_only_when_min_size_allows_it():
    cka = planted(22, 26)  # 5 layers
    assert not find_blocks(cka, pc1_profile())["found"].any()
    out = find_blocks(cka, pc1_profile(), min_size=5)
    assert out["found"].all() and (out["start"] == 22).all() and (out["end"] == 26).all()
    assert MIN_SIZE > 6  # longer than the 3-6 layer runs residual paths give (DESIGN.md)


def test_the_logits_are_never_part_of_a_block_unless_not_excluded():
    cka = planted(20, 29)  # the run reaches the last layer, the logits
    assert (find_blocks(cka, pc1_profile())["end"] == 28).all()
    assert (find_blocks(cka, pc1_profile(), exclude=())["end"] == 29).all()


# ------------------------------------------------------------------------------- no blocks


@pytest.mark.parametrize("n_layers", [30, 57, 111])  # depths 56, 110 and 218
@pytest.mark.parametrize("rho", [0.95, 0.97, 0.98])
def test_the_residual_path_pattern_is_no_block_at_any_threshold(n_layers, rho):
    cka = decay(n_layers, rho)
    assert 3 <= longest_run(cka[:40, :40], 0.9) <= 6  # the runs DESIGN.md measured
    out = find_blocks(cka, pc1_profile(n_layers), thresholds=(0.7, 0.8, 0.85, 0.9, 0.95))
    assert not out["found"].any()


def test_a_uniformly_high_matrix_is_no_block():
    # every layer is alike to every other: the run from the stem has no layer before it to be
    # unlike, and any later run is exactly as alike to the layers before it as to itself
    cka = np.full((N_LAYERS, N_LAYERS), 0.97)
    np.fill_diagonal(cka, 1.0)
    out = find_blocks(cka, pc1_profile())
    assert not out["found"].any()
    assert out["start"].isna().all() and out["end"].isna().all()
    assert (out["size"] == 0).all() and (out["fraction"] == 0).all()
    assert out[["inside", "before", "after", "contrast", "pc1_inside", "pc1_outside"]].isna().all().all()


def test_a_matrix_without_a_block_gives_none():
    rng = np.random.default_rng(0)
    noise = rng.uniform(-0.05, 0.05, (N_LAYERS, N_LAYERS))
    cka = (decay(N_LAYERS, 0.9) + (noise + noise.T) / 2).clip(0, 1)
    np.fill_diagonal(cka, 1.0)
    assert not find_blocks(cka, pc1_profile())["found"].any()


# ------------------------------------------------------------------------------ robustness


def test_nan_layers_do_not_crash_and_are_left_out_of_the_means():
    cka, pc1 = planted(), pc1_profile()
    cka[5, :] = cka[:, 5] = np.nan  # an undefined (constant) layer before the block
    pc1[5] = np.nan
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "mean of empty slice" either
        out = find_blocks(cka, pc1)
    assert out["found"].all() and (out["start"] == 18).all() and (out["end"] == 27).all()
    assert out["before"].iloc[0] == pytest.approx(np.nanmean(cka[:18, 18:28]))
    others = [i for i in range(N_LAYERS - 1) if not 18 <= i <= 27 and i != 5]
    assert out["pc1_outside"].iloc[0] == pytest.approx(pc1[others].mean())


def test_a_nan_layer_inside_a_block_splits_it():
    cka = planted(12, 27)
    cka[19, :] = cka[:, 19] = np.nan  # NaN is not alike: no run spans layer 19
    out = find_blocks(cka, pc1_profile())
    # 20-27 (8 layers) is as alike to 12-18 just before it as to itself: only 12-18 is a block
    assert (out["start"] == 12).all() and (out["end"] == 18).all()


def test_an_all_nan_matrix_gives_no_block_and_no_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = find_blocks(np.full((6, 6), np.nan), np.full(6, np.nan))
    assert len(out) == len(THRESHOLDS) and not out["found"].any()


def test_span_contrast_is_inside_minus_every_outside_pair_and_ignores_the_logits():
    rng = np.random.default_rng(3)
    cka = rng.uniform(0, 1, (12, 12))
    cka = (cka + cka.T) / 2
    np.fill_diagonal(cka, 1.0)
    cka[4, 9] = cka[9, 4] = np.nan  # an undefined pair is left out, not counted as 0
    span, outside = np.arange(3, 7), [0, 1, 2, 7, 8, 9, 10]  # 11: the logits
    out = span_contrast(cka, 3, 6)
    inner = cka[np.ix_(span, span)][~np.eye(4, dtype=bool)]
    assert out["inside"] == pytest.approx(inner.mean())
    assert out["outside"] == pytest.approx(np.nanmean(cka[np.ix_(span, outside)]))
    assert out["contrast"] == pytest.approx(out["inside"] - out["outside"])
    uniform = np.full((12, 12), 0.8)
    assert span_contrast(uniform, 3, 6)["contrast"] == pytest.approx(0.0)  # a level, not a structure


def test_the_result_has_the_documented_columns_and_types():
    out = find_blocks(planted(), pc1_profile(), thresholds=(0.9,))
    assert list(out.columns) == BLOCK_COLUMNS and len(out) == 1
    assert CENTRAL_THRESHOLD in THRESHOLDS
    assert out["found"].dtype == bool and out["size"].dtype.kind == "i"
    assert isinstance(out["start"].dtype, pd.Int64Dtype)


@pytest.mark.parametrize("kwargs, field", [
    (dict(cka=np.ones((3, 4)), pc1=np.ones(3)), "cka"),
    (dict(cka=np.ones((3, 3)), pc1=np.ones(4)), "pc1"),
    (dict(cka=np.ones((3, 3)), pc1=np.ones(3), thresholds=(0.9, 1.5)), "thresholds"),
    (dict(cka=np.ones((3, 3)), pc1=np.ones(3), min_size=1), "min_size"),
    (dict(cka=np.ones((3, 3)), pc1=np.ones(3), exclude=(3,)), "exclude"),
])
def test_bad_input_names_the_field(kwargs, field):
    with pytest.raises(ValueError, match=field):
        find_blocks(**kwargs)
