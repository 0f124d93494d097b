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

Standard library ``csv`` and numpy only: the laptop CLI imports this without torch.
"""

from __future__ import annotations

import csv
import itertools
import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import MLError

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


# --------------------------------------------------------------------------- records


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


# --------------------------------------------------------------------------- reading


@dataclass
class _FileData:
    """One parsed file before merging; series keys are (run or None, metric)."""

    path: str
    stem: str
    layout: str
    steps: set[float] = field(default_factory=set)
    series: dict[tuple[str | None, str], dict[float, Value]] = field(default_factory=dict)
    bands: dict[tuple[str | None, str], tuple[dict[float, Value], dict[float, Value]]] = field(
        default_factory=dict
    )
    elapsed: dict[float, Value] | None = None
    duplicates: int = 0
    notes: list[str] = field(default_factory=list)


def read_wandb_csv(*, path: Path) -> MetricsTable:
    """One W&B CSV export (chart or run-history layout) as a ``MetricsTable``."""
    return load_wandb_csvs(paths=[path])


def load_wandb_csvs(*, paths: Sequence[Path]) -> MetricsTable:
    """Several W&B CSV exports merged on step (the union of their steps, ``None`` where a file
    has no value). Naming rules: see the module docstring."""
    if isinstance(paths, str | Path):
        raise MetricsCSVError("paths must be a sequence of paths, not one path")
    if not paths:
        raise MetricsCSVError("no CSV files given")
    seen: dict[Path, str] = {}
    for p in paths:
        key = Path(p).resolve()
        if key in seen:
            raise MetricsCSVError(f"{p}: given twice (also as {seen[key]})")
        seen[key] = str(p)
    files = [_read_file(Path(p)) for p in paths]

    all_runs = {run for f in files for (run, _) in f.series if run is not None}
    multi_run = len(all_runs) > 1

    entries: list[tuple[_FileData, tuple[str | None, str], str]] = []
    for f in files:
        for key in f.series:
            run, metric = key
            name = f"{run}/{metric}" if (run is not None and multi_run) else metric
            entries.append((f, key, name))
    names, notes = _unique_names(entries)

    steps = sorted(set().union(*(f.steps for f in files)))
    columns: dict[str, Series] = {}
    bands: dict[str, tuple[Series, Series]] = {}
    sources: dict[str, str] = {}
    runs: dict[str, str] = {}
    for (f, key, _), name in zip(entries, names, strict=True):
        columns[name] = [f.series[key].get(s) for s in steps]
        sources[name] = f.path
        if key[0] is not None:
            runs[name] = key[0]
        if key in f.bands:
            lo, hi = f.bands[key]
            bands[name] = ([lo.get(s) for s in steps], [hi.get(s) for s in steps])
    elapsed = {f.path: [f.elapsed.get(s) for s in steps] for f in files if f.elapsed is not None}
    for f in files:
        notes.extend(f.notes)
        if f.duplicates:
            notes.append(
                f"{f.path}: {f.duplicates} row(s) repeat an earlier step; the later value was kept"
            )
    return MetricsTable(
        steps=steps,
        columns=columns,
        bands=bands,
        sources=sources,
        layout={f.path: f.layout for f in files},
        runs=runs,
        elapsed=elapsed,
        duplicate_steps={f.path: f.duplicates for f in files},
        notes=notes,
    )


def split_chart_column(*, name: str) -> tuple[str | None, str, str | None]:
    """``(run, metric, band)`` of a chart-export column: band is "min", "max" or None; run and
    metric are split on the last ``' - '`` (run None when there is none)."""
    band = None
    for suffix in BAND_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            band = "min" if suffix == "__MIN" else "max"
            name = name[: -len(suffix)]
            break
    run, sep, metric = name.rpartition(RUN_SEPARATOR)
    if not sep or not metric or not run:
        return None, name, band
    return run, metric, band


def _read_file(path: Path) -> _FileData:
    where = str(path)
    try:
        with path.open(newline="", encoding="utf-8-sig") as fh:
            rows = [(n, row) for n, row in _numbered_rows(csv.reader(fh))]
    except FileNotFoundError:
        raise MetricsCSVError(f"{where}: no such file") from None
    except UnicodeDecodeError as exc:
        raise MetricsCSVError(
            f"{where}: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from None
    except csv.Error as exc:
        raise MetricsCSVError(f"{where}: not valid CSV: {exc}") from None
    except OSError as exc:
        raise MetricsCSVError(f"{where}: cannot read: {exc.strerror or exc}") from None
    if not rows:
        raise MetricsCSVError(f"{where}: empty file: no header line")
    header_line, raw_header = rows[0]
    header = [h.strip() for h in raw_header]
    if CHART_STEP in header:
        layout, step_col = "chart", CHART_STEP
    elif HISTORY_STEP in header:
        layout, step_col = "history", HISTORY_STEP
    else:
        found = ", ".join(repr(h) for h in header[:20])
        if len(header) > 20:
            found += f", ... ({len(header) - 20} more)"
        raise MetricsCSVError(
            f"{where}: no step column: expected {CHART_STEP!r} (W&B chart export) or "
            f"{HISTORY_STEP!r} (W&B run-history export); found columns: {found}"
        )
    data = _FileData(path=where, stem=path.stem, layout=layout)
    seen: set[str] = set()
    for h in header:
        if h and h in seen:
            raise MetricsCSVError(
                f"{where}:{header_line}: column {h!r} appears twice in the header"
            )
        seen.add(h)

    # column index -> the step -> value dict its cells go to; columns not listed are skipped
    targets: dict[int, dict[float, Value]] = {}
    step_index = header.index(step_col)
    for i, h in enumerate(header):
        if i == step_index:
            continue
        if not h:
            data.notes.append(f"{where}: column {i + 1} has no name and was ignored")
            continue
        if layout == "history":
            if h.startswith("_"):
                if h == RUNTIME:
                    data.elapsed = targets[i] = {}
                continue
            targets[i] = data.series.setdefault((None, h), {})
            continue
        run, metric, band = split_chart_column(name=h)
        if metric.startswith("_"):
            continue  # W&B's own keys (``<run> - _step`` ...) are not metrics in charts either
        key = (run, metric)
        if band is None:
            targets[i] = data.series.setdefault(key, {})
        else:
            lo_hi = data.bands.setdefault(key, ({}, {}))
            targets[i] = lo_hi[0 if band == "min" else 1]
    for key in data.bands:
        if key not in data.series:
            run, metric = key
            base = metric if run is None else f"{run}{RUN_SEPARATOR}{metric}"
            raise MetricsCSVError(
                f"{where}:{header_line}: column {base + '__MIN'!r} or {base + '__MAX'!r} "
                f"has no matching column {base!r}"
            )

    width = len(header)
    for line, row in rows[1:]:
        if len(row) != width:
            raise MetricsCSVError(
                f"{where}:{line}: expected {width} fields like the header, found {len(row)}"
            )
        step = _parse_cell(row[step_index], where=where, line=line, column=step_col)
        if step is None or not math.isfinite(step):
            what = "empty" if step is None else repr(row[step_index].strip())
            raise MetricsCSVError(
                f"{where}:{line}: column {step_col!r}: the step must be a finite number, got {what}"
            )
        if step in data.steps:
            data.duplicates += 1
        data.steps.add(step)
        for i, target in targets.items():
            value = _parse_cell(row[i], where=where, line=line, column=header[i])
            if value is not None or step not in target:
                target[step] = value
    return data


def _numbered_rows(reader: Iterable[list[str]]) -> Iterable[tuple[int, list[str]]]:
    """Non-blank rows with the physical line each one ends on (1-based, header = 1)."""
    for row in reader:
        if not row or (len(row) == 1 and not row[0].strip()):
            continue
        yield reader.line_num, row  # type: ignore[attr-defined]


def _parse_cell(text: str, *, where: str, line: int, column: str) -> Value:
    s = text.strip()
    if not s:
        return None
    try:
        if "_" in s:
            raise ValueError(s)
        return float(s)
    except ValueError:
        raise MetricsCSVError(f"{where}:{line}: column {column!r}: not a number: {s!r}") from None


def _unique_names(
    entries: list[tuple[_FileData, tuple[str | None, str], str]],
) -> tuple[list[str], list[str]]:
    """Final metric names: a name coming from several files gets ``@<file stem>`` on every one of
    them; whatever still clashes gets ``#2``, ``#3``, ..."""
    notes: list[str] = []
    by_name: dict[str, list[int]] = {}
    for i, (_, _, name) in enumerate(entries):
        by_name.setdefault(name, []).append(i)
    names = [name for (_, _, name) in entries]
    for name, idx in by_name.items():
        files = {entries[i][0].path for i in idx}
        if len(files) > 1:
            for i in idx:
                names[i] = f"{name}@{entries[i][0].stem}"
            where = ", ".join(f"{entries[i][0].path} -> {names[i]!r}" for i in idx)
            notes.append(f"metric {name!r} is in {len(files)} files; renamed: {where}")
    taken: set[str] = set()
    for i, name in enumerate(names):
        if name in taken:
            k = 2
            while f"{name}#{k}" in taken or f"{name}#{k}" in names:
                k += 1
            notes.append(f"metric {name!r} appears again in {entries[i][0].path}; named {name}#{k}")
            names[i] = f"{name}#{k}"
        taken.add(names[i])
    return names, notes


