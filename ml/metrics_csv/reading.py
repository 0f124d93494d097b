"""Reading W&B CSV exports (chart and run-history layouts) and merging them on step.

The layouts, the naming of merged metrics and the meaning of cells are in the package
docstring (``tether.ml.metrics_csv``).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .records import (
    BAND_SUFFIXES,
    CHART_STEP,
    HISTORY_STEP,
    RUN_SEPARATOR,
    RUNTIME,
    MetricsCSVError,
    MetricsTable,
    Series,
    Value,
)


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
    rows = _read_rows(path)
    header_line, raw_header = rows[0]
    header = [h.strip() for h in raw_header]
    layout, step_col = _layout(header, where)
    data = _FileData(path=where, stem=path.stem, layout=layout)
    seen: set[str] = set()
    for h in header:
        if h and h in seen:
            raise MetricsCSVError(
                f"{where}:{header_line}: column {h!r} appears twice in the header"
            )
        seen.add(h)
    step_index = header.index(step_col)
    targets = _targets(data, header, step_index=step_index, header_line=header_line)

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


def _read_rows(path: Path) -> list[tuple[int, list[str]]]:
    """The file's non-blank rows with their line numbers; at least the header."""
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
    return rows


def _layout(header: list[str], where: str) -> tuple[str, str]:
    """``("chart", "Step")`` or ``("history", "_step")``, told apart by the step column."""
    if CHART_STEP in header:
        return "chart", CHART_STEP
    if HISTORY_STEP in header:
        return "history", HISTORY_STEP
    found = ", ".join(repr(h) for h in header[:20])
    if len(header) > 20:
        found += f", ... ({len(header) - 20} more)"
    raise MetricsCSVError(
        f"{where}: no step column: expected {CHART_STEP!r} (W&B chart export) or "
        f"{HISTORY_STEP!r} (W&B run-history export); found columns: {found}"
    )


def _targets(
    data: _FileData, header: list[str], *, step_index: int, header_line: int
) -> dict[int, dict[float, Value]]:
    """Column index -> the step -> value dict its cells go to (a series, a band side or the
    elapsed time of ``data``); columns not listed are skipped."""
    where = data.path
    targets: dict[int, dict[float, Value]] = {}
    for i, h in enumerate(header):
        if i == step_index:
            continue
        if not h:
            data.notes.append(f"{where}: column {i + 1} has no name and was ignored")
            continue
        if data.layout == "history":
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
    return targets


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
