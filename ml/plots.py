"""Plots of training runs and metric CSVs, written as PNG files.

One function per plot. Every function takes keyword-only arguments, validates them (raising
``MLError`` with a message that says what is wrong), renders onto a ``matplotlib.figure.Figure``
that is never registered with pyplot, writes the PNG atomically and returns the path written.

Non-finite values never crash a plot: the finite part is drawn and the place where a series
stopped being finite is marked with a red vertical line ("val loss NaN from epoch 5").

- In per-epoch histories (``training_results.json``), ``None`` stands for a non-finite value
  (the results file writes NaN/inf as ``null``), so it is drawn and marked as NaN.
- In metric CSV columns (merged on step), ``None`` means "not logged at this step" and is
  skipped; only real NaN/inf floats are marked.

This module is used by the laptop CLI: it imports no torch, ray, fabric or textual.
Styling is applied with ``matplotlib.rc_context`` under a module lock, so the global rcParams
are unchanged afterwards and concurrent calls from threads do not mix styles.
"""

from __future__ import annotations

import io
import math
import numbers
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib as mpl
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter

from .atomic import write_bytes_atomic
from .errors import MLError

__all__ = [
    "CONFUSION_FIGSIZE",
    "CORRELATION_FIGSIZE",
    "CSV_FIGSIZE",
    "DPI",
    "FIGSIZE",
    "MAX_CSV_PANELS",
    "attention_heatmap",
    "confusion_matrix_plot",
    "correlation_heatmap",
    "csv_overview",
    "csv_trends",
    "early_decision_plot",
    "metrics_summary",
    "training_curves",
]

DPI = 110
FIGSIZE = (10.0, 6.0)  # training_curves, metrics_summary, early_decision_plot
CONFUSION_FIGSIZE = (8.0, 6.5)  # confusion_matrix_plot, attention_heatmap
CSV_FIGSIZE = (13.0, 8.0)  # csv_overview, csv_trends
CORRELATION_FIGSIZE = (10.0, 8.0)
MAX_CSV_PANELS = 12

_TRAIN_COLOR = "C0"
_VAL_COLOR = "C1"
_BEST_COLOR = "tab:green"
_TARGET_COLOR = "tab:purple"
_BAD_COLOR = "tab:red"
# Panel colours of the CSV grids: tab10 without its red, which marks non-finite values.
_PANEL_COLORS = tuple(f"C{i}" for i in range(10) if i != 3)

# Metrics of training histories, in panel order: (key, axis label, shown as percent).
_HISTORY_METRICS: tuple[tuple[str, str, bool], ...] = (
    ("loss", "loss (lower is better)", False),
    ("accuracy", "accuracy (%)", True),
    ("f1", "macro F1 (%)", True),
    ("mse", "MSE (target units²)", False),
    ("mae", "MAE (target units)", False),
)
_LOWER_IS_BETTER = ("loss", "mse", "mae", "rmse", "error", "latency", "_ms", "seconds", "time")

_RENDER_LOCK = threading.RLock()


# --------------------------------------------------------------------------- helpers


@contextmanager
def _style() -> Iterator[None]:
    """Seaborn's whitegrid theme for the duration of one plot; rcParams restored afterwards."""
    rc = {
        **sns.axes_style("whitegrid"),
        **sns.plotting_context("notebook", font_scale=0.85),
        "font.sans-serif": ["DejaVu Sans", "Liberation Sans", "Arial", "sans-serif"],
        "axes.titleweight": "bold",
        "figure.titlesize": 14,
        "figure.titleweight": "bold",
    }
    with _RENDER_LOCK, mpl.rc_context(rc):
        yield


def _new_figure(figsize: tuple[float, float]) -> Figure:
    return Figure(figsize=figsize, dpi=DPI, layout="constrained")


def _save(fig: Figure, path: Path) -> Path:
    """Render ``fig`` to PNG bytes, write them atomically to ``path``, release the figure."""
    try:
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=DPI)
    finally:
        fig.clear()
    write_bytes_atomic(path, buf.getvalue())
    return path


