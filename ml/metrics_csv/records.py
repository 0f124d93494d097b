"""The records of the metric-CSV import, its names and its tolerances, and their plain JSON."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from ..errors import MLError

CHART_STEP = "Step"
HISTORY_STEP = "_step"
RUNTIME = "_runtime"
RUN_SEPARATOR = " - "
BAND_SUFFIXES = {"__MIN": 0, "__MAX": 1}

# Relative tolerances of the analysis; every one of them is reported next to what it decided.
FLAT_TREND = 0.10  # |slope * step span| below this fraction of the value range: "flat"
CONSTANT_LR = 0.01  # (max - min) / max|lr| below this: constant schedule
FIT_R2 = 0.98  # a cosine / linear fit must explain at least this much of the variance
SAME_LR = 1e-6  # two logged lr values within this relative distance are the same value
SAME_GAMMA = 0.02  # step drops whose factors are within 2% of their median share one gamma
_ZERO = 1e-9  # |x| <= _ZERO * scale counts as zero (mean for CV, first for % change)

Value = float | None
Series = list[Value]


class MetricsCSVError(MLError):
    """A metrics CSV cannot be read: names the file, the line and the column to fix."""


@dataclass(frozen=True)
class MetricsTable:
    """Metrics from one or more W&B CSV exports, aligned on the sorted union of their steps.

    ``columns[name][i]`` is the value at ``steps[i]``: ``None`` where the file had no value at that
    step, ``float('nan')``/``inf`` where it logged a non-finite value. ``bands`` holds the chart
    export's (__MIN, __MAX) series for a metric. ``sources``: metric -> file; ``layout``: file ->
    ``"chart"`` | ``"history"``; ``runs``: metric -> W&B run name where the header names one;
    ``elapsed``: file -> ``_runtime`` seconds per step (history exports that have it);
    ``duplicate_steps``: file -> rows that repeated an earlier step; ``notes``: renamings and other
    things a reader should know.
    """

    steps: list[float]
    columns: dict[str, Series]
    bands: dict[str, tuple[Series, Series]] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    layout: dict[str, str] = field(default_factory=dict)
    runs: dict[str, str] = field(default_factory=dict)
    elapsed: dict[str, Series] = field(default_factory=dict)
    duplicate_steps: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        n = len(self.steps)
        for name, values in self.columns.items():
            if len(values) != n:
                raise MetricsCSVError(f"column {name!r} has {len(values)} values for {n} steps")
        for name, (lo, hi) in self.bands.items():
            if len(lo) != n or len(hi) != n:
                raise MetricsCSVError(f"band of {name!r} does not have {n} values")

    def to_dict(self) -> dict:
        """Plain JSON: missing stays ``null``, non-finite values become ``"nan"``/``"inf"``/
        ``"-inf"`` so that they survive strict JSON and stay apart from missing."""
        return {
            "steps": list(self.steps),
            "columns": {k: _json_series(v) for k, v in self.columns.items()},
            "bands": {
                k: {"min": _json_series(lo), "max": _json_series(hi)}
                for k, (lo, hi) in self.bands.items()
            },
            "sources": dict(self.sources),
            "layout": dict(self.layout),
            "runs": dict(self.runs),
            "elapsed": {k: _json_series(v) for k, v in self.elapsed.items()},
            "duplicate_steps": dict(self.duplicate_steps),
            "notes": list(self.notes),
        }


@dataclass(frozen=True)
class MetricStats:
    """Statistics of one metric over its finite values (``None`` where there are too few).

    ``count`` finite values, ``missing`` steps of the table without a value, ``non_finite`` NaN/inf
    values (``first_non_finite_step`` the first of them). ``std`` is the population std (ddof=0);
    ``cv`` = std / |mean| (None when the mean is ~0). ``first``/``last``: means of the first/last
    ``window`` finite values; ``pct_change`` = (last - first) / |first| * 100 (None when first is
    ~0). ``trend_slope``: least-squares slope per step; ``relative_trend`` = slope * step span /
    (max - min); ``direction``: "flat" when |relative_trend| < 0.10, else "decreasing" or
    "increasing".
    """

    count: int
    missing: int
    non_finite: int
    first_non_finite_step: float | None
    mean: float | None
    std: float | None
    cv: float | None
    min: float | None
    max: float | None
    window: int
    first: float | None
    last: float | None
    pct_change: float | None
    trend_slope: float | None
    relative_trend: float | None
    direction: str | None

    def to_dict(self) -> dict:
        return _plain(asdict(self))


@dataclass(frozen=True)
class LRSchedule:
    """A learning-rate column and the schedule it follows.

    ``kind``: "constant" | "step" | "cosine" | "linear" | "unknown". ``r2``: R^2 of the fitted
    schedule (piecewise constant for "step"; None for "constant"). ``details`` (plain JSON): the
    fitted numbers, e.g. ``drops`` [{step, from, to, factor}] for "step" (factor = to / from),
    ``max``/``min``/``start_step``/``period_steps`` for "cosine", ``warmup_steps`` when the lr
    rises to its peak first.
    """

    column: str
    kind: str
    details: dict[str, Any]
    r2: float | None

    def to_dict(self) -> dict:
        return _plain(asdict(self))


@dataclass(frozen=True)
class CSVSummary:
    """``summarize``'s result: per-metric stats, Pearson correlations (r and the number of steps
    where both metrics are finite), the lr schedule, and ``steps`` = {first, last, count}."""

    stats: dict[str, MetricStats]
    correlations: dict[str, dict[str, float]]
    correlation_counts: dict[str, dict[str, int]]
    lr_schedule: LRSchedule | None
    steps: dict[str, float | int | None]
    files: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return _plain(
            {
                "stats": {k: v.to_dict() for k, v in self.stats.items()},
                "correlations": self.correlations,
                "correlation_counts": self.correlation_counts,
                "lr_schedule": self.lr_schedule.to_dict() if self.lr_schedule else None,
                "steps": self.steps,
                "files": self.files,
                "notes": self.notes,
            }
        )


def _json_series(values: Series) -> list[float | str | None]:
    out: list[float | str | None] = []
    for v in values:
        if v is None or math.isfinite(v):
            out.append(v)
        elif math.isnan(v):
            out.append("nan")
        else:
            out.append("inf" if v > 0 else "-inf")
    return out


def _plain(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    return obj
