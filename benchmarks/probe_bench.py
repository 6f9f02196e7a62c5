"""Benchmark the linear probe's penalty selection against fitting a RidgeClassifier per alpha.

    .venv/bin/python benchmarks/probe_bench.py

Workload: seeded Gaussian class blobs, 10 classes, float32 features, the default 5 alphas and a
20% stratified held-out slice, in three shapes a probe meets: a digits layer (n = 1,437 training
examples, d = 64 or 1,024 features) and a CIFAR layer pooled to 1,024 features from 5,000
examples. One BLAS thread (threadpoolctl), as a comparison actor of one CPU runs it.

Timed, median of --repeats calls: `analysis.study.probes.holdout_accuracies` (one Gram, one Cholesky
solve per alpha) against the baseline, a standardise + RidgeClassifier pipeline fit for every
alpha (what scikit-learn does without the shortcut). The last column says whether both gave
the same held-out accuracies, to within an argmax tie (tests/test_probes.py asserts it).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np
from sklearn.linear_model import RidgeClassifier
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from repsweep.analysis.study.probes import DEFAULT_ALPHAS, holdout_accuracies

SHAPES = ((1437, 64), (1437, 1024), (5000, 1024))  # (training examples, features)


def blobs(n: int, d: int, classes: int = 10, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centres = rng.standard_normal((classes, d)).astype(np.float32)
    return (centres[y] + 3.0 * rng.standard_normal((n, d)).astype(np.float32)), y


def baseline(x: np.ndarray, y: np.ndarray, seed: int = 0) -> np.ndarray:
    fit, held = train_test_split(np.arange(len(y)), test_size=0.2, random_state=seed, stratify=y)
    return np.array([make_pipeline(StandardScaler(), RidgeClassifier(alpha=a * len(fit)))
                     .fit(x[fit], y[fit]).score(x[held], y[held]) for a in DEFAULT_ALPHAS])


def median_time(fn, repeats: int) -> tuple[float, np.ndarray]:
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=9)
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}, "
          f"numpy {np.__version__}, 1 BLAS thread, median of {args.repeats}")
    print("| n train | d | repsweep (s) | RidgeClassifier per alpha (s) | speed-up | held-out accuracies equal |")
    print("| --- | --- | --- | --- | --- | --- |")
    with threadpool_limits(1):
        for n, d in SHAPES:
            x, y = blobs(n, d)
            ours, got = median_time(lambda: holdout_accuracies(x, y), args.repeats)
            base, want = median_time(lambda: baseline(x, y), args.repeats)
            same = bool(np.all(np.abs(got - want) <= 1.5 / (0.2 * n)))
            print(f"| {n} | {d} | {ours:.3f} | {base:.3f} | {base / ours:.1f}x | {same} |")


if __name__ == "__main__":
    main()