def _check_path(path: Path | str) -> Path:
    if not isinstance(path, str | Path):
        raise MLError(f"path must be a pathlib.Path or str, got {type(path).__name__}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise MLError(f"plots are written as PNG: path must end in .png, got {str(path)!r}")
    return path


def _is_number(v: object) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _series(values: object, what: str, *, allow_none: bool = True) -> tuple[np.ndarray, list]:
    """A list of numbers (or None) as a float array with NaN for None; also the raw list."""
    if isinstance(values, str | bytes) or not isinstance(values, Sequence | np.ndarray):
        raise MLError(f"{what} must be a list of numbers, got {type(values).__name__}")
    raw = list(values)
    for i, v in enumerate(raw):
        if v is None and allow_none:
            continue
        if not _is_number(v):
            raise MLError(f"{what}[{i}] is {v!r}, not a number")
    arr = np.array([np.nan if v is None else float(v) for v in raw], dtype=float)
    return arr, raw


def _fmt(v: float) -> str:
    if not math.isfinite(v):
        return "NaN" if math.isnan(v) else ("inf" if v > 0 else "-inf")
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e5:
        return f"{v:.4g}" if abs(v) >= 1 else f"{v:.3f}"
    return f"{v:.3g}"


def _short(name: str, limit: int = 34) -> str:
    return name if len(name) <= limit else name[: limit - 1] + "…"


def _bad_label(raw: Sequence, bad: np.ndarray, x: np.ndarray, unit: str) -> tuple[list[float], str]:
    """Where a series is not finite: (x of the bad values to draw, 'NaN from epoch 5').

    ``bad`` marks non-finite values; ``None`` entries of ``raw`` that are not ``bad`` are
    values that were not logged (metric CSVs) and do not interrupt "from".
    """
    idx = np.flatnonzero(bad)
    i = int(idx[0])
    infs = [_is_number(raw[j]) and math.isinf(float(raw[j])) for j in idx]
    kind = "inf" if all(infs) else "NaN" if not any(infs) else "NaN/inf"
    logged = np.array([v is not None for v in raw], dtype=bool) | bad
    xs = [float(v) for v in x[idx]]
    if bad[i:][logged[i:]].all():
        return xs[:1], f"{kind} from {unit} {_fmt(xs[0])}"
    if len(xs) <= 3:
        return xs, f"{kind} at {unit} " + ", ".join(_fmt(v) for v in xs)
    return xs[:1], f"{kind} at {len(xs)} {unit}s, first {_fmt(xs[0])}"


def _mark_nonfinite(
    ax, x: np.ndarray, series: list[tuple[str, Sequence, np.ndarray]], unit: str
) -> bool:
    """Red vertical lines where each (label, raw values, bad mask) is non-finite, labelled for
    the legend ("val loss NaN from epoch 5"). Returns whether anything was marked.

    The note goes in the legend rather than on the axes so that it never hides data.
    """
    marks: dict[tuple[float, ...], list[str]] = {}
    for label, raw, bad in series:
        if bad.any():
            where, text = _bad_label(raw, bad, x, unit)
            marks.setdefault(tuple(where), []).append(f"{label} {text}" if label else text)
    for where, texts in sorted(marks.items()):
        for n, w in enumerate(where):
            ax.axvline(
                w,
                color=_BAD_COLOR,
                linestyle="-",
                linewidth=1.8,
                zorder=1,
                label="\n".join(texts) if n == 0 else None,
            )
    return bool(marks)


def _no_data(ax, text: str = "no finite values") -> None:
    ax.text(
        0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", color="0.4", fontsize=10
    )


def _lower_is_better(name: str) -> bool:
    low = name.lower()
    return any(word in low for word in _LOWER_IS_BETTER)


def _grid(n: int) -> tuple[int, int]:
    cols = 1 if n == 1 else 2 if n <= 4 else 3 if n <= 9 else 4
    return math.ceil(n / cols), cols


# --------------------------------------------------------------------------- training curves


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
    train_s, n = _check_history(train, "train history", None)
    if not n:
        raise MLError("training history is empty: no epochs to plot (train has no values)")
    val_s: dict[str, tuple[np.ndarray, list]] = {}
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

    epochs = np.arange(1, n + 1)
    gap = "loss" in train_s and "loss" in val_s
    n_panels = len(panels) + int(gap)
    rows, cols = (1, n_panels) if n_panels <= 2 else (2, 2) if n_panels <= 4 else (2, 3)
    marker = "o" if n <= 40 else None

    with _style():
        fig = _new_figure(FIGSIZE)
        axes = fig.subplots(rows, cols, squeeze=False).ravel()
        for ax in axes[n_panels:]:
            ax.set_visible(False)
        for ax, (metric, ylabel, percent) in zip(axes, panels, strict=False):
            lines = [
                ("train", train_s.get(metric), _TRAIN_COLOR),
                ("val", val_s.get(metric), _VAL_COLOR),
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
                metric in ("loss", "mse", "mae")
                and finite.min() > 0
                and finite.max() / finite.min() > 1e3
            ):
                ax.set_yscale("log")
                ylabel += ", log scale"
            ax.set_ylabel(ylabel)
            if percent:
                ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0, decimals=0))
            for label, value in target_lines.get(metric, []):
                ax.axhline(value, color=_TARGET_COLOR, linestyle=":", linewidth=1.8, label=label)
            _mark_nonfinite(ax, epochs, plotted, "epoch")
        if gap:
            ax = axes[len(panels)]
            diff = val_s["loss"][0] - train_s["loss"][0]
            ax.axhline(0.0, color="0.5", linewidth=1)
            ax.plot(
                epochs, diff, color="tab:brown", marker=marker, markersize=3, label="val − train"
            )
            ax.fill_between(
                epochs, 0, diff, where=np.isfinite(diff) & (diff > 0), color="tab:brown", alpha=0.12
            )
            ax.set_title("Generalization gap")
            ax.set_ylabel("val loss − train loss")
            if not np.isfinite(diff).any():
                _no_data(ax)
            _mark_nonfinite(ax, epochs, [("gap", list(diff), ~np.isfinite(diff))], "epoch")
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
            ax.set_xlim(0.5, n + 0.5)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=10))
            ax.legend(loc="best", fontsize=8, framealpha=0.85)
        fig.suptitle(title)
        if unplaced:
            # Keep a strip at the bottom free for the note (constrained layout ignores fig.text).
            fig.get_layout_engine().set(rect=(0, 0.035, 1, 0.965))
            fig.text(
                0.5,
                0.0,
                "targets without a panel (metric not in history): " + ", ".join(unplaced),
                ha="center",
                va="bottom",
                fontsize=8,
                color="0.35",
            )
        return _save(fig, path)


