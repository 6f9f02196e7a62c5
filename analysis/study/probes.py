"""Linear probes of one layer's features: pooling, a ridge classifier, its regularisation.

A linear probe (Alain & Bengio, "Understanding intermediate layers using linear classifier
probes", ICLR 2017 workshop) asks how linearly decodable the labels are from a layer; Nguyen,
Raghu & Kornblith (ICLR 2021), section 5 and Figure 6, train one on every layer of wide and deep
models to see whether the layers inside a block structure add anything. Pure functions of
arrays: the per-trial stage gathers the activations and writes the rows.

The probe is scikit-learn's RidgeClassifier (one-vs-all least squares on {-1, +1} targets) on
standardised features (Rifkin & Klautau, "In defense of one-vs-all classification", JMLR 2004:
regularised least squares classifies as well as SVMs). Its penalty is chosen on a stratified
held-out slice of the training examples, never on the test set, then refit on all of them.

The alpha grid is in units per example. Ridge minimises ||Y - Xw||^2 + alpha ||w||^2, whose
data term grows with n while the penalty does not, so one fixed alpha means less shrinkage the
more examples there are; scikit-learn's alpha is therefore `alpha * n` (n = the examples fitted:
the fitting slice during selection, all training examples in the refit, so the refit keeps the
shrinkage that won). Per example, standardised features have unit variance and a ridge
shrinks each principal direction of the features by lambda_j / (lambda_j + alpha), lambda_j
the direction's variance; the default grid 1e-2 .. 1e2 runs from nearly no shrinkage (only
directions with under 1% of a feature's variance are shrunk by half) to keeping only the few
leading directions of a layer of ~1,000 correlated features. Ties in held-out accuracy go to
the larger alpha (the simpler model, when the slice cannot tell them apart).

Speed: selection needs one fit per alpha, and scikit-learn would rebuild the same Gram matrix
for each. Here the smaller Gram (d x d, or n_fit x n_fit where the fitting slice has no more
examples than features) is built once and each alpha is one Cholesky solve, which predicts
exactly what RidgeClassifier predicts (tests/test_probes.py checks the held-out accuracies
against RidgeClassifier in both regimes). benchmarks/probe_bench.py, on this project's 2-core
CPU machine (one thread, float32, 10 classes, 5 alphas; median of 9, 2026-12-01): 0.010 s
against 0.069 s fitting a RidgeClassifier per alpha for n = 1,437 and d = 64, 0.21 s against
0.55 s for d = 1,024, 0.29 s against 1.22 s for n = 5,000 and d = 1,024. The BLAS thread
count is the caller's (threadpoolctl's `threadpool_limits`): on a shared 2-core machine,
contending BLAS threads made it 7x slower.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import numpy as np
import scipy.linalg
import torch
import torch.nn.functional as F
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_ALPHAS", "holdout_accuracies", "linear_probe", "pool_features"]

DEFAULT_ALPHAS = (1e-2, 1e-1, 1.0, 10.0, 100.0)  # ridge penalty per example (module docstring)
MAX_FEATURES = 1024  # features per example a conv layer is pooled down to (pool_features)
POOL_CHUNK = 4096  # examples pooled at a time: bounds the float32 copy of a large activation


# ------------------------------------------------------------------------------ features


def pool_features(x: np.ndarray, max_dim: int = MAX_FEATURES) -> tuple[np.ndarray, str]:
    """One layer's activations as a (n, d') float32 feature matrix for a probe.

    Parameters
    ----------
    x
        Activations (n, d) or (n, C, H, W) (NumPy, or anything ``np.asarray`` takes).
    max_dim
        Most features to keep from a conv layer. (n, d) is kept whole whatever d is.

    Returns
    -------
    features, pooling
        (n, d) and (n, C, H, W) with C*H*W <= max_dim: flattened, pooling ``"none"``. Larger
        conv maps: averaged over an s x s grid of spatial cells (adaptive average pooling),
        s the largest with C*s*s <= max_dim and s <= H, W, but at least 1; pooling
        ``"avg {s}x{s}"`` (``"avg 1x1"``: global average pooling). Features are in (C, s, s) order.
    """
    if max_dim < 1:
        raise ValueError(f"max_dim must be a positive number of features, got {max_dim}")
    x = np.asarray(x)
    if x.ndim == 2:
        return x.astype(np.float32, copy=False), "none"
    if x.ndim != 4:
        raise ValueError(f"expected activations (n, d) or (n, C, H, W), got shape {x.shape}")
    n, c, h, w = x.shape
    if c * h * w <= max_dim:
        return x.reshape(n, c * h * w).astype(np.float32, copy=False), "none"  # (n, C*H*W)
    s = max(1, min(h, w, math.isqrt(max_dim // c)))  # C s^2 <= max_dim  <=>  s^2 <= max_dim // C
    out = np.empty((n, c * s * s), dtype=np.float32)
    for start in range(0, n, POOL_CHUNK):
        chunk = torch.from_numpy(np.ascontiguousarray(x[start:start + POOL_CHUNK], dtype=np.float32))
        pooled = F.adaptive_avg_pool2d(chunk, s)  # (b, C, s, s)
        out[start:start + len(chunk)] = pooled.reshape(len(chunk), c * s * s).numpy()  # (b, C*s*s)
    return out, f"avg {s}x{s}"


# ------------------------------------------------------------------------------ checks


def _check_xy(x: np.ndarray, y: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Validate one (features, labels) pair: 2-D finite floats, one label per example."""
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim != 2:
        raise ValueError(f"{name}_x must be (n, d) features (see pool_features), got shape {x.shape}")
    if y.shape != (len(x),):
        raise ValueError(f"{name}_y must be ({len(x)},) labels, one per row of {name}_x, got shape {y.shape}")
    if not np.issubdtype(x.dtype, np.floating):
        x = x.astype(np.float32)
    bad = int(x.size - np.count_nonzero(np.isfinite(x)))
    if bad:
        raise ValueError(f"{name}_x has {bad} non-finite values (NaN or inf): a probe needs finite features")
    return x, y


