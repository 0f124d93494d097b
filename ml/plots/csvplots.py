"""Plots of metric CSVs (metrics merged on step): an overview grid, trends, correlations.

``None`` in a column is a value not logged at that step and is skipped; only real NaN/inf
floats are marked, in red.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from .. import stats as _stats
from ..errors import MLError
from ..numfmt import label as _fmt
from .drawing import (
    _PANEL_COLORS,
    CORRELATION_FIGSIZE,
    CSV_FIGSIZE,
    MAX_CSV_PANELS,
    _check_path,
    _grid,
    _is_number,
    _mark_nonfinite,
    _new_figure,
    _no_data,
    _save,
    _series,
    _short,
    _style,
)


def _check_columns(
    columns: object, n: int | None, *, what: str = "columns"
) -> dict[str, tuple[np.ndarray, list]]:
    if not isinstance(columns, Mapping) or not columns:
        raise MLError(f"{what} is empty: no metrics to plot (expected a dict of name -> values)")
    out = {}
    for name, values in columns.items():
        arr, raw = _series(values, f"{what}[{name!r}]")
        if n is not None and len(arr) != n:
            raise MLError(
                f"mismatched lengths: {what}[{name!r}] has {len(arr)} values but steps has {n}"
            )
        if n is None:
            n = len(arr)
        out[str(name)] = (arr, raw)
    return out


def _check_steps(steps: object) -> np.ndarray:
    arr, _ = _series(steps, "steps", allow_none=False)
    if len(arr) == 0:
        raise MLError("steps is empty: the metric CSV has no rows to plot")
    if not np.isfinite(arr).all():
        i = int(np.argmax(~np.isfinite(arr)))
        raise MLError(f"steps[{i}] is {arr[i]}: steps must be finite numbers")
    return arr


def _sorted_by_step(
    x: np.ndarray, cols: dict[str, tuple[np.ndarray, list]]
) -> tuple[np.ndarray, dict[str, tuple[np.ndarray, list]]]:
    order = np.argsort(x, kind="stable")
    if (order == np.arange(len(x))).all():
        return x, cols
    return x[order], {k: (a[order], [raw[i] for i in order]) for k, (a, raw) in cols.items()}


def _csv_panels(
    fig: Figure, x: np.ndarray, cols: dict[str, tuple[np.ndarray, list]], title: str
) -> list:
    names = list(cols)
    shown = names[:MAX_CSV_PANELS]
    rows, ncols = _grid(len(shown))
    axes = fig.subplots(rows, ncols, squeeze=False, sharex=True).ravel()
    for ax in axes[len(shown) :]:
        ax.set_visible(False)
    for i, ax in enumerate(axes[: len(shown)]):
        last_row = i >= len(shown) - ncols
        if last_row:
            ax.set_xlabel("step")
            ax.xaxis.set_tick_params(labelbottom=True)
    if len(names) > len(shown):
        more = names[len(shown) :]
        listed = ", ".join(_short(m, 24) for m in more[:4]) + (", …" if len(more) > 4 else "")
        title += f"\n+{len(more)} more not shown: {listed}"
    fig.suptitle(title)
    return list(zip(shown, axes, strict=False))


def _mark_csv_bad(ax, x: np.ndarray, raw: list) -> bool:
    """Mark real NaN/inf values; ``None`` (not logged at that step) is not marked."""
    bad = np.array([_is_number(v) and not math.isfinite(float(v)) for v in raw], dtype=bool)
    return _mark_nonfinite(ax, x, [("", raw, bad)], "step")


def csv_overview(
    *,
    steps: list[float],
    columns: dict[str, list[float | None]],
    path: Path,
    title: str = "Metrics overview",
) -> Path:
    """A grid of small panels, one per metric column against step (the first 12 columns; the
    title says "+N more not shown" beyond that). ``None`` is a value not logged at that step and
    is skipped (the line joins the logged points); a real NaN/inf is marked in red. Each panel
    title gives the metric and its last finite value."""
    path = _check_path(path)
    x = _check_steps(steps)
    cols = _check_columns(columns, len(x))
    x, cols = _sorted_by_step(x, cols)
    with _style():
        fig = _new_figure(CSV_FIGSIZE)
        for i, (name, ax) in enumerate(_csv_panels(fig, x, cols, title)):
            arr, raw = cols[name]
            ok = np.isfinite(arr)
            color = _PANEL_COLORS[i % len(_PANEL_COLORS)]
            if ok.any():
                ax.plot(
                    x[ok],
                    arr[ok],
                    color=color,
                    marker="o" if ok.sum() <= 30 else None,
                    markersize=3,
                )
                logged = [v for v in raw if v is not None]
                finite_last = _is_number(logged[-1]) and math.isfinite(float(logged[-1]))
                last = f"last{'' if finite_last else ' finite'} {_fmt(float(arr[ok][-1]))}"
            else:
                _no_data(ax)
                last = "no finite values"
            ax.set_title(f"{_short(name)}\n{last}", fontsize=9)
            ax.tick_params(labelsize=8)
            if _mark_csv_bad(ax, x, raw):
                ax.legend(fontsize=7, loc="best", framealpha=0.85)
        return _save(fig, path)


def _rolling_mean(v: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last ``window`` points (fewer at the start)."""
    c = np.cumsum(np.insert(v, 0, 0.0))
    idx = np.arange(1, len(v) + 1)
    lo = np.maximum(idx - window, 0)
    return (c[idx] - c[lo]) / (idx - lo)