# --------------------------------------------------------------------------- metrics summary


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
    if not isinstance(metrics, Mapping) or not metrics:
        raise MLError("metrics is empty: nothing to plot (expected a dict of name -> number)")
    names = list(metrics)
    values = []
    for name in names:
        v = metrics[name]
        if v is not None and not _is_number(v):
            raise MLError(f"metrics[{name!r}] is {v!r}, not a number")
        values.append(math.nan if v is None else float(v))
    targets = dict(targets or {})
    for key, t in targets.items():
        if key not in metrics:
            raise MLError(
                f"targets[{key!r}] names no metric; metrics are: {', '.join(map(str, names))}"
            )
        if not _is_number(t) or not math.isfinite(float(t)):
            raise MLError(f"targets[{key!r}] must be a finite number, got {t!r}")

    arr = np.array(values)
    finite = arr[np.isfinite(arr)]
    extent = [0.0, *finite.tolist(), *(float(t) for t in targets.values())]
    lo, hi = min(extent), max(extent)
    span = (hi - lo) or 1.0
    y = np.arange(len(names))
    with _style():
        fig = _new_figure(FIGSIZE)
        ax = fig.add_subplot()
        colors = []
        for name, v in zip(names, values, strict=True):
            t = targets.get(name)
            if t is None or not math.isfinite(v):
                colors.append("C0")
            else:
                ok = v <= t if _lower_is_better(name) else v >= t
                colors.append("tab:green" if ok else "tab:red")
        bars = ax.barh(y, np.where(np.isfinite(arr), arr, 0.0), color=colors, height=0.6)
        for i, (name, v) in enumerate(zip(names, values, strict=True)):
            if not math.isfinite(v):
                bars[i].set_visible(False)
            label = _fmt(v)
            t = targets.get(name)
            if t is not None:
                ax.plot(
                    [t, t],
                    [i - 0.42, i + 0.42],
                    color="black",
                    linewidth=2.5,
                    solid_capstyle="butt",
                )
                sign = "≤" if _lower_is_better(name) else "≥"
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
        ax.set_yticks(y, [_short(n, 30) for n in names])
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