# --------------------------------------------------------------------------- statistics


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
        slope = _slope(x, y)
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


def _slope(x: np.ndarray, y: np.ndarray) -> float:
    dx = x - x.mean()
    return float(np.sum(dx * (y - y.mean())) / np.sum(dx * dx))


def _correlations(
    table: MetricsTable,
) -> tuple[dict[str, dict[str, float]], dict[str, dict[str, int]]]:
    names = list(table.columns)
    arrays = {
        k: np.array([np.nan if v is None else v for v in vals], dtype=float)
        for k, vals in table.columns.items()
    }
    finite = {k: np.isfinite(a) for k, a in arrays.items()}
    corr: dict[str, dict[str, float]] = {}
    counts: dict[str, dict[str, int]] = {}
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            mask = finite[a] & finite[b]
            n = int(mask.sum())
            if n < 3:
                continue
            xa, xb = arrays[a][mask], arrays[b][mask]
            da, db = xa - xa.mean(), xb - xb.mean()
            denom = math.sqrt(float(np.sum(da * da)) * float(np.sum(db * db)))
            if denom == 0.0:
                continue  # one of them is constant where both are finite: r is undefined
            r = max(-1.0, min(1.0, float(np.sum(da * db)) / denom))
            corr.setdefault(a, {})[b] = r
            corr.setdefault(b, {})[a] = r
            counts.setdefault(a, {})[b] = n
            counts.setdefault(b, {})[a] = n
    return corr, counts