def csv_trends(
    *,
    steps: list[float],
    columns: dict[str, list[float | None]],
    path: Path,
    window: int = 10,
    title: str = "Metric trends",
) -> Path:
    """One panel per metric (first 12): the raw values (faint), a trailing rolling mean over
    ``window`` logged points, and a least-squares linear trend with its slope per step in the
    legend. ``None`` = not logged at that step (skipped); NaN/inf are marked in red."""
    path = _check_path(path)
    if not isinstance(window, int) or isinstance(window, bool) or window < 1:
        raise MLError(f"window must be a positive integer (points to average), got {window!r}")
    x = _check_steps(steps)
    cols = _check_columns(columns, len(x))
    x, cols = _sorted_by_step(x, cols)
    with _style():
        fig = _new_figure(CSV_FIGSIZE)
        for i, (name, ax) in enumerate(
            _csv_panels(fig, x, cols, f"{title} (rolling mean over {window})")
        ):
            arr, raw = cols[name]
            ok = np.isfinite(arr)
            color = _PANEL_COLORS[i % len(_PANEL_COLORS)]
            xs, ys = x[ok], arr[ok]
            if len(ys):
                ax.plot(xs, ys, color=color, alpha=0.3, linewidth=1, label="raw")
                ax.plot(
                    xs, _rolling_mean(ys, window), color=color, linewidth=2, label="rolling mean"
                )
            if len(ys) >= 2 and np.ptp(xs) > 0:
                slope, icpt = _stats.linear_fit(xs, ys)
                ax.plot(
                    xs,
                    slope * xs + icpt,
                    color="0.2",
                    linestyle="--",
                    linewidth=1.2,
                    label=f"trend {slope:+.3g}/step",
                )
            marked = _mark_csv_bad(ax, x, raw)
            if not len(ys):
                _no_data(ax)
            if len(ys) or marked:
                ax.legend(fontsize=7, loc="best", framealpha=0.8)
            ax.set_title(_short(name), fontsize=9)
            ax.tick_params(labelsize=8)
        return _save(fig, path)


def correlation_matrix(
    *, columns: dict[str, list[float | None]]
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``(names, r, shared)``: Pearson r of every pair of columns (``tether.ml.stats.pearson``:
    over the rows where both are finite; NaN where fewer than 3 rows are shared or a column is
    constant there) and the number of rows each pair shares. Needs at least 2 columns."""
    if not isinstance(columns, Mapping) or len(columns) < 2:
        got = len(columns) if isinstance(columns, Mapping) else type(columns).__name__
        raise MLError(f"correlation needs at least 2 metric columns, got {got}")
    cols = _check_columns(columns, None)
    names = list(cols)
    k = len(names)
    r = np.full((k, k), np.nan)
    shared = np.zeros((k, k), dtype=int)
    for i in range(k):
        for j in range(i, k):
            r[i, j], shared[i, j] = _stats.pearson(cols[names[i]][0], cols[names[j]][0])
            r[j, i], shared[j, i] = r[i, j], shared[i, j]
    return names, r, shared


def correlation_heatmap(
    *,
    columns: dict[str, list[float | None]],
    path: Path,
    title: str = "Metric correlations (Pearson r)",
) -> Path:
    """Pearson correlation of every pair of metric columns, each pair over the rows where both
    are finite. Cells are annotated with r; "n/a" where fewer than 3 rows are shared or a
    column is constant there. Needs at least 2 metrics."""
    path = _check_path(path)
    with _style():
        return _save(correlation_figure(columns=columns, title=title), path)


def correlation_figure(
    *, columns: dict[str, list[float | None]], title: str = "Metric correlations (Pearson r)"
) -> Figure:
    """The figure ``correlation_heatmap`` saves, not saved: one heatmap axes whose cell (row
    i, column j) holds the text of r ("+0.93") or "n/a" at (j + 0.5, i + 0.5)."""
    names, r, shared = correlation_matrix(columns=columns)
    k = len(names)
    annot = np.where(np.isnan(r), "n/a", np.vectorize(lambda v: f"{v:+.2f}")(np.nan_to_num(r)))
    rows_used = int(shared[~np.eye(k, dtype=bool)].min())
    with _style():
        fig = _new_figure(CORRELATION_FIGSIZE)
        ax = fig.add_subplot()
        ax.set_facecolor("0.85")
        labels = [_short(n, 26) for n in names]
        font = 10 if k <= 8 else 8 if k <= 14 else 6
        sns.heatmap(
            np.nan_to_num(r),
            ax=ax,
            mask=np.isnan(r),
            annot=annot if k <= 20 else False,
            fmt="",
            annot_kws={"fontsize": font},
            cmap="vlag",
            vmin=-1,
            vmax=1,
            center=0,
            square=True,
            linewidths=0.5,
            linecolor="white",
            xticklabels=labels,
            yticklabels=labels,
            cbar_kws={"label": "Pearson r (−1 … +1)", "shrink": 0.8},
        )
        ax.grid(False)
        if k <= 20:
            for i, j in zip(*np.nonzero(np.isnan(r)), strict=True):
                ax.text(
                    j + 0.5, i + 0.5, "n/a", ha="center", va="center", fontsize=font, color="0.3"
                )
        ax.tick_params(axis="x", rotation=40, labelsize=9)
        for t in ax.get_xticklabels():
            t.set_horizontalalignment("right")
        ax.tick_params(axis="y", rotation=0, labelsize=9)
        ax.set_title(
            f"{title}\neach pair over rows where both are finite (fewest shared: {rows_used}); "
            "n/a = < 3 rows or constant",
            fontsize=11,
        )
        return fig