# --------------------------------------------------------------------------- confusion matrix


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
    d = np.asarray(decision_frames, dtype=int)
    n = len(d)
    mean = float(d.mean())
    computed = 100.0 * (1.0 - mean / frames)
    savings = computed if compute_savings_pct is None else float(compute_savings_pct)
    early = float((d < frames).mean()) * 100
    counts = np.bincount(d, minlength=frames + 1)[1:]
    frame_ix = np.arange(1, frames + 1)
    cum = 100.0 * np.cumsum(counts) / n

    with _style():
        fig = _new_figure(FIGSIZE)
        ax1, ax2 = fig.subplots(1, 2)
        ax1.bar(frame_ix, counts, width=0.85, color="C0", label="clips")
        ax1.axvline(mean, color=_BAD_COLOR, linestyle="--", linewidth=1.5)
        ax1.annotate(
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
        ax1.set_xlim(0.4, frames + 0.6)
        ax1.set_ylim(0, counts.max() * 1.12)
        ax1.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(frames, 12)))
        ax1.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax1.set_xlabel(f"decision frame (1-based, of {frames})")
        ax1.set_ylabel("clips")
        ax1.set_title(f"When clips are decided ({early:.1f}% before the last frame)")

        ax2.step(
            np.concatenate([[0], frame_ix]),
            np.concatenate([[0.0], cum]),
            where="post",
            color="C0",
            linewidth=2,
            label="clips decided by frame t",
        )
        ax2.fill_between(
            np.concatenate([[0], frame_ix]),
            np.concatenate([[0.0], cum]),
            step="post",
            color="C0",
            alpha=0.12,
        )
        ax2.axvline(frames, color="0.35", linestyle=":", linewidth=1.5, label="full clip (100%)")
        ax2.axvline(
            mean,
            color=_BAD_COLOR,
            linestyle="--",
            linewidth=1.5,
            label=f"mean decision frame {mean:.2f}",
        )
        ax2.set_xlim(0, frames + 0.5)
        ax2.set_ylim(0, 105)
        ax2.xaxis.set_major_locator(MaxNLocator(integer=True, nbins=min(frames, 12)))
        ax2.yaxis.set_major_formatter(PercentFormatter(xmax=100, decimals=0))
        ax2.set_xlabel("frame t (1-based)")
        ax2.set_ylabel("clips decided by frame t (%)")
        used = 100.0 - savings
        source = "" if compute_savings_pct is None else " (reported)"
        text = f"frames read: {used:.1f}% of full\ncompute saved: {savings:.1f}%{source}"
        if compute_savings_pct is not None and abs(computed - savings) > 0.5:
            text += f"\n(from decision frames: {computed:.1f}%)"
        ax2.text(
            0.03,
            0.97,
            text,
            transform=ax2.transAxes,
            ha="left",
            va="top",
            fontsize=9,
            bbox={"boxstyle": "round,pad=0.3", "fc": "white", "ec": "0.6"},
        )
        ax2.legend(loc="lower right", fontsize=8)
        ax2.set_title("Compute used vs full clip")
        head = f"Early decision: {n} clips, {frames} frames each"
        if threshold is not None:
            head += f", confidence threshold {_fmt(float(threshold))}"
        fig.suptitle(head)
        return _save(fig, path)


# --------------------------------------------------------------------------- metric CSVs


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
                slope, icpt = np.polyfit(xs, ys, 1)
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


def _pearson(a: np.ndarray, b: np.ndarray) -> tuple[float, int]:
    ok = np.isfinite(a) & np.isfinite(b)
    n = int(ok.sum())
    if n < 3:
        return math.nan, n
    x, y = a[ok] - a[ok].mean(), b[ok] - b[ok].mean()
    den = math.sqrt(float((x * x).sum()) * float((y * y).sum()))
    if den == 0:
        return math.nan, n
    return float(np.clip((x * y).sum() / den, -1.0, 1.0)), n


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
            r[i, j], shared[i, j] = _pearson(cols[names[i]][0], cols[names[j]][0])
            r[j, i], shared[j, i] = r[i, j], shared[i, j]
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
        return _save(fig, path)
