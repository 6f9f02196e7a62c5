"""Trials that did not train: flagged with the reason, left out of the findings, kept everywhere else.

A run whose loss spiked and never recovered (the demo of 2026-12-05: d56-w2-f1-s0 at 0.64
test accuracy, its other seed 0.98) is not a sample of what that configuration learns; its
CKA heatmap and first-PC shares would be averaged into every claim about the configuration.
`flag_trials` marks such a trial in the `trials` table (columns `excluded`,
`exclusion_reason`); the findings leave it out and say how many they left out, and the
charts draw it, marked.

The rule (thresholds in the spec's `findings` section, analysis/study/findings_spec.py: FindingsSpec):
a finished trial is excluded when its test accuracy is below `min_test_acc`, or when its test
error is more than `outlier_ratio` times the median test error of its configuration's other
seeds *and* its accuracy is more than `outlier_gap` below their median accuracy. The ratio
alone would flag a 0.5% error against 0.1%; the gap alone would flag a hard configuration's
spread. A configuration whose seeds all failed alike flags none: nothing says which is right.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

QUALITY_COLUMNS = ["trial_id", "excluded", "exclusion_reason"]


def flag_trials(trials: pd.DataFrame, *, outlier_ratio: float, outlier_gap: float,
                min_test_acc: float) -> pd.DataFrame:
    """One row per finished trial (status 'done'): excluded and the reason (None when kept).

    `trials` needs trial_id, arch, data_fraction, status, test_acc; a configuration is
    (arch, data_fraction), its trials its seeds.
    """
    done = trials[trials["status"] == "done"]
    rows = []
    for _, part in done.groupby(["arch", "data_fraction"], sort=False):
        acc = part.set_index("trial_id")["test_acc"].astype(float)
        for tid, a in acc.items():
            others = acc.drop(tid)
            reason = None
            if a < min_test_acc:
                reason = f"test accuracy {a:.3f} below findings.min_test_acc {min_test_acc:g}"
            elif len(others):
                med_acc = float(np.median(others))
                err, med_err = 1 - a, 1 - med_acc
                if err > outlier_ratio * med_err and med_acc - a > outlier_gap:
                    reason = (f"test accuracy {a:.3f} against {med_acc:.3f} for the other {len(others)} "
                              f"seed{'s' if len(others) > 1 else ''} of its configuration (median): did not train "
                              f"(error over {outlier_ratio:g}x theirs and over {outlier_gap:g} below)")
            rows.append({"trial_id": tid, "excluded": reason is not None, "exclusion_reason": reason})
    return pd.DataFrame(rows, columns=QUALITY_COLUMNS)
