"""Plots of one training run: per-epoch curves, and the test metrics against their targets."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib.ticker import MaxNLocator, PercentFormatter

from ..errors import MLError
from ..metrics import lower_is_better
from ..numfmt import label as _fmt
from .drawing import (
    _BAD_COLOR,
    _BEST_COLOR,
    _TARGET_COLOR,
    _TRAIN_COLOR,
    _VAL_COLOR,
    FIGSIZE,
    _check_path,
    _is_number,
    _mark_nonfinite,
    _new_figure,
    _no_data,
    _save,
    _series,
    _short,
    _style,
)

# Metrics of training histories, in panel order: (key, axis label, shown as percent).
_HISTORY_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("loss", "loss (lower is better)", False),
    ("accuracy", "accuracy (%)", True),
    ("f1", "macro F1 (%)", True),
    ("mse", "MSE (target units²)", False),
    ("mae", "MAE (target units)", False),
)

Checked = dict[str, tuple[np.ndarray, list]]  # metric -> (values with NaN, the raw list)


def _check_history(
    history: object, what: str, n_expected: int | None
) -> tuple[dict[str, tuple[np.ndarray, list]], int | None]:
    if not isinstance(history, Mapping):
        raise MLError(f"{what} must be a dict of metric -> per-epoch list, got {type(history)}")
    out: dict[str, tuple[np.ndarray, list]] = {}
    n = n_expected
    first_key = None
    for key, values in history.items():
        if not isinstance(key, str):
            raise MLError(f"{what} keys must be metric names, got {key!r}")
        arr, raw = _series(values, f"{what}[{key!r}]")
        if n is None:
            n, first_key = len(arr), f"{what}[{key!r}]"
        elif len(arr) != n:
            ref = first_key or "train history"
            raise MLError(
                f"mismatched lengths: {what}[{key!r}] has {len(arr)} values but {ref} has "
                f"{n} epochs (one value per epoch expected)"
            )
        out[key] = (arr, raw)
    return out, n


@dataclass(frozen=True)
class _Curves:
    """Checked inputs of ``training_curves``."""

    train: Checked
    val: Checked
    n: int  # epochs
    panels: list[tuple[str, str, bool]]  # the _HISTORY_METRICS present
    target_lines: dict[str, list[tuple[str, float]]]  # metric -> (label, value)
    unplaced: list[str]  # "key=value" of targets without a panel


def _check_curves(
    train: object, val: object, best_epoch: object, targets: Mapping[str, float] | None
) -> _Curves:
    train_s, n = _check_history(train, "train history", None)
    if not n:
        raise MLError("training history is empty: no epochs to plot (train has no values)")
    val_s: Checked = {}
    if val is not None:
        val_s, n = _check_history(val, "val history", n)
    assert n is not None
    panels = [m for m in _HISTORY_METRICS if m[0] in train_s or m[0] in val_s]
    if not panels:
        known = ", ".join(m[0] for m in _HISTORY_METRICS)
        got = ", ".join(sorted({*train_s, *val_s})) or "nothing"
        raise MLError(f"training history has none of the plotted metrics ({known}); got {got}")
    if best_epoch is not None and (
        not isinstance(best_epoch, int) or isinstance(best_epoch, bool) or not 1 <= best_epoch <= n
    ):
        raise MLError(f"best_epoch must be a 1-based epoch in 1..{n}, got {best_epoch!r}")
    target_lines: dict[str, list[tuple[str, float]]] = {}
    unplaced: list[str] = []
    for key, value in (targets or {}).items():
        if not _is_number(value) or not math.isfinite(float(value)):
            raise MLError(f"targets[{key!r}] must be a finite number, got {value!r}")
        prefix, metric = "", key
        for p in ("val_", "train_"):
            if key.startswith(p):
                prefix, metric = p[:-1] + " ", key[len(p) :]
        if any(metric == m[0] for m in panels):
            target_lines.setdefault(metric, []).append((f"{prefix}target {_fmt(value)}", value))
        else:
            unplaced.append(f"{key}={_fmt(value)}")
    return _Curves(train_s, val_s, n, panels, target_lines, unplaced)


def training_curves(
    *,
    train: dict[str, list],
    val: dict[str, list] | None,
    path: Path,
    title: str = "Training curves",
    best_epoch: int | None = None,
    targets: dict[str, float] | None = None,
) -> Path:
    """Per-epoch curves of a run: one panel per metric (loss, accuracy, F1, MSE, MAE, those
    present in ``train`` or ``val``) plus a generalization-gap panel (val loss - train loss)
    when both histories have ``loss``. Epochs are 1-based on x.

    ``best_epoch`` (1-based) is marked with a dashed vertical line in every panel. ``targets``
    draws horizontal target lines: ``"loss"``, ``"val_loss"`` and ``"train_loss"`` all go to
    the loss panel; targets for metrics without a panel are listed under the title.
    Other keys of the histories (``lr``, ...) are not plotted.
    """
    path = _check_path(path)
    c = _check_curves(train, val, best_epoch, targets)
    epochs = np.arange(1, c.n + 1)
    gap = "loss" in c.train and "loss" in c.val
    n_panels = len(c.panels) + int(gap)
    rows, cols = (1, n_panels) if n_panels <= 2 else (2, 2) if n_panels <= 4 else (2, 3)
    marker = "o" if c.n <= 40 else None

    with _style():
        fig = _new_figure(FIGSIZE)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax in axes[n_panels:]:
            ax.set_visible(False)
        for ax, panel in zip(axes, c.panels, strict=False):
            _metric_panel(ax, c, panel, epochs, marker)
        if gap:
            _gap_panel(axes[len(c.panels)], c, epochs, marker)
        for ax in axes[:n_panels]:
            if best_epoch is not None:
                ax.axvline(
                    best_epoch,
                    color=_BEST_COLOR,
                    linestyle="--",
                    linewidth=1.5,
                    label=f"best epoch {best_epoch}",
                )
            ax.set_xlabel("epoch")
            ax.set_xlim(0.5, c.n + 0.5)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10))
            ax.legend(loc="best", fontsize=8, framealpha=0.85)
        fig.suptitle(title)
        if c.unplaced:
            # Keep a strip at the bottom free for the note (constrained layout ignores fig.text).
            fig.get_layout_engine().set(rect=(0, 0.035, 1, 0.965))
            fig.text(
                0.5,
                0.0,
                "targets without a panel (metric not in history): " + ", ".join(c.unplaced),
                ha="center",
                va="bottom",
                fontsize=8,
                color="0.35",
            )
        return _save(fig, path)


def _metric_panel(
    ax, c: _Curves, panel: tuple[str, str, bool], epochs: np.ndarray, marker: str | None
) -> None:
    """One metric's train and val curves, its targets and its non-finite marks."""
    metric, ylabel, percent = panel
    lines = [
        ("train", c.train.get(metric), _TRAIN_COLOR),
        ("val", c.val.get(metric), _VAL_COLOR),
    ]
    plotted = []
    finite_vals: list[np.ndarray] = []
    for label, s, color in lines:
        if s is None:
            continue
        arr, raw = s
        ax.plot(epochs, arr, color=color, marker=marker, markersize=3, label=label)
        plotted.append((f"{label} {metric}", raw, ~np.isfinite(arr)))
        finite_vals.append(arr[np.isfinite(arr)])
    ax.set_title(ylabel.split(" (")[0].replace("macro ", "macro-"))
    finite = np.concatenate(finite_vals) if finite_vals else np.array([])
    if not finite.size:
        _no_data(ax)
    elif (
        metric in ("loss", "mse", "mae") and finite.min() > 0 and finite.max() / finite.min() > 1e3
    ):
        ax.set_yscale("log")
        ylabel += ", log scale"
    ax.set_ylabel(ylabel)
    if percent:
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
    for label, value in c.target_lines.get(metric, []):
        ax.axhline(value, color=_TARGET_COLOR, linestyle=":", linewidth=1.8, label=label)
    _mark_nonfinite(ax, epochs, plotted, "epoch")


