"""Statistics of merged metrics: per metric, pairwise Pearson correlations, the lr schedule."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .. import stats as _stats
from .lrschedule import classify_lr_schedule, lr_columns
from .records import (
    _ZERO,
    FLAT_TREND,
    CSVSummary,
    LRSchedule,
    MetricsCSVError,
    MetricsTable,
    MetricStats,
    Value,
)


def summarize(*, table: MetricsTable, window: int | None = None) -> CSVSummary:
    """Per-metric statistics, pairwise Pearson correlations and the learning-rate schedule.

    ``window``: how many finite values the first/last means average; default max(1, 10% of the
    metric's finite count), never more than the count.
    """
    _check_window(window)
    steps = np.asarray(table.steps, dtype=float)
    stats = {
        name: metric_stats(steps=table.steps, values=values, window=window)
        for name, values in table.columns.items()
    }
    correlations, counts = _correlations(table)
    notes = list(table.notes)
    for name, s in stats.items():
        if s.count == 0:
            notes.append(
                f"{name}: no finite values ({s.missing} missing, {s.non_finite} non-finite)"
            )
    lr = None
    candidates = lr_columns(names=table.columns)
    if candidates:
        column = candidates[0]
        lr = classify_lr_schedule(column=column, steps=table.steps, values=table.columns[column])
        if len(candidates) > 1:
            lr = LRSchedule(
                column=lr.column,
                kind=lr.kind,
                details={**lr.details, "other_lr_columns": candidates[1:]},
                r2=lr.r2,
            )
    return CSVSummary(
        stats=stats,
        correlations=correlations,
        correlation_counts=counts,
        lr_schedule=lr,
        steps={
            "first": float(steps[0]) if len(steps) else None,
            "last": float(steps[-1]) if len(steps) else None,
            "count": len(steps),
        },
        files=dict(table.layout),
        notes=notes,
    )


def metric_stats(
    *, steps: Sequence[float], values: Sequence[Value], window: int | None = None
) -> MetricStats:
    """``MetricStats`` of one series aligned with ``steps`` (see the class for definitions)."""
    _check_window(window)
    if len(steps) != len(values):
        raise MetricsCSVError(f"{len(values)} values for {len(steps)} steps")
    missing = sum(v is None for v in values)
    bad = [
        float(s)
        for s, v in zip(steps, values, strict=True)
        if v is not None and not math.isfinite(v)
    ]
    pts = [(s, v) for s, v in zip(steps, values, strict=True) if v is not None and math.isfinite(v)]
    n = len(pts)
    w = max(1, n // 10) if window is None else window
    w = max(1, min(w, n)) if n else w
    empty = MetricStats(
        count=0,
        missing=missing,
        non_finite=len(bad),
        first_non_finite_step=bad[0] if bad else None,
        mean=None,
        std=None,
        cv=None,
        min=None,
        max=None,
        window=w,
        first=None,
        last=None,
        pct_change=None,
        trend_slope=None,
        relative_trend=None,
        direction=None,
    )
    if not n:
        return empty
    x = np.array([p[0] for p in pts], dtype=float)
    y = np.array([p[1] for p in pts], dtype=float)
    scale = float(np.max(np.abs(y)))
    mean = float(np.mean(y))
    std = float(np.std(y))
    cv = None if _is_zero(mean, scale) else std / abs(mean)
    first = float(np.mean(y[:w]))
    last = float(np.mean(y[-w:]))
    pct = None if _is_zero(first, scale) else (last - first) / abs(first) * 100.0
    lo, hi = float(np.min(y)), float(np.max(y))
    slope = rel = direction = None
    if n >= 2 and np.ptp(x) > 0:
        slope = _stats.slope(x, y)
        rel = 0.0 if hi == lo else slope * float(np.ptp(x)) / (hi - lo)
        direction = "flat" if abs(rel) < FLAT_TREND else ("decreasing" if rel < 0 else "increasing")
    return MetricStats(
        count=n,
        missing=missing,
        non_finite=len(bad),
        first_non_finite_step=bad[0] if bad else None,
        mean=mean,
        std=std,
        cv=cv,
        min=lo,
        max=hi,
        window=w,
        first=first,
        last=last,
        pct_change=pct,
        trend_slope=slope,
        relative_trend=rel,
        direction=direction,
    )


def _check_window(window: int | None) -> None:
    if window is None:
        return
    if isinstance(window, bool) or not isinstance(window, int):
        raise MetricsCSVError(f"window must be an integer >= 1, got {window!r}")
    if window < 1:
        raise MetricsCSVError(f"window must be >= 1, got {window}")


def _is_zero(x: float, scale: float) -> bool:
    return abs(x) <= _ZERO * scale or x == 0.0


def _correlations(
    table: MetricsTable,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    """Pearson r of every pair of metrics over the steps where both are finite; a pair with
    fewer than 3 such steps, or a constant metric there, is left out (r is undefined)."""
    names = list(table.columns)
    arrays = {
        k: np.array([np.nan if v is None else v for v in vals], dtype=float)
        for k, vals in table.columns.items()
    }
    corr: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            r, n = _stats.pearson(arrays[a], arrays[b])
            if math.isnan(r):
                continue
            corr.setdefault(a, {})[b] = r
            corr.setdefault(b, {})[a] = r
            counts.setdefault(a, {})[b] = n
            counts.setdefault(b, {})[a] = n
    return corr, counts