# --------------------------------------------------------------------------- learning rate

_LR_EXACT = re.compile(r"^(lr|learning[ _-]?rate)$", re.IGNORECASE)
_LR_LOOSE = re.compile(r"^(lr|learning[ _-]?rate)[-_ ].*$", re.IGNORECASE)
_CLASH_SUFFIX = re.compile(r"(@[^/@]*)?(#\d+)?$")


def lr_columns(*, names: Iterable[str]) -> list[str]:
    """Columns that hold a learning rate, best first: the last ``/`` component (less any
    ``@<file stem>`` / ``#k`` suffix added on a name clash) is ``lr``, ``learning_rate``,
    ``learning-rate`` or ``learning rate`` (any case, after any prefix such as ``train/`` or
    ``<run>/``); then ones that start that way (``lr-AdamW``, ``lr_pg0``)."""

    def leaf(name: str) -> str:
        return _CLASH_SUFFIX.sub("", name).rsplit("/", 1)[-1].strip()

    names = list(names)
    exact = [n for n in names if _LR_EXACT.match(leaf(n))]
    loose = [n for n in names if n not in exact and _LR_LOOSE.match(leaf(n))]
    return exact + loose


def classify_lr_schedule(
    *, column: str, steps: Sequence[float], values: Sequence[Value]
) -> LRSchedule:
    """Classify a learning-rate series (finite values only) as constant, step, cosine, linear or
    unknown. A rise to the peak before the decay is reported as warmup (``warmup_steps``)."""
    pts = [(s, v) for s, v in zip(steps, values, strict=True) if v is not None and math.isfinite(v)]
    n = len(pts)
    if n < 3:
        return LRSchedule(
            column, "unknown", {"reason": f"{n} finite value(s), need 3", "points": n}, None
        )
    s = np.array([p[0] for p in pts], dtype=float)
    v = np.array([p[1] for p in pts], dtype=float)

    details: dict[str, Any] = {"points": n}
    peak = float(v.max())
    i_peak = int(np.argmax(v >= peak - SAME_LR * abs(peak)))
    if i_peak > 0 and peak - float(v[:i_peak].min()) > CONSTANT_LR * abs(peak):
        # rises by more than 1% of the peak before the schedule proper: warmup
        details.update(
            warmup_steps=float(s[i_peak] - s[0]), warmup_from=float(v[0]), warmup_to=peak
        )
        s, v = s[i_peak:], v[i_peak:]

    variation = _relative_variation(v)
    if variation < CONSTANT_LR:
        details.update(value=float(v.mean()), relative_variation=variation)
        return LRSchedule(column, "constant", details, None)
    if len(v) < 3:
        details.update(reason=f"{len(v)} value(s) after the warmup peak, need 3")
        return LRSchedule(column, "unknown", details, None)

    segments = _segments(v)
    drops = list(itertools.pairwise(segments))
    if len(segments) >= 2 and len(segments) <= len(v) / 2 and all(v[b] < v[a] for a, b in drops):
        starts = segments
        factors = [float(v[b] / v[a]) if v[a] != 0 else 0.0 for a, b in drops]
        med = float(np.median(factors))
        same_gamma = med > 0 and all(abs(f - med) <= SAME_GAMMA * med for f in factors)
        fitted = np.concatenate(
            [
                np.full(e - a, v[a:e].mean())
                for a, e in zip(starts, [*starts[1:], len(v)], strict=True)
            ]
        )
        step_r2 = _r2(v, fitted)
        if len(drops) > 3 and not same_gamma:
            # Many drops by varying factors: a smooth schedule updated once per epoch?
            kind, fit_details, r2 = _smooth_fit(s[starts], v[starts])
            if kind is not None:
                details.update(fit_details, quantized=True, updates=len(drops))
                return LRSchedule(column, kind, details, r2)
        details.update(
            drops=[
                {"step": float(s[b]), "from": float(v[a]), "to": float(v[b]), "factor": f}
                for (a, b), f in zip(drops, factors, strict=True)
            ],
            drop_steps=[float(s[b]) for _, b in drops],
            gamma=med if same_gamma else None,
            values=[float(v[a]) for a in starts],
        )
        return LRSchedule(column, "step", details, step_r2)

    kind, fit_details, r2 = _smooth_fit(s, v)
    details.update(fit_details)
    if kind is None:
        return LRSchedule(column, "unknown", details, r2)
    return LRSchedule(column, kind, details, r2)


