"""Whether a difference between methods is real: paired comparisons over seeds and average ranks.

Seeds pair runs: the same seed gives every method the same noisy labels, the same held-out
validation images and the same initialisation, so the difference of two methods at one seed is
one observation. :func:`paired_comparison` gives the mean difference with its 95% t-interval and
the paired t-test: one rule, so the interval excludes 0 exactly when p < 0.05 (a percentile
bootstrap over 3 seeds has 10 distinct resamples and can contradict the test);
:func:`rank_analysis` ranks methods within every complete cell of a grid (dataset x noise), tests
for any difference with the Friedman test and gives the Nemenyi critical difference, the basis
of a critical-difference diagram.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

ALPHA = 0.05
#: Fewest paired seeds for an interval and a test.
MIN_PAIRS = 3


@dataclass(frozen=True)
class Comparison:
    """A method minus a baseline over paired seeds."""

    n: int
    mean: float
    low: float | None  # 95% t-interval of the mean; None with fewer than MIN_PAIRS pairs
    high: float | None
    p: float | None  # paired t-test; None with fewer than MIN_PAIRS pairs or no variation

    @property
    def significant(self) -> bool:
        """p < 0.05 (the same as: the 95% t-interval excludes 0)."""
        return self.p is not None and self.p < ALPHA


def paired_comparison(method: np.ndarray, baseline: np.ndarray) -> Comparison:
    """Compare two arrays of per-seed values (same seed order)."""
    from scipy import stats

    diff = np.asarray(method, dtype=np.float64) - np.asarray(baseline, dtype=np.float64)
    n = int(diff.size)
    if n < MIN_PAIRS:  # two pairs give a "significant" t-test and a two-point "interval": neither means much
        return Comparison(n, float(diff.mean()) if n else math.nan, None, None, None)
    if np.allclose(diff, diff[0]):  # no variation: the interval is the point, no test possible
        return Comparison(n, float(diff[0]), float(diff[0]), float(diff[0]), None)
    mean = float(diff.mean())
    half = float(stats.t.ppf(1 - ALPHA / 2, n - 1) * diff.std(ddof=1) / math.sqrt(n))
    p = float(stats.ttest_rel(method, baseline).pvalue)
    return Comparison(n, mean, mean - half, mean + half, p)


@dataclass(frozen=True)
class Ranks:
    """Average ranks of methods over the cells where all of them ran."""

    methods: list[str]
    average: list[float]  # 1 = best
    cells: int
    friedman_p: float | None  # None with fewer than 3 methods or 2 cells
    critical_difference: float | None  # Nemenyi, alpha = 0.05


def rank_analysis(scores: dict[str, dict[tuple, float]], higher_is_better: bool = True) -> Ranks:
    """Ranks from ``scores[method][cell] = value``, over the cells every method has."""
    from scipy import stats

    methods = sorted(scores)
    common = sorted(set.intersection(*(set(v) for v in scores.values()))) if scores else []
    if not methods or not common:
        return Ranks(methods, [math.nan] * len(methods), 0, None, None)
    table = np.array([[scores[m][c] for m in methods] for c in common])  # cells x methods
    ranks = np.vstack([stats.rankdata(-row if higher_is_better else row) for row in table])
    average = ranks.mean(axis=0).tolist()
    k, n = len(methods), len(common)
    p = cd = None
    if k >= 3 and n >= 2:
        p = float(stats.friedmanchisquare(*table.T).pvalue)
        q = stats.studentized_range.ppf(1 - ALPHA, k, np.inf) / math.sqrt(2)
        cd = float(q * math.sqrt(k * (k + 1) / (6 * n)))
    return Ranks(methods, average, n, p, cd)
