"""The spec's `findings` section: how the findings judge the study's claims (analysis/study/findings.py).

It lives beside the analyses that read it, so that analysis never imports the orchestrator; the
spec (orchestrator/spec.py) holds it as a section like any other and turns its ValueError into
the spec's one-line error.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass


def _refuse(name: str, value: float, allowed: str) -> typing.NoReturn:
    raise ValueError(f"spec field '{name}': got {value!r}, expected {allowed}")


@dataclass(frozen=True)
class FindingsSpec:
    """How the findings judge the study's claims (analysis/study/findings.py); none of it changes a trial.

    Every verdict rests on a confidence interval over independent models (seeds), so the
    settings here are the interval's level, the power behind "what would resolve it", the
    rule that leaves out trials that did not train, and the few thresholds that define what
    is measured (not how large an effect must be).
    """

    confidence: float = 0.95  # level of every interval; tests reject at 1 - confidence
    block_threshold: float = 0.9  # CKA every pair of a block's layers reaches (analysis/study/blocks.py: the rule)
    block_min_layers: int = 7  # fewest layers in a block: one more than the runs residual paths alone give
    power: float = 0.8  # chance of showing an effect of the measured size, for the seeds a verdict would need
    dominant_pc1: float = 0.5  # first-PC share of variance inside a block at which the PC is "dominant" (more
    #                            than all others together; the paper's blocks: 0.6-0.9, Figure 3); below it the
    #                            run of alike layers is reported, but the first-PC claims (3, 4, 6) do not use it
    same_sets: float = 0.5  # Jaccard overlap at which two seeds' dominant sets count as the same (half their union)
    similar_accuracy: float = 0.01  # wide and deep models within this test accuracy count as "similar" (claim 5)
    min_errors: int = 20  # claim 5 compares 0/1 correctness when the pair's models make at least this many test
    #                       errors each (median); below it, the true class's probability: with 5 errors a model
    #                       (the demo's) gives 0/1 correctness 5 examples to differ on, and the smallest excess
    #                       the demo could show was as large as the seed baseline itself. 0: always correctness
    outlier_ratio: float = 3.0  # a trial whose test error is over this many times the median of its
    outlier_gap: float = 0.05   # configuration's other seeds, and this much accuracy below it, did not train
    min_test_acc: float = 0.0  # and so does any trial below this test accuracy (0: no floor)

    def __post_init__(self) -> None:
        for name in ("confidence", "power"):
            if not 0.5 <= getattr(self, name) < 1:
                _refuse(f"findings.{name}", getattr(self, name), "a probability in [0.5, 1), e.g. 0.95")
        if not 0 < self.block_threshold <= 1:
            _refuse("findings.block_threshold", self.block_threshold, "a CKA level in (0, 1]")
        if self.block_min_layers < 2:
            _refuse("findings.block_min_layers", self.block_min_layers, "an integer >= 2 (layers)")
        for name in ("dominant_pc1", "same_sets", "similar_accuracy", "outlier_gap", "min_test_acc"):
            if not 0 <= getattr(self, name) <= 1:
                _refuse(f"findings.{name}", getattr(self, name), "a number in [0, 1]")
        if not 0 <= self.min_errors <= 10**9:
            _refuse("findings.min_errors", self.min_errors, "an integer >= 0 (test errors per model; 0: always 0/1)")
        if not self.outlier_ratio >= 1:
            _refuse("findings.outlier_ratio", self.outlier_ratio, "a number >= 1 (times the median test error)")