def _relative_variation(v: np.ndarray) -> float:
    scale = float(np.max(np.abs(v)))
    return 0.0 if scale == 0 else float(np.ptp(v)) / scale


def _segments(v: np.ndarray) -> list[int]:
    """Start indices of runs of values equal (within SAME_LR) to the run's first value."""
    starts = [0]
    for i in range(1, len(v)):
        ref = v[starts[-1]]
        if abs(v[i] - ref) > SAME_LR * max(abs(ref), abs(v[i])):
            starts.append(i)
    return starts


def _r2(y: np.ndarray, fitted: np.ndarray) -> float:
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    ss_res = float(np.sum((y - fitted) ** 2))
    return 1.0 if ss_tot == 0 else 1.0 - ss_res / ss_tot


def _smooth_fit(s: np.ndarray, v: np.ndarray) -> tuple[str | None, dict[str, Any], float | None]:
    """Best of a cosine and a linear decay from the first point; (None, r2s, best r2) when
    neither explains FIT_R2 of the variance."""
    cos = _fit_cosine(s, v)
    lin = _fit_linear(s, v)
    fits = [f for f in (cos, lin) if f is not None]
    r2s = {
        "cosine_r2": cos[1] if cos else None,
        "linear_r2": lin[1] if lin else None,
    }
    if not fits:
        return None, r2s, None
    best = max(fits, key=lambda f: f[1])
    if best[1] <= FIT_R2:
        return None, r2s, best[1]
    kind = "cosine" if best is cos else "linear"
    return kind, {**best[2], **r2s}, best[1]