def _gap_panel(ax, c: _Curves, epochs: np.ndarray, marker: str | None) -> None:
    """val loss - train loss per epoch, shaded where positive."""
    diff = c.val["loss"][0] - c.train["loss"][0]
    ax.axhline(0.0, color="0.5", linewidth=1)
    ax.plot(epochs, diff, color="tab:brown", marker=marker, markersize=3, label="val − train")
    ax.fill_between(
        epochs, 0, diff, where=np.isfinite(diff) & (diff > 0), color="tab:brown", alpha=0.12
    )
    ax.set_title("Generalization gap")
    ax.set_ylabel("val loss − train loss")
    if not np.isfinite(diff).any():
        _no_data(ax)
    _mark_nonfinite(ax, epochs, [("gap", list(diff), ~np.isfinite(diff))], "epoch")


# --------------------------------------------------------------------------- metrics summary


def _check_summary(
    metrics: object, targets: Mapping[str, float] | None
) -> tuple[list[str], list[float], dict[str, float]]:
    if not isinstance(metrics, Mapping) or not metrics:
        raise MLError("metrics is empty: nothing to plot (expected a dict of name -> number)")
    names = list(metrics)
    values = []
    for name in names:
        v = metrics[name]
        if v is not None and not _is_number(v):
            raise MLError(f"metrics[{name!r}] is {v!r}, not a number")
        values.append(math.nan if v is None else float(v))
    checked = dict(targets or {})
    for key, t in checked.items():
        if key not in metrics:
            raise MLError(
                f"targets[{key!r}] names no metric; metrics are: {', '.join(map(str, names))}"
            )
        if not _is_number(t) or not math.isfinite(float(t)):
            raise MLError(f"targets[{key!r}] must be a finite number, got {t!r}")
    return names, values, checked


