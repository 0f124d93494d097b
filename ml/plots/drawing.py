"""What every plot shares: sizes, colours, the style, validation of inputs, the atomic save,
and the red marks of non-finite values.

Styling is applied with ``matplotlib.rc_context`` under a module lock, so the global rcParams
are unchanged afterwards and concurrent calls from threads do not mix styles. Figures are
``matplotlib.figure.Figure`` objects never registered with pyplot.
"""

from __future__ import annotations

import io
import math
import numbers
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import matplotlib as mpl
import numpy as np
import seaborn as sns
from matplotlib.figure import Figure

from ..atomic import write_bytes_atomic
from ..errors import MLError
from ..numfmt import label as _fmt

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


def _grid(n: int) -> tuple[int, int]:
    cols = 1 if n == 1 else 2 if n <= 4 else 3 if n <= 9 else 4
    return math.ceil(n / cols), cols