def _fit_linear(s: np.ndarray, v: np.ndarray) -> tuple[str, float, dict[str, Any]] | None:
    slope = _slope(s, v)
    if not slope < 0:
        return None
    intercept = float(v.mean() - slope * s.mean())
    r2 = _r2(v, intercept + slope * s)
    return (
        "linear",
        r2,
        {
            "start": intercept + slope * float(s[0]),
            "end": intercept + slope * float(s[-1]),
            "slope_per_step": slope,
            "start_step": float(s[0]),
            "zero_step": -intercept / slope,
        },
    )


def _fit_cosine(s: np.ndarray, v: np.ndarray) -> tuple[str, float, dict[str, Any]] | None:
    """lr(s) = min + (max - min) / 2 * (1 + cos(pi * (s - s0) / S)), s0 = first step; S by a
    log grid over 0.5x..20x the observed span, refined twice; min and max by least squares."""
    s0 = float(s[0])
    span = float(s[-1] - s0)
    if span <= 0:
        return None
    t = s - s0

    def solve(period: float) -> tuple[float, float, float]:
        x = (1.0 + np.cos(np.pi * t / period)) / 2.0
        dx = x - x.mean()
        sxx = float(np.sum(dx * dx))
        if sxx == 0:
            return -math.inf, 0.0, float(v.mean())
        b = float(np.sum(dx * (v - v.mean())) / sxx)
        a = float(v.mean() - b * x.mean())
        return _r2(v, a + b * x), a, b

    grid = np.unique(np.concatenate([np.geomspace(0.5 * span, 20 * span, 300), [span]]))
    best_r2, best_p = -math.inf, span
    for _ in range(3):
        for p in grid:
            r2, _, b = solve(float(p))
            if b > 0 and r2 > best_r2:
                best_r2, best_p = r2, float(p)
        k = int(np.searchsorted(grid, best_p))
        lo, hi = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
        grid = np.linspace(lo, hi, 101)
    if best_r2 == -math.inf:
        return None
    r2, a, b = solve(best_p)
    end = a + b * (1.0 + math.cos(math.pi * span / best_p)) / 2.0
    return (
        "cosine",
        r2,
        {
            "max": a + b,
            "min": a,
            "start_step": s0,
            "period_steps": best_p,
            "end": end,
        },
    )


# --------------------------------------------------------------------------- text