def _check_options(alphas: Sequence[float], holdout: float) -> tuple[float, ...]:
    alphas = tuple(float(a) for a in alphas)
    if not alphas or min(alphas) <= 0:
        raise ValueError(f"alphas must be a non-empty sequence of positive penalties, got {alphas}")
    if not 0 < holdout < 1:
        raise ValueError(f"holdout must be a fraction of the training examples in (0, 1), got {holdout}")
    return alphas


def _split(y: np.ndarray, holdout: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (fit, held out): stratified when every class can be split, else plain."""
    classes, counts = np.unique(y, return_counts=True)
    if len(classes) < 2:
        raise ValueError(f"the training set has a single class ({classes[0]!r}): a classifier needs two")
    n_hold = math.ceil(holdout * len(y))  # what train_test_split takes for a float test_size
    stratify = counts.min() >= 2 and len(classes) <= min(n_hold, len(y) - n_hold)
    if not stratify:
        logger.info("holdout split not stratified: %d classes, the smallest with %d examples, %d held out",
                    len(classes), counts.min(), n_hold)
    fit, held = train_test_split(np.arange(len(y)), test_size=holdout, random_state=seed,
                                 stratify=y if stratify else None)
    if len(np.unique(y[fit])) < 2:
        raise ValueError(f"the fitting slice of {len(fit)} examples has a single class: too few "
                         f"examples per class ({dict(zip(classes.tolist(), counts.tolist()))}) to choose alpha")
    return fit, held


# ------------------------------------------------------------------------------ probe


def _gram_accuracies(z_fit: np.ndarray, y_fit: np.ndarray, z_held: np.ndarray, y_held: np.ndarray,
                     alphas: tuple[float, ...]) -> np.ndarray:
    """RidgeClassifier's held-out accuracy per alpha, from one Gram matrix built once.

    RidgeClassifier fits {-1, +1} one-vs-all targets T with an unpenalised intercept, i.e. ridge on
    centred features Z and centred targets; its coefficients are (Z'Z + a I)^-1 Z'T in the primal
    and Z'(ZZ' + a I)^-1 T in the dual (Hastie, Tibshirani & Friedman 2009, eq. 3.44 and sec. 5.8).
    The smaller of the two Grams (d x d or n_fit x n_fit) is built once; each alpha is then one
    Cholesky solve, where scikit-learn would rebuild it for every alpha.
    """
    mean = z_fit.mean(axis=0)  # ~0 after StandardScaler; removed exactly, as fit_intercept does
    z_fit, z_held = z_fit - mean, z_held - mean
    classes = np.unique(y_fit)
    targets = np.where(y_fit[:, None] == classes[None, :], 1.0, -1.0).astype(z_fit.dtype)  # (n_fit, k)
    offset = targets.mean(axis=0)  # (k,) the intercept
    centred = targets - offset
    if len(z_fit) <= z_fit.shape[1]:  # dual: scores = (Z_held Z') (ZZ' + a I)^-1 T
        gram, rhs, left = z_fit @ z_fit.T, centred, z_held @ z_fit.T  # (n_fit, n_fit), (n_fit, k)
    else:  # primal: scores = Z_held (Z'Z + a I)^-1 Z'T
        gram, rhs, left = z_fit.T @ z_fit, z_fit.T @ centred, z_held  # (d, d), (d, k)
    eye = np.eye(len(gram), dtype=gram.dtype)
    out = np.empty(len(alphas))
    for i, alpha in enumerate(alphas):
        coef = scipy.linalg.solve(gram + alpha * len(z_fit) * eye, rhs, assume_a="pos")
        scores = left @ coef + offset  # (n_held, k)
        out[i] = np.mean(classes[scores.argmax(axis=1)] == y_held)
    return out


def _probe(alpha: float, n: int) -> Pipeline:
    """The probe: standardise (statistics of the fitted examples), then RidgeClassifier."""
    return make_pipeline(StandardScaler(), RidgeClassifier(alpha=alpha * n))


def holdout_accuracies(
    train_x: np.ndarray,
    train_y: np.ndarray,
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    holdout: float = 0.2,
    seed: int = 0,
) -> np.ndarray:
    """Held-out accuracy of the probe for each alpha (per example, module docstring).

    The slice is ``train_test_split(arange(n), test_size=holdout, stratify=train_y,
    random_state=seed)``'s second part, unstratified when a class has fewer than 2 examples
    (or there are more classes than examples on a side); the probe is fit on the rest, with
    scikit-learn's alpha = alpha * n_fit. Returns (len(alphas),) float64.
    """
    alphas = _check_options(alphas, holdout)
    x, y = _check_xy(train_x, train_y, "train")
    fit, held = _split(y, holdout, seed)
    scaler = StandardScaler().fit(x[fit])
    return _gram_accuracies(scaler.transform(x[fit]), y[fit], scaler.transform(x[held]), y[held], alphas)


def linear_probe(
    train_x: np.ndarray,
    train_y: np.ndarray,
    test_x: np.ndarray,
    test_y: np.ndarray,
    *,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    holdout: float = 0.2,
    seed: int = 0,
) -> dict:
    """Test accuracy of a linear classifier on one layer's features (see the module docstring).

    Parameters
    ----------
    train_x, test_x
        Features (n, d) (``pool_features``); constant columns are fine (they standardise to 0).
    train_y, test_y
        Labels (n,), any values a classifier takes.
    alphas
        Ridge penalties per example; scikit-learn's alpha is ``alpha * n`` (module docstring).
    holdout
        Share of the training examples held out to choose alpha (``holdout_accuracies``).
    seed
        Seed of that split.

    Returns
    -------
    dict
        accuracy (test), alpha (the chosen grid value), holdout_accuracy (of that alpha),
        train_accuracy (of the refit model, on all training examples), n_train, n_test, dim.
    """
    x, y = _check_xy(train_x, train_y, "train")
    tx, ty = _check_xy(test_x, test_y, "test")
    if tx.shape[1] != x.shape[1]:
        raise ValueError(f"test_x has {tx.shape[1]} features but train_x has {x.shape[1]}: they must match")
    if len(tx) == 0:
        raise ValueError("test_x has no examples")
    alphas = _check_options(alphas, holdout)
    held = holdout_accuracies(x, y, alphas=alphas, holdout=holdout, seed=seed)
    best = max(range(len(alphas)), key=lambda i: (held[i], alphas[i]))  # ties: the larger alpha
    probe = _probe(alphas[best], len(x)).fit(x, y)
    result = {"accuracy": float(probe.score(tx, ty)), "alpha": alphas[best],
              "holdout_accuracy": float(held[best]), "train_accuracy": float(probe.score(x, y)),
              "n_train": len(x), "n_test": len(tx), "dim": x.shape[1]}
    logger.debug("linear probe: %s (held-out accuracy by alpha %s)", result, dict(zip(alphas, held.round(4))))
    return result
