"""Weights & Biases CSV exports: read them, merge them on step, and summarise them with numbers.

Two layouts, told apart by the header:

* **chart export** (the "Download CSV" of a W&B chart): a ``Step`` column, then for every run and
  metric ``<run> - <metric>`` plus ``<run> - <metric>__MIN`` and ``<run> - <metric>__MAX`` (the
  min/max over the chart's sampling bucket). The __MIN/__MAX columns become the metric's *band*,
  never metrics of their own.
* **run-history export** (``run.history()`` / the run's "Export as CSV"): ``_step`` and one column
  per metric (``epoch`` and ``lr`` included). Columns whose name starts with ``_`` (``_runtime``,
  ``_timestamp``, ``_wandb`` ...) are W&B's own, not metrics (in a chart export too:
  ``<run> - _step``); ``_runtime`` is kept as elapsed seconds (``MetricsTable.elapsed``).

Splitting a chart column name: the run and the metric are split on the **last** ``' - '``, so a run
name may contain ``' - '`` (``"baseline - lr 3e-4 - val/top 1 acc"`` is run
``"baseline - lr 3e-4"``, metric ``"val/top 1 acc"``) and a metric name may contain ``/`` and
spaces but not ``' - '``. A column with no ``' - '`` is a metric without a run.

Naming metrics when files are merged: history columns keep their name; chart metrics are named
``<run>/<metric>`` when more than one run appears across all the inputs, else ``<metric>``. When the
same name comes from more than one file, every one of them is renamed ``<name>@<file stem>`` and
the renaming is recorded in ``MetricsTable.notes`` (nothing is overwritten); any clash left after
that gets ``#2``, ``#3``, ...

Cells: empty means missing (``None``); ``NaN``/``nan``/``inf``/``-inf``/``Infinity`` parse as the
non-finite float (a NaN loss is a divergence signal, so it is kept apart from missing). Any other
text that is not a number is an error naming the file, the line (1-based, the header is line 1)
and the column. A step that appears twice in one file: the later row wins column by column (an
empty cell does not erase an earlier value) and the repeats are counted in
``MetricsTable.duplicate_steps``.

Standard library ``csv``, numpy, and ``scipy.stats`` for correlations and slopes (through
``tether.ml.stats``, imported on first use): the laptop CLI imports this without torch.

One module per concern: ``reading`` (the two layouts, merging, names), ``statistics``
(per-metric statistics, correlations), ``lrschedule`` (learning-rate schedules), ``text``
(``format_summary``) and ``records`` (the records and their JSON).
"""

from .lrschedule import classify_lr_schedule, lr_columns
from .reading import load_wandb_csvs, read_wandb_csv, split_chart_column
from .records import (
    BAND_SUFFIXES,
    CHART_STEP,
    CONSTANT_LR,
    FIT_R2,
    FLAT_TREND,
    HISTORY_STEP,
    RUN_SEPARATOR,
    RUNTIME,
    SAME_GAMMA,
    SAME_LR,
    CSVSummary,
    LRSchedule,
    MetricsCSVError,
    MetricsTable,
    MetricStats,
)
from .statistics import metric_stats, summarize
from .text import format_summary

__all__ = [
    "BAND_SUFFIXES",
    "CHART_STEP",
    "CONSTANT_LR",
    "FIT_R2",
    "FLAT_TREND",
    "HISTORY_STEP",
    "RUNTIME",
    "RUN_SEPARATOR",
    "SAME_GAMMA",
    "SAME_LR",
    "CSVSummary",
    "LRSchedule",
    "MetricStats",
    "MetricsCSVError",
    "MetricsTable",
    "classify_lr_schedule",
    "format_summary",
    "load_wandb_csvs",
    "lr_columns",
    "metric_stats",
    "read_wandb_csv",
    "split_chart_column",
    "summarize",
]