def metrics_summary(
    *,
    metrics: dict[str, float],
    path: Path,
    targets: dict[str, float] | None = None,
    title: str = "Test metrics",
) -> Path:
    """Horizontal bars, one per metric, each labelled with its value. A metric with a target
    gets a target marker on its bar and "target >= 0.9: met/missed" in its label (lower is
    taken as better for names with loss/mse/mae/error/latency/time). Non-finite values are
    shown as "NaN" with no bar. Targets for metrics not given are an error."""
    path = _check_path(path)
    names, values, targets = _check_summary(metrics, targets)
    arr = np.array(values)
    finite = arr[np.isfinite(arr)]
    extent = [0.0, *finite.tolist(), *(float(t) for t in targets.values())]
    lo, hi = min(extent), max(extent)
    span = (hi - lo) or 1.0
    with _style():
        fig = _new_figure(FIGSIZE)
        ax = fig.add_subplot()
        _summary_bars(ax, names, values, targets)
        ax.set_yticks(np.arange(len(names)), [_short(n, 30) for n in names])
        ax.invert_yaxis()
        # Room on the right for the value labels.
        ax.set_xlim(min(lo, 0.0) - 0.02 * span, hi + 0.55 * span)
        ax.axvline(0, color="0.3", linewidth=1)
        ax.set_xlabel("value (each metric in its own unit; accuracy/F1 as fractions 0–1)")
        ax.grid(axis="y", visible=False)
        if targets:
            from matplotlib.lines import Line2D
            from matplotlib.patches import Patch

            handles = [
                Line2D([], [], color="black", linewidth=2.5, label="target"),
                Patch(color="tab:green", label="meets target"),
                Patch(color="tab:red", label="misses target"),
                Patch(color="C0", label="no target"),
            ]
            ax.legend(handles=handles, loc="lower right", fontsize=8, framealpha=0.9)
        ax.set_title(title)
        return _save(fig, path)


def _summary_bars(ax, names: list[str], values: list[float], targets: dict[str, float]) -> None:
    """The bars (green/red against a target, blue without one), target marks and labels."""
    arr = np.array(values)
    colors = []
    for name, v in zip(names, values, strict=True):
        t = targets.get(name)
        if t is None or not math.isfinite(v):
            colors.append("C0")
        else:
            ok = v <= t if lower_is_better(name) else v >= t
            colors.append("tab:green" if ok else "tab:red")
    y = np.arange(len(names))
    bars = ax.barh(y, np.where(np.isfinite(arr), arr, 0.0), color=colors, height=0.6)
    for i, (name, v) in enumerate(zip(names, values, strict=True)):
        if not math.isfinite(v):
            bars[i].set_visible(False)
        label = _fmt(v)
        t = targets.get(name)
        if t is not None:
            ax.plot(
                [t, t], [i - 0.42, i + 0.42], color="black", linewidth=2.5, solid_capstyle="butt"
            )
            sign = "≤" if lower_is_better(name) else "≥"
            if math.isfinite(v):
                ok = v <= t if sign == "≤" else v >= t
                label += f"   (target {sign} {_fmt(float(t))}: {'met' if ok else 'missed'})"
            else:
                label += f"   (target {sign} {_fmt(float(t))}: missed)"
        x_text = v if math.isfinite(v) and v > 0 else 0.0
        if math.isfinite(v) and v < 0:
            x_text = 0.0
        ax.annotate(
            label,
            xy=(max(x_text, float(t)) if t is not None and t > x_text else x_text, i),
            xytext=(5, 0),
            textcoords="offset points",
            va="center",
            ha="left",
            fontsize=9,
            color=_BAD_COLOR if not math.isfinite(v) else "0.1",
        )
