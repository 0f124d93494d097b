"""Learning-rate columns, and the schedule a learning-rate series follows.

Constant, step (with its drops and, when they share one, gamma), cosine or linear decay,
with a warmup reported when the lr first rises to its peak; "unknown" when nothing fits
(``FIT_R2``), with the fits' R^2.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from .. import stats as _stats
from .records import CONSTANT_LR, FIT_R2, SAME_GAMMA, SAME_LR, LRSchedule, Value

_LR_EXACT = re.compile(r"^(lr|learning[ _-]?rate)$", re.IGNORECASE)
_LR_LOOSE = re.compile(r"^(lr|learning[ _-]?rate)[-_ ].*$", re.IGNORECASE)
_CLASH_SUFFIX = re.compile(r"(@[^/@]*)?(#\d+)?$")


def lr_columns(*, names: Iterable[str]) -> list[str]:
    """Columns that hold a learning rate, best first: the last ``/`` component (less any
    ``@<file stem>`` / ``#k`` suffix added on a name clash) is ``lr``, ``learning_rate``,
    ``learning-rate`` or ``learning rate`` (any case, after any prefix such as ``train/`` or
    ``<run>/``); then ones that start that way (``lr-AdamW``, ``lr_pg0``)."""

    def leaf(name: str) -> str:
        return _CLASH_SUFFIX.sub("", name).rsplit("/", 1)[-1].strip()

    names = list(names)
    exact = [n for n in names if _LR_EXACT.match(leaf(n))]
    loose = [n for n in names if n not in exact and _LR_LOOSE.match(leaf(n))]
    return exact + loose


def classify_lr_schedule(
    *, column: str, steps: Sequence[float], values: Sequence[Value]
) -> LRSchedule:
    """Classify a learning-rate series (finite values only) as constant, step, cosine, linear or
    unknown. A rise to the peak before the decay is reported as warmup (``warmup_steps``)."""
    pts = [(s, v) for s, v in zip(steps, values, strict=True) if v is not None and math.isfinite(v)]
    n = len(pts)
    if n < 3:
        return LRSchedule(
            column, "unknown", {"reason": f"{n} finite value(s), need 3", "points": n}, None
        )
    s = np.array([p[0] for p in pts], dtype=float)
    v = np.array([p[1] for p in pts], dtype=float)

    details: dict[str, Any] = {"points": n}
    peak = float(v.max())
    i_peak = int(np.argmax(v >= peak - SAME_LR * abs(peak)))
    if i_peak > 0 and peak - float(v[:i_peak].min()) > CONSTANT_LR * abs(peak):
        # rises by more than 1% of the peak before the schedule proper: warmup
        details.update(
            warmup_steps=float(s[i_peak] - s[0]), warmup_from=float(v[0]), warmup_to=peak
        )
        s, v = s[i_peak:], v[i_peak:]

    variation = _relative_variation(v)
    if variation < CONSTANT_LR:
        details.update(value=float(v.mean()), relative_variation=variation)
        return LRSchedule(column, "constant", details, None)
    if len(v) < 3:
        details.update(reason=f"{len(v)} value(s) after the warmup peak, need 3")
        return LRSchedule(column, "unknown", details, None)

    segments = _segments(v)
    drops = list(itertools.pairwise(segments))
    if len(segments) >= 2 and len(segments) <= len(v) / 2 and all(v[b] < v[a] for a, b in drops):
        starts = segments
        factors = [float(v[b] / v[a]) if v[a] != 0 else 0.0 for a, b in drops]
        med = float(np.median(factors))
        same_gamma = med > 0 and all(abs(f - med) <= SAME_GAMMA * med for f in factors)
        fitted = np.concatenate(
            [
                np.full(e - a, v[a:e].mean())
                for a, e in zip(starts, [*starts[1:], len(v)], strict=True)
            ]
        )
        step_r2 = _r2(v, fitted)
        if len(drops) > 3 and not same_gamma:
            # Many drops by varying factors: a smooth schedule updated once per epoch?
            kind, fit_details, r2 = _smooth_fit(s[starts], v[starts])
            if kind is not None:
                details.update(fit_details, quantized=True, updates=len(drops))
                return LRSchedule(column, kind, details, r2)
        details.update(
            drops=[
                {"step": float(s[b]), "from": float(v[a]), "to": float(v[b]), "factor": f}
                for (a, b), f in zip(drops, factors, strict=True)
            ],
            drop_steps=[float(s[b]) for _, b in drops],
            gamma=med if same_gamma else None,
            values=[float(v[a]) for a in starts],
        )
        return LRSchedule(column, "step", details, step_r2)

    kind, fit_details, r2 = _smooth_fit(s, v)
    details.update(fit_details)
    if kind is None:
        return LRSchedule(column, "unknown", details, r2)
    return LRSchedule(column, kind, details, r2)


def _relative_variation(v: np.ndarray) -> float:
    scale = float(np.max(np.abs(v)))
    return 0.0 if scale == 0 else float(np.ptp(v)) / scale


def _segments(v: np.ndarray) -> list[int]:
    """Start indices of runs of values equal (within SAME_LR) to the run's first value."""
    starts = [0]
    for i in range(1, len(v)):
        ref = v[starts[-1]]
        if abs(v[i] - ref) > SAME_LR * max(abs(ref), abs(v[i])):
            starts.append(i)
    return starts


def _r2(y: np.ndarray, fitted: np.ndarray) -> float:
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    ss_res = float(np.sum((y - fitted) ** 2))
    return 1.0 if ss_tot == 0 else 1.0 - ss_res / ss_tot


def _smooth_fit(s: np.ndarray, v: np.ndarray) -> tuple[str | None, dict[str, Any], float | None]:
    """Best of a cosine and a linear decay from the first point; (None, r2s, best r2) when
    neither explains FIT_R2 of the variance."""
    cos = _fit_cosine(s, v)
    lin = _fit_linear(s, v)
    fits = [f for f in (cos, lin) if f is not None]
    r2s = {
        "cosine_r2": cos[1] if cos else None,
        "linear_r2": lin[1] if lin else None,
    }
    if not fits:
        return None, r2s, None
    best = max(fits, key=lambda f: f[1])
    if best[1] <= FIT_R2:
        return None, r2s, best[1]
    kind = "cosine" if best is cos else "linear"
    return kind, {**best[2], **r2s}, best[1]


def _fit_linear(s: np.ndarray, v: np.ndarray) -> tuple[str, float, dict[str, Any]] | None:
    if np.ptp(s) == 0:
        return None
    slope, intercept = _stats.linear_fit(s, v)
    if not slope < 0:
        return None
    r2 = _r2(v, intercept + slope * s)
    return (
        "linear",
        r2,
        {
            "start": intercept + slope * float(s[0]),
            "end": intercept + slope * float(s[-1]),
            "slope_per_step": slope,
            "start_step": float(s[0]),
            "zero_step": -intercept / slope,
        },
    )


def _fit_cosine(s: np.ndarray, v: np.ndarray) -> tuple[str, float, dict[str, Any]] | None:
    """lr(s) = min + (max - min) / 2 * (1 + cos(pi * (s - s0) / S)), s0 = first step; S by a
    log grid over 0.5x..20x the observed span, refined twice; min and max by least squares."""
    s0 = float(s[0])
    span = float(s[-1] - s0)
    if span <= 0:
        return None
    t = s - s0

    def solve(period: float) -> tuple[float, float, float]:
        x = (1.0 + np.cos(np.pi * t / period)) / 2.0
        dx = x - x.mean()
        sxx = float(np.sum(dx * dx))
        if sxx == 0:
            return -math.inf, 0.0, float(v.mean())
        b = float(np.sum(dx * (v - v.mean())) / sxx)
        a = float(v.mean() - b * x.mean())
        return _r2(v, a + b * x), a, b

    grid = np.unique(np.concatenate([np.geomspace(0.5 * span, 20 * span, 300), [span]]))
    best_r2, best_p = -math.inf, span
    for _ in range(3):
        for p in grid:
            r2, _, b = solve(float(p))
            if b > 0 and r2 > best_r2:
                best_r2, best_p = r2, float(p)
        k = int(np.searchsorted(grid, best_p))
        lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
        grid = np.linspace(lo, hi, 101)
    if best_r2 == -math.inf:
        return None
    r2, a, b = solve(best_p)
    end = a + b * (1.0 + math.cos(math.pi * span / best_p)) / 2.0
    return (
        "cosine",
        r2,
        {
            "max": a + b,
            "min": a,
            "start_step": s0,
            "period_steps": best_p,
            "end": end,
        },
    )
