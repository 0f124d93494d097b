"""The statistics the analysis shares: Pearson correlation and least-squares slopes.

``scipy.stats`` does the arithmetic (``pearsonr``, ``linregress``); what is ours is the rule
for the values it is given: only positions where both series are finite count, a correlation
needs ``MIN_PAIRS`` of them and variance in both, and a slope needs two distinct x values.
scipy is imported on first use, so importing this module (the laptop CLI does) stays cheap.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np

MIN_PAIRS = 3  # a correlation over fewer shared finite points is not reported


def pearson(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> tuple[float, int]:
    """``(r, n)``: Pearson's r over the ``n`` positions where both ``a`` and ``b`` are finite
    (NaN stands for a missing value); r is NaN when ``n < MIN_PAIRS`` or either is constant
    there. r is clipped to [-1, 1]."""
    x = np.asarray(a, dtype=float)
    y = np.asarray(b, dtype=float)
    ok = np.isfinite(x) & np.isfinite(y)
    n = int(ok.sum())
    if n < MIN_PAIRS:
        return math.nan, n
    x, y = x[ok], y[ok]
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan, n
    from scipy import stats

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.NearConstantInputWarning)
        r = float(stats.pearsonr(x, y).statistic)
    return (max(-1.0, min(1.0, r)) if math.isfinite(r) else math.nan), n


def linear_fit(
    x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray
) -> tuple[float, float]:
    """``(slope, intercept)`` of the least-squares line through (x, y); x must not be constant."""
    from scipy import stats

    fit = stats.linregress(np.asarray(x, dtype=float), np.asarray(y, dtype=float))
    return float(fit.slope), float(fit.intercept)


def slope(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """Least-squares slope of y per unit of x; x must not be constant."""
    return linear_fit(x, y)[0]


def index_slope(values: Sequence[float]) -> float:
    """Least-squares slope of ``values`` per position (0, 1, 2, ...); 0.0 for fewer than two."""
    if len(values) < 2:
        return 0.0
    return slope(np.arange(len(values), dtype=float), values)
