"""Linear probes on constructed features whose answer is known: pooling, accuracy, alpha selection."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from repsweep.analysis.study.probes import DEFAULT_ALPHAS, holdout_accuracies, linear_probe, pool_features


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Another job shares this machine: one torch and one BLAS thread (7x faster than contending)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(before)


def blobs(rng: np.random.Generator, n: int, d: int, k: int, spread: float) -> tuple[np.ndarray, np.ndarray]:
    """k Gaussian classes in d dimensions, class means `spread` apart along the first k axes."""
    y = rng.integers(0, k, n)
    x = rng.standard_normal((n, d))
    x[np.arange(n), y] += spread
    return x.astype(np.float32), y


def low_variance_signal(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Two classes told apart by x0 - x1, a direction with ~1% of the features' variance.

    Shrinking that direction (large alpha) loses the classes: the probe should pick a small alpha.
    """
    y = rng.integers(0, 2, n)
    signal = (2 * y - 1) + 0.3 * rng.standard_normal(n)
    nuisance = 3 * rng.standard_normal(n)
    return np.column_stack([signal + nuisance, nuisance, rng.standard_normal((n, 8))]), y


def weak_signal_at_interpolation(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Few, noisy examples: d = the fitting slice's size, where an unregularised fit interpolates noise."""
    y = rng.integers(0, 2, n)
    x = rng.standard_normal((n, int(0.8 * n)))
    x[:, :10] += 0.5 * (2 * y - 1)[:, None]
    return x, y


# ------------------------------------------------------------------------------ pool_features


def test_pool_features_keeps_vectors_and_small_maps_whole():
    rng = np.random.default_rng(0)
    vec = rng.standard_normal((5, 3000))  # d > max_dim: a vector layer is never cut
    out, how = pool_features(vec, max_dim=1024)
    assert (out.shape, out.dtype, how) == ((5, 3000), np.float32, "none")
    small = rng.standard_normal((5, 4, 4, 4)).astype(np.float32)  # 64 <= 1024 features
    out, how = pool_features(small)
    assert how == "none"
    np.testing.assert_array_equal(out, small.reshape(5, 64))


@pytest.mark.parametrize("shape, want_dim, want_how", [
    ((3, 64, 8, 8), 64 * 4 * 4, "avg 4x4"),  # 4,096 features: 64 s^2 <= 1,024 -> s = 4
    ((3, 16, 32, 32), 16 * 8 * 8, "avg 8x8"),  # 16 s^2 <= 1,024 -> s = 8
    ((3, 100, 8, 8), 100 * 3 * 3, "avg 3x3"),  # 100 s^2 <= 1,024 -> s = 3 (not a divisor of 8)
    ((3, 8, 3, 100), 8 * 3 * 3, "avg 3x3"),  # s <= H = 3
    ((3, 2048, 4, 4), 2048, "avg 1x1"),  # C > max_dim: global average pooling, s >= 1
])
def test_pool_features_pools_large_maps_to_the_largest_grid_that_fits(shape, want_dim, want_how):
    out, how = pool_features(np.ones(shape, dtype=np.float64), max_dim=1024)
    assert (out.shape, out.dtype, how) == ((3, want_dim), np.float32, want_how)
    np.testing.assert_allclose(out, 1.0)


def test_pooling_a_constant_per_channel_map_gives_the_channel_values():
    channels = np.arange(64, dtype=np.float32) - 20.5  # (C,)
    x = np.broadcast_to(channels[None, :, None, None], (2, 64, 16, 16))  # (n, C, H, W)
    out, how = pool_features(x, max_dim=64)
    assert how == "avg 1x1"
    np.testing.assert_allclose(out, np.broadcast_to(channels, (2, 64)))
    out, how = pool_features(x, max_dim=256)  # (C, 2, 2) order: each channel's 4 cells together
    assert how == "avg 2x2"
    np.testing.assert_allclose(out, np.repeat(channels, 4)[None].repeat(2, axis=0))


def test_pool_features_rejects_other_shapes():
    with pytest.raises(ValueError, match=r"\(n, d\) or \(n, C, H, W\)"):
        pool_features(np.zeros((2, 3, 4)))


# ------------------------------------------------------------------------------ linear_probe


def test_separable_features_are_decoded():
    rng = np.random.default_rng(1)
    x, y = blobs(rng, 800, 20, 4, spread=8.0)  # means 8 sigma apart: separable
    r = linear_probe(x[:400], y[:400], x[400:], y[400:])
    assert r["accuracy"] >= 0.99 and r["train_accuracy"] >= 0.99 and r["holdout_accuracy"] >= 0.99
    assert (r["n_train"], r["n_test"], r["dim"]) == (400, 400, 20)
    assert r["alpha"] in DEFAULT_ALPHAS


def test_noise_features_with_random_labels_score_chance():
    rng = np.random.default_rng(2)
    k, n_test = 4, 4000
    x = rng.standard_normal((600 + n_test, 50)).astype(np.float32)
    y = rng.integers(0, k, len(x))
    r = linear_probe(x[:600], y[:600], x[600:], y[600:])
    se = np.sqrt((1 / k) * (1 - 1 / k) / n_test)  # binomial standard error of the accuracy
    assert abs(r["accuracy"] - 1 / k) < 4 * se


def test_alpha_is_chosen_without_the_test_set():
    rng = np.random.default_rng(3)
    x, y = blobs(rng, 900, 30, 3, spread=1.0)
    base = linear_probe(x[:500], y[:500], x[500:], y[500:])
    shuffled = linear_probe(x[:500], y[:500], x[500:], rng.permutation(y[500:]))
    other = linear_probe(x[:500], y[:500], rng.standard_normal((50, 30)), rng.integers(0, 3, 50))
    for r in (shuffled, other):
        assert (r["alpha"], r["holdout_accuracy"], r["train_accuracy"]) == (
            base["alpha"], base["holdout_accuracy"], base["train_accuracy"])


@pytest.mark.parametrize("n, d", [(200, 400), (400, 40)])  # the dual Gram (n_fit <= d) and the primal one
def test_holdout_accuracies_are_ridge_classifiers_on_the_documented_split(n, d):
    rng = np.random.default_rng(4)
    x, y = blobs(rng, n, d, 5, spread=1.5)
    x[:, -10:] = 0.0  # dead ReLUs
    got = holdout_accuracies(x, y, seed=7)
    fit, held = train_test_split(np.arange(n), test_size=0.2, stratify=y, random_state=7)
    for alpha, acc in zip(DEFAULT_ALPHAS, got):
        probe = make_pipeline(StandardScaler(), RidgeClassifier(alpha=alpha * len(fit))).fit(x[fit], y[fit])
        assert acc == pytest.approx(probe.score(x[held], y[held]), abs=1.5 / len(held))  # at most 1 argmax tie
    r = linear_probe(x, y, x[:10], y[:10], seed=7)
    best = max(got)
    assert r["holdout_accuracy"] == best
    assert r["alpha"] == max(a for a, acc in zip(DEFAULT_ALPHAS, got) if acc == best)  # ties: the larger


def test_noisy_few_examples_choose_more_regularisation_than_clean_many():
    rng = np.random.default_rng(5)
    x, y = low_variance_signal(rng, 1500)
    clean = linear_probe(x[:1200], y[:1200], x[1200:], y[1200:])
    x, y = weak_signal_at_interpolation(rng, 500)
    noisy = linear_probe(x[:400], y[:400], x[400:], y[400:])
    assert clean["alpha"] <= 0.1 and clean["accuracy"] > 0.95
    assert noisy["alpha"] >= 1.0


def test_constant_columns_give_no_nan():
    rng = np.random.default_rng(6)
    x, y = blobs(rng, 300, 40, 3, spread=4.0)
    x[:, 20:] = 0.0  # post-ReLU zeros
    x[:, 10] = 5.0
    for dim in (40, 300):  # n_fit < d and n_fit > d
        feats = np.pad(x, ((0, 0), (0, dim - 40)))
        r = linear_probe(feats[:200], y[:200], feats[200:], y[200:])
        assert np.isfinite([r["accuracy"], r["holdout_accuracy"], r["train_accuracy"]]).all()
        assert r["accuracy"] > 0.9


def test_a_class_too_small_to_stratify_falls_back_to_a_plain_split():
    rng = np.random.default_rng(7)
    x, y = blobs(rng, 200, 10, 3, spread=6.0)
    y[0] = 9  # one example of class 9
    r = linear_probe(x, y, x, y)
    assert r["accuracy"] > 0.9


def test_a_single_class_is_refused_by_name():
    x = np.random.default_rng(8).standard_normal((50, 5))
    with pytest.raises(ValueError, match="single class"):
        linear_probe(x, np.zeros(50, dtype=int), x, np.zeros(50, dtype=int))


def test_bad_inputs_are_refused_with_the_field():
    x, y = np.zeros((10, 3)), np.arange(10) % 2
    with pytest.raises(ValueError, match="test_x has 4 features"):
        linear_probe(x, y, np.zeros((5, 4)), y[:5])
    with pytest.raises(ValueError, match="non-finite"):
        linear_probe(np.full((10, 3), np.nan), y, x, y)
    with pytest.raises(ValueError, match="holdout"):
        linear_probe(x, y, x, y, holdout=1.0)
    with pytest.raises(ValueError, match="alphas"):
        linear_probe(x, y, x, y, alphas=())
