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

This package is used by the laptop CLI: it imports no torch, ray, fabric or textual.
Styling is applied with ``matplotlib.rc_context`` under a module lock, so the global rcParams
are unchanged afterwards and concurrent calls from threads do not mix styles.

One module per concern: ``drawing`` (sizes, colours, style, validation, the atomic save, the
non-finite marks), ``curves`` (a run's training curves and test metrics), ``evaluation``
(confusion matrix, attention, early decisions) and ``csvplots`` (metric CSVs).
"""

from .csvplots import (
    correlation_figure,
    correlation_heatmap,
    correlation_matrix,
    csv_overview,
    csv_trends,
)
from .curves import metrics_summary, training_curves
from .drawing import (
    CONFUSION_FIGSIZE,
    CORRELATION_FIGSIZE,
    CSV_FIGSIZE,
    DPI,
    FIGSIZE,
    MAX_CSV_PANELS,
)
from .evaluation import attention_heatmap, confusion_matrix_plot, early_decision_plot

__all__ = [
    "CONFUSION_FIGSIZE",
    "CORRELATION_FIGSIZE",
    "CSV_FIGSIZE",
    "DPI",
    "FIGSIZE",
    "MAX_CSV_PANELS",
    "attention_heatmap",
    "confusion_matrix_plot",
    "correlation_figure",
    "correlation_heatmap",
    "correlation_matrix",
    "csv_overview",
    "csv_trends",
    "early_decision_plot",
    "metrics_summary",
    "training_curves",
]
