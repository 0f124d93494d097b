"""The comparison's three plots, drawn the way ``ml.plots`` draws (its style, sizes and atomic
PNG save; figures never registered with pyplot, so no GUI backend is involved).

Each returns the path written, or None when there is nothing to draw (no finished trial, no
validation curves, no latency): the report then says so in a note instead of showing an
empty figure, and a stale PNG of an earlier version of the comparison is removed.
Only the plot bands (min-max over seeds per epoch) are computed here; every statistic shown
comes from ``ComparisonData``.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator

from ..plots.drawing import FIGSIZE, _new_figure, _save, _short, _style
from .build import LATENCY_METRIC, ComparisonData, ExtractorView
from .summary import better_text

CURVE_SECOND = ("accuracy", "f1", "mse", "mae")  # the second panel: the first of these present
WIDE_FIGSIZE = (13.0, 5.5)


def colors(data: ComparisonData) -> dict[str, str]:
    """One colour per extractor, the same in every plot (report order)."""
    return {e.name: f"C{i % 10}" for i, e in enumerate(data.extractors)}


def _finished_curves(e: ExtractorView, name: str) -> list[list[float | None]]:
    return [
        r.val_curves[name] for r in e.trials if r.status == "finished" and r.val_curves.get(name)
    ]


def _panels(data: ComparisonData) -> list[str]:
    have = {
        name
        for e in data.extractors
        for r in e.trials
        if r.status == "finished"
        for name, vals in r.val_curves.items()
        if any(v is not None for v in vals)
    }
    second = next((n for n in CURVE_SECOND if n in have), None)
    if "loss" in have:
        return ["loss", second] if second else ["loss"]
    rest = sorted(have)
    return ([second] if second else []) + [n for n in rest if n != second][: 1 if second else 2]


def val_curves(*, data: ComparisonData, path: Path) -> Path | None:
    """Validation curves per extractor: the mean over its finished seeds per epoch, with the
    seeds' min-max as a band (seeds that stopped early count only where they have epochs)."""
    panels = _panels(data)
    if not panels:
        return None
    color = colors(data)
    with _style():
        fig = _new_figure(WIDE_FIGSIZE if len(panels) > 1 else FIGSIZE)
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, name in zip(axes, panels, strict=True):
            for e in data.extractors:
                curves = _finished_curves(e, name)
                if not curves:
                    continue
                arr = np.full((len(curves), max(len(c) for c in curves)), np.nan)
                for i, c in enumerate(curves):
                    arr[i, : len(c)] = [np.nan if v is None else float(v) for v in c]
                with warnings.catch_warnings():  # an epoch no seed has finite is a gap
                    warnings.simplefilter("ignore", RuntimeWarning)
                    mean = np.nanmean(arr, axis=0)
                    lo, hi = np.nanmin(arr, axis=0), np.nanmax(arr, axis=0)
                x = np.arange(1, arr.shape[1] + 1)
                ax.plot(x, mean, color=color[e.name], marker="o" if len(x) <= 30 else None,
                        markersize=3, label=f"{_short(e.name)} (n={len(curves)})")  # fmt: skip
                if len(curves) > 1:
                    ax.fill_between(x, lo, hi, color=color[e.name], alpha=0.18, linewidth=0)
            ax.set_title(f"validation {name}")
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            ax.set_xlabel("epoch")
            ax.set_ylabel(name)
            ax.legend(fontsize=8)
        fig.suptitle("Validation curves: mean over seeds, band = min-max")
        return _save(fig, path)


def metric_bars(*, data: ComparisonData, path: Path) -> Path | None:
    """A bar per extractor at its mean, error bars its 95% bootstrap CI, its seeds as points."""
    shown = [e for e in data.extractors if e.summary is not None and e.summary.n]
    if not shown:
        return None
    color = colors(data)
    values = [p.value for e in shown for p in e.summary.points]
    values += [v for e in shown for v in (e.summary.ci_low, e.summary.ci_high) if v is not None]
    lo, hi = min(values), max(values)
    # Zoom in on the seeds' spread, not the zero line, when the values sit far from zero; a
    # bar cut off below would mislead then, so the mean is a line instead.
    zoom = lo >= 0 and hi > 0 and lo > 0.5 * hi
    with _style():
        fig = _new_figure(FIGSIZE)
        ax = fig.subplots()
        for i, e in enumerate(shown):
            s = e.summary
            if zoom:
                ax.hlines(s.mean, i - 0.3, i + 0.3, color=color[e.name], linewidth=3)
            else:
                ax.bar(i, s.mean, width=0.6, color=color[e.name], alpha=0.7)
            if s.ci_low is not None and s.ci_high is not None:
                ax.errorbar(i, s.mean, yerr=[[s.mean - s.ci_low], [s.ci_high - s.mean]],
                            color="black", capsize=8, linewidth=1.5,
                            label="95% CI" if i == 0 else None)  # fmt: skip
            pts = [p.value for p in s.points]
            xs = i + (np.linspace(-0.16, 0.16, len(pts)) if len(pts) > 1 else np.zeros(1))
            ax.scatter(xs, pts, color="black", s=22, zorder=3, label="seeds" if i == 0 else None)
        ticks = [f"{_short(e.name, 20)}\n(n={e.summary.n})" for e in shown]
        ax.set_xticks(range(len(shown)), ticks)
        if zoom:
            pad = max((hi - lo) * 0.25, abs(hi) * 1e-3)
            ax.set_ylim(lo - pad, hi + pad)
        ax.set_ylabel(data.metric)
        ax.set_title(f"{data.metric} per extractor ({better_text(data)})")
        ax.legend(fontsize=8)
        return _save(fig, path)


def accuracy_vs_latency(*, data: ComparisonData, path: Path) -> Path | None:
    """The ranking metric against latency, one point per extractor at its means (error bars:
    the std over seeds); None when no finished trial recorded a latency."""
    shown = [
        e for e in data.extractors
        if e.summary is not None and e.summary.n and LATENCY_METRIC in e.others
    ]  # fmt: skip
    if not shown:
        return None
    color = colors(data)
    with _style():
        fig = _new_figure(FIGSIZE)
        ax = fig.subplots()
        for e in shown:
            lat, s = e.others[LATENCY_METRIC], e.summary
            ax.errorbar(lat.mean, s.mean, xerr=lat.std, yerr=s.std, fmt="o", markersize=8,
                        color=color[e.name], capsize=4, label=_short(e.name))  # fmt: skip
            ax.annotate(_short(e.name, 20), (lat.mean, s.mean), textcoords="offset points",
                        xytext=(7, 7), fontsize=9)  # fmt: skip
        ax.set_xlabel("latency (ms per clip, mean over seeds)")
        ax.set_ylabel(f"{data.metric} (mean over seeds)")
        ax.set_title(f"{data.metric} vs latency ({better_text(data)}; faster is left)")
        ax.legend(fontsize=8)
        return _save(fig, path)