def format_summary(summary: CSVSummary, *, top_correlations: int = 5) -> str:
    """A short text block: one line per metric with its numbers, the lr schedule and the
    strongest correlations. Every statement carries its figure."""
    st = summary.steps
    lines: list[str] = []
    files = ", ".join(f"{p} ({k})" for p, k in summary.files.items())
    span = f" ({_fs(st['first'])}..{_fs(st['last'])})" if st["count"] else ""
    lines.append(f"{st['count']} steps{span}" + (f" from {files}" if files else ""))
    if summary.stats:
        lines.append(
            "first/last = mean of the first/last <w> finite values; trend = least-squares slope "
            f"per step, and slope x step span / (max - min), flat when |that| < {FLAT_TREND:g}"
        )
    width = max((len(n) for n in summary.stats), default=0)
    for name, s in summary.stats.items():
        counts = f"n={s.count}"
        if s.missing:
            counts += f" missing={s.missing}"
        if s.non_finite:
            counts += f" non-finite={s.non_finite} (first at step {_fs(s.first_non_finite_step)})"
        if not s.count:
            lines.append(f"  {name:<{width}}  {counts}")
            continue
        text = (
            f"  {name:<{width}}  mean {_f(s.mean)}  std {_f(s.std)}  CV {_f(s.cv)}  "
            f"first->last {_f(s.first)} -> {_f(s.last)} ({_pct(s.pct_change)}, w={s.window})"
        )
        if s.trend_slope is not None:
            text += (
                f"  trend {_f(s.trend_slope)}/step ({_f(s.relative_trend, 2)} x range: "
                f"{s.direction})"
            )
        lines.append(f"{text}  [{counts}]")
    lr = summary.lr_schedule
    if lr is None:
        lines.append("LR schedule: no lr column")
    else:
        others = lr.details.get("other_lr_columns")
        also = f" (not classified: {', '.join(others)})" if others else ""
        lines.append(f"LR schedule ({lr.column}): {_lr_text(lr)}{also}")
    pairs = sorted(
        {
            (a, b) if a < b else (b, a): r
            for a, row in summary.correlations.items()
            for b, r in row.items()
        }.items(),
        key=lambda kv: -abs(kv[1]),
    )[:top_correlations]
    if pairs:
        lines.append(f"Strongest correlations (Pearson r, top {len(pairs)} by |r|):")
        for (a, b), r in pairs:
            n = summary.correlation_counts[a][b]
            lines.append(f"  {a} ~ {b}: r = {r:+.3f} over {n} steps")
    else:
        lines.append("Correlations: no pair of metrics with >= 3 common finite steps")
    for note in summary.notes:
        lines.append(f"Note: {note}")
    return "\n".join(lines)


def _lr_text(lr: LRSchedule) -> str:
    d = lr.details
    warm = ""
    if "warmup_steps" in d:
        warm = (
            f", after a warmup of {_fs(d['warmup_steps'])} steps "
            f"from {_f(d['warmup_from'])} to {_f(d['warmup_to'])}"
        )
    if lr.kind == "constant":
        return (
            f"constant at {_f(d['value'])} (variation {d['relative_variation'] * 100:.2f}% "
            f"< {CONSTANT_LR * 100:g}%){warm}"
        )
    if lr.kind == "step":
        drops = "; ".join(
            f"step {_fs(x['step'])}: {_f(x['from'])} -> {_f(x['to'])} (x{x['factor']:.3g})"
            for x in d["drops"]
        )
        return f"step decay, {len(d['drops'])} drop(s): {drops} (R^2 {_f(lr.r2)}){warm}"
    if lr.kind == "cosine":
        text = (
            f"cosine from {_f(d['max'])} to {_f(d['min'])} over {_fs(d['period_steps'])} steps "
            f"from step {_fs(d['start_step'])} (R^2 {lr.r2:.4f} > {FIT_R2}; "
            f"linear R^2 {_f(d.get('linear_r2'))})"
        )
    elif lr.kind == "linear":
        text = (
            f"linear decay from {_f(d['start'])} to {_f(d['end'])}, {_f(d['slope_per_step'])}/step "
            f"(R^2 {lr.r2:.4f} > {FIT_R2}; cosine R^2 {_f(d.get('cosine_r2'))})"
        )
    else:
        reason = d.get("reason") or (
            f"neither fits: cosine R^2 {_f(d.get('cosine_r2'))}, linear R^2 "
            f"{_f(d.get('linear_r2'))}, need > {FIT_R2}"
        )
        return f"unknown ({reason}){warm}"
    if d.get("quantized"):
        text += f", updated in {d['updates']} steps"
    return text + warm


def _f(x: float | None, digits: int = 4) -> str:
    return "n/a" if x is None else f"{x:.{digits}g}"


def _fs(x: float | None) -> str:
    if x is None:
        return "n/a"
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def _pct(x: float | None) -> str:
    return "% change n/a, first ~ 0" if x is None else f"{x:+.1f}%"


# --------------------------------------------------------------------------- json helpers


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
