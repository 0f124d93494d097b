"""Plots of a model's test results: the confusion matrix, causal attention, and when a
streaming classifier decided each clip."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import seaborn as sns
from matplotlib.ticker import MaxNLocator, PercentFormatter

from ..errors import MLError
from ..numfmt import label as _fmt
from .drawing import (
    _BAD_COLOR,
    CONFUSION_FIGSIZE,
    FIGSIZE,
    _check_path,
    _is_number,
    _new_figure,
    _save,
    _series,
    _short,
    _style,
)


def confusion_matrix_plot(
    *,
    matrix: list[list[int]],
    class_names: list[str],
    path: Path,
    title: str = "Confusion matrix",
) -> Path:
    """Heatmap of a confusion matrix (rows = true class, columns = predicted class). Each cell
    shows the count and the share of its true class ("180\\n90.0%"); colour is that share, so
    imbalanced classes stay comparable. The subtitle gives accuracy and the number of clips."""
    path = _check_path(path)
    if not isinstance(class_names, Sequence) or isinstance(class_names, str) or not class_names:
        raise MLError("class_names is empty: need one name per row of the confusion matrix")
    k = len(class_names)
    if not isinstance(matrix, Sequence | np.ndarray) or len(matrix) == 0:
        raise MLError("confusion matrix is empty: expected a square list of lists of counts")
    if len(matrix) != k:
        raise MLError(
            f"mismatched lengths: confusion matrix has {len(matrix)} rows but "
            f"{k} class names ({', '.join(map(str, class_names))})"
        )
    counts = np.zeros((k, k), dtype=np.int64)
    for i, row in enumerate(matrix):
        if not isinstance(row, Sequence | np.ndarray) or len(row) != k:
            n = len(row) if isinstance(row, Sequence | np.ndarray) else type(row).__name__
            raise MLError(f"confusion matrix row {i} has {n} entries, expected {k} (square)")
        for j, c in enumerate(row):
            if not _is_number(c) or not float(c).is_integer() or c < 0:
                raise MLError(f"confusion matrix [{i}][{j}] is {c!r}: counts must be integers >= 0")
            counts[i, j] = int(c)
    totals = counts.sum(axis=1)
    share = np.divide(
        counts, totals[:, None], out=np.zeros((k, k), dtype=float), where=totals[:, None] > 0
    )
    annot = np.empty((k, k), dtype=object)
    for i in range(k):
        for j in range(k):
            pct = f"{100 * share[i, j]:.1f}%" if totals[i] else "–"
            annot[i, j] = f"{counts[i, j]}\n{pct}"
    total = int(counts.sum())
    acc = f"accuracy {100 * np.trace(counts) / total:.1f}%" if total else "no samples"

    with _style():
        fig = _new_figure(CONFUSION_FIGSIZE)
        ax = fig.add_subplot()
        font = 12 if k <= 4 else 10 if k <= 8 else 8 if k <= 14 else 6
        labels = [_short(str(c), 18) for c in class_names]
        sns.heatmap(
            100 * share,
            ax=ax,
            annot=annot if k <= 25 else False,
            fmt="",
            annot_kws={"fontsize": font},
            cmap="Blues",
            vmin=0,
            vmax=100,
            square=True,
            linewidths=0.5,
            linecolor="white",
            xticklabels=labels,
            yticklabels=labels,
            cbar_kws={"label": "share of true class (%)", "shrink": 0.8},
        )
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        rotate = k > 4 or max(len(s) for s in labels) > 10
        ax.tick_params(axis="x", rotation=35 if rotate else 0)
        ax.tick_params(axis="y", rotation=0)
        if rotate:
            for t in ax.get_xticklabels():
                t.set_horizontalalignment("right")
        ax.set_title(f"{title}\n{acc} of {total} samples; cells: count and % of true class")
        return _save(fig, path)


# --------------------------------------------------------------------------- attention


def attention_heatmap(
    *,
    attention: list[list[float]],
    path: Path,
    title: str = "Causal attention (frame t attends to frames <= t)",
) -> Path:
    """Heatmap of one (T, T) attention matrix: row t = query frame t, column s = attended
    frame s, both 1-based. Cells are annotated with their weight when T <= 12. Non-finite
    weights are drawn grey and counted in the subtitle."""
    path = _check_path(path)
    if not isinstance(attention, Sequence | np.ndarray) or len(attention) == 0:
        raise MLError("attention matrix is empty: expected a (T, T) list of lists of weights")
    t = len(attention)
    rows = []
    for i, row in enumerate(attention):
        arr, _ = _series(row, f"attention[{i}]")
        if len(arr) != t:
            raise MLError(
                f"attention matrix must be square (T, T): row {i} has {len(arr)} values, T = {t}"
            )
        rows.append(arr)
    a = np.vstack(rows)
    bad = ~np.isfinite(a)
    finite = a[~bad]
    vmin = min(0.0, float(finite.min())) if finite.size else 0.0
    vmax = float(finite.max()) if finite.size else 1.0
    vmax = vmax if vmax > vmin else vmin + 1.0
    step = max(1, math.ceil(t / 16))
    ticks = [str(i + 1) if i % step == 0 else "" for i in range(t)]
    subtitle = "row = query frame t, column = attended frame"
    if bad.any():
        subtitle += f"; {int(bad.sum())} non-finite weights shown grey"

    with _style():
        fig = _new_figure(CONFUSION_FIGSIZE)
        ax = fig.add_subplot()
        ax.set_facecolor("0.75")  # shows through masked (non-finite) cells
        sns.heatmap(
            np.where(bad, 0.0, a),
            ax=ax,
            mask=bad,
            annot=t <= 12,
            fmt=".2f",
            annot_kws={"fontsize": 9 if t <= 8 else 7},
            cmap="viridis",
            vmin=vmin,
            vmax=vmax,
            square=True,
            xticklabels=ticks,
            yticklabels=ticks,
            cbar_kws={"label": "attention weight", "shrink": 0.8},
        )
        ax.grid(False)
        ax.tick_params(axis="both", rotation=0)
        ax.set_xlabel("attended frame (1-based)")
        ax.set_ylabel("query frame t (1-based)")
        ax.set_title(f"{title}\n{subtitle}", fontsize=11)
        return _save(fig, path)


# --------------------------------------------------------------------------- early decision


def _check_decisions(
    decision_frames: object,
    frames: object,
    threshold: object,
    compute_savings_pct: object,
) -> tuple[np.ndarray, int]:
    if not _is_number(frames) or not float(frames).is_integer() or frames < 1:
        raise MLError(f"frames must be a positive integer (frames per clip), got {frames!r}")
    frames = int(frames)
    if isinstance(decision_frames, str) or not isinstance(decision_frames, Sequence | np.ndarray):
        raise MLError("decision_frames must be a list of 1-based frame numbers, one per clip")
    if len(decision_frames) == 0:
        raise MLError("decision_frames is empty: no clips to plot")
    for i, f in enumerate(decision_frames):
        if not _is_number(f) or not float(f).is_integer() or not 1 <= f <= frames:
            raise MLError(
                f"decision_frames[{i}] is {f!r}: must be a 1-based frame number in 1..{frames}"
            )
    if threshold is not None and (not _is_number(threshold) or not math.isfinite(threshold)):
        raise MLError(f"threshold must be a finite number, got {threshold!r}")
    if compute_savings_pct is not None and (
        not _is_number(compute_savings_pct) or not math.isfinite(compute_savings_pct)
    ):
        raise MLError(f"compute_savings_pct must be a finite number, got {compute_savings_pct!r}")
    return np.asarray(decision_frames, dtype=int), frames


def early_decision_plot(
    *,
    decision_frames: list[int],
    frames: int,
    path: Path,
    threshold: float | None = None,
    compute_savings_pct: float | None = None,
) -> Path:
    """Two panels for early decisions of a causal classifier: a histogram of the (1-based)
    frame at which each clip was decided, and the cumulative share of clips decided by frame
    t against the full clip, with the mean decision frame marked. The compute saving shown is
    ``compute_savings_pct`` when given, else 1 - mean/frames computed from the data (both are
    shown when they disagree by more than 0.5 points)."""
    path = _check_path(path)
    d, frames = _check_decisions(decision_frames, frames, threshold, compute_savings_pct)
    mean = float(d.mean())
    counts = np.bincount(d, minlength=frames + 1)[1:]
    with _style():
        fig = _new_figure(FIGSIZE)
        ax1, ax2 = fig.subplots(1, 2)
        _decision_histogram(
            ax1, counts, mean=mean, frames=frames, early=float((d < frames).mean()) * 100
        )
        _compute_used(ax2, counts, mean=mean, frames=frames, reported=compute_savings_pct)
        head = f"Early decision: {len(d)} clips, {frames} frames each"
        if threshold is not None:
            head += f", confidence threshold {_fmt(float(threshold))}"
        fig.suptitle(head)
        return _save(fig, path)


def _decision_histogram(ax, counts: np.ndarray, *, mean: float, frames: int, early: float) -> None:
    """Clips per decision frame, with the mean decision frame marked."""
    ax.bar(np.arange(1, frames + 1), counts, width=0.85, color="C0", label="clips")
    ax.axvline(mean, color=_BAD_COLOR, linestyle="--", linewidth=1.5)
    ax.annotate(
        f"mean {mean:.2f}",
        xy=(mean, 1.0),
        xycoords=("data", "axes fraction"),
        xytext=(4 if mean < (frames + 1) / 2 else -4, -4),
        textcoords="offset points",
        ha="left" if mean < (frames + 1) / 2 else "right",
        va="top",
        fontsize=9,
        color=_BAD_COLOR,
    )
    ax.set_xlim(0.4, frames + 0.6)
    ax.set_ylim(0, counts.max() * 1.12)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(frames, 12)))
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel(f"decision frame (1-based, of {frames})")
    ax.set_ylabel("clips")
    ax.set_title(f"When clips are decided ({early:.1f}% before the last frame)")


def _compute_used(
    ax, counts: np.ndarray, *, mean: float, frames: int, reported: float | None
) -> None:
    """The cumulative share of clips decided by frame t, and the compute saved."""
    computed = 100.0 * (1.0 - mean / frames)
    savings = computed if reported is None else float(reported)
    x = np.concatenate([[0], np.arange(1, frames + 1)])
    cum = np.concatenate([[0.0], 100.0 * np.cumsum(counts) / counts.sum()])
    ax.step(x, cum, where="post", color="C0", linewidth=2, label="clips decided by frame t")
    ax.fill_between(x, cum, step="post", color="C0", alpha=0.12)
    ax.axvline(frames, color="0.35", linestyle=":", linewidth=1.5, label="full clip (100%)")
    ax.axvline(
        mean,
        color=_BAD_COLOR,
        linestyle="--",
        linewidth=1.5,
        label=f"mean decision frame {mean:.2f}",
    )
    ax.set_xlim(0, frames + 0.5)
    ax.set_ylim(0, 105)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(frames, 12)))
    ax.yaxis.set_major_formatter(PercentFormatter(xmax=100, decimals=0))
    ax.set_xlabel("frame t (1-based)")
    ax.set_ylabel("clips decided by frame t (%)")
    source = "" if reported is None else " (reported)"
    text = f"frames read: {100.0 - savings:.1f}% of full\ncompute saved: {savings:.1f}%{source}"
    if reported is not None and abs(computed - savings) > 0.5:
        text += f"\n(from decision frames: {computed:.1f}%)"
    ax.text(
        0.03,
        0.97,
        text,
        transform=ax.transAxes,
        ha="left",
        va="top",
        fontsize=9,
        bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.6"},
    )
    ax.legend(loc="lower right", fontsize=8)
    ax.set_title("Compute used vs full clip")
