"""The blocks of the prompt, each rendered as plain lines within a character budget.

Key metrics, the configuration, the per-epoch history (first, best, last and every k-th epoch
when it does not fit), the diagnosis and the CSV statistics. A block that does not fit says
what was left out (``_Rendered.note``); ``prompt.build_prompt`` shares out the budget.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..numfmt import prompt_value as _fmt


def _is_scalar(v: Any) -> bool:
    return v is None or isinstance(v, str | int | float | bool)


def _fmt_list(values: Sequence[Any], *, limit: int = 12) -> str:
    if len(values) <= limit:
        return "[" + ", ".join(_fmt_inline(v) for v in values) + "]"
    head, tail = values[: limit - 3], values[-3:]
    return (
        "["
        + ", ".join(_fmt_inline(v) for v in head)
        + f", ... ({len(values) - len(head) - len(tail)} more) ..., "
        + ", ".join(_fmt_inline(v) for v in tail)
        + "]"
    )


def _fmt_inline(v: Any) -> str:
    if _is_scalar(v):
        return _fmt(v)
    if isinstance(v, list | tuple):
        return _fmt_list(list(v))
    if isinstance(v, Mapping):
        return "{" + ", ".join(f"{k}: {_fmt_inline(x)}" for k, x in v.items()) + "}"
    return _fmt(v)


def _flatten(obj: Any, prefix: str) -> list[str]:
    """``a.b.c = value`` lines; lists of scalars on one line (long ones elided)."""
    if isinstance(obj, Mapping):
        lines: list[str] = []
        for k, v in obj.items():
            lines.extend(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return lines
    if isinstance(obj, list | tuple) and obj and all(isinstance(x, Mapping) for x in obj):
        lines = []
        for i, x in enumerate(obj):
            lines.extend(_flatten(x, f"{prefix}[{i}]"))
        return lines
    return [f"{prefix} = {_fmt_inline(obj)}"]


@dataclass(frozen=True)
class _Rendered:
    text: str
    note: str | None = None  # what was shortened, None when complete


def _fit_lines(lines: list[str], budget: int, what: str) -> _Rendered:
    """As many whole lines as fit in ``budget``, saying how many were left out."""
    full = "\n".join(lines)
    if len(full) <= budget:
        return _Rendered(full)
    kept: list[str] = []
    used = 0
    cut = " [... cut]"
    for i, line in enumerate(lines):
        tail = f"[... {len(lines) - i - 1} more {what} omitted to fit the prompt]"
        room = budget - used - 1 - len(tail)
        if len(line) > room:
            if room - len(cut) >= 80:  # a long line: keep its head
                kept.append(line[: room - len(cut)] + cut)
                used += room + 1
            break
        kept.append(line)
        used += len(line) + 1
    omitted = len(lines) - len(kept)
    tail = f"[... {omitted} more {what} omitted to fit the prompt]"
    if len(tail) > budget:
        return _Rendered("", f"{what}: all {len(lines)} omitted")
    if not omitted:  # only the last line was cut short
        return _Rendered("\n".join(kept), f"{what}: a long line cut short")
    note = f"{what}: {omitted} of {len(lines)} omitted"
    if kept and kept[-1].endswith(cut):
        note += ", one cut short"
    return _Rendered("\n".join([*kept, tail]), note)


def _hard_cut(text: str, budget: int, what: str) -> _Rendered:
    if len(text) <= budget:
        return _Rendered(text)
    marker = "\n[... truncated to fit the prompt]"
    return _Rendered(text[: max(0, budget - len(marker))] + marker, f"{what}: cut short")


_HEADLINE = (
    "task",
    "model",
    "parameters",
    "device",
    "num_epochs",
    "best_epoch",
    "best_val_loss",
    "stopped_early",
)
_HISTORY_KEYS = ("train_history", "val_history")
_CONFIG_KEYS = ("model_config", "dataset_info")


def _key_metrics(results: Mapping[str, Any]) -> list[str]:
    lines = [f"{k} = {_fmt_inline(results[k])}" for k in _HEADLINE if k in results]
    test = results.get("test_results")
    if isinstance(test, Mapping):
        order = ["kind", "accuracy", "precision", "recall", "f1", "mse", "mae", "worst_group"]
        keys = [k for k in order if k in test] + [k for k in test if k not in order]
        for k in keys:
            v = test[k]
            if k == "confusion_matrix" and isinstance(v, list):
                lines.append(
                    f"test_results.confusion_matrix = {_fmt_inline(v)} "
                    "(rows = true class, columns = predicted, in class_names order)"
                )
            elif k == "early_decision" and isinstance(v, Mapping):
                for ek, ev in v.items():
                    if ek == "decision_frames" and isinstance(ev, list):
                        lines.append(
                            f"test_results.early_decision.decision_frames = "
                            f"{len(ev)} per-clip values (not shown)"
                        )
                    else:
                        lines.extend(_flatten(ev, f"test_results.early_decision.{ek}"))
            else:
                lines.extend(_flatten(v, f"test_results.{k}"))
    elif test is not None:
        lines.append(f"test_results = {_fmt_inline(test)}")
    timings = results.get("timings")
    if isinstance(timings, Mapping):
        for k, v in timings.items():
            nums = [x for x in v if isinstance(x, int | float)] if isinstance(v, list) else []
            if isinstance(v, list) and nums and len(v) > 6:
                lines.append(
                    f"timings.{k} = {len(v)} values, first {_fmt(v[0])}, last {_fmt(v[-1])}, "
                    f"min {_fmt(min(nums))}, max {_fmt(max(nums))}"
                )
            else:
                lines.extend(_flatten(v, f"timings.{k}"))
    return lines


def _history_table(results: Mapping[str, Any], budget: int) -> _Rendered:
    columns: list[tuple[str, list[Any]]] = []
    for hk in _HISTORY_KEYS:
        hist = results.get(hk)
        if isinstance(hist, Mapping):
            short = hk.split("_")[0]
            for name, series in hist.items():
                if isinstance(series, list):
                    columns.append((f"{short}_{name}", series))
    n = max((len(s) for _, s in columns), default=0)
    if not n:
        return _Rendered("")
    best = results.get("best_epoch")
    best = best if isinstance(best, int) and 1 <= best <= n else None

    def row(e: int) -> str:
        cells = [str(e)] + [_fmt(s[e - 1]) if e - 1 < len(s) else "-" for _, s in columns]
        return " ".join(cells) + ("  <- best epoch" if e == best else "")

    header = " ".join(["epoch"] + [name for name, _ in columns])
    rows = {e: row(e) for e in range(1, n + 1)}

    def render(epochs: list[int]) -> str:
        lines = [header]
        prev = 0
        for e in epochs:
            if e > prev + 1:
                lines.append(f"... ({e - prev - 1} epochs not shown)")
            lines.append(rows[e])
            prev = e
        if prev < n:
            lines.append(f"... ({n - prev} epochs not shown)")
        return "\n".join(lines)

    everything = render(list(range(1, n + 1)))
    if len(everything) <= budget:
        return _Rendered(everything)
    fixed = {1, 2, 3, n - 2, n - 1, n} | ({best - 1, best, best + 1} if best else set())
    fixed = {e for e in fixed if 1 <= e <= n}
    for stride in range(2, n + 1):
        epochs = sorted(fixed | set(range(1, n + 1, stride)))
        text = render(epochs)
        if len(text) <= budget:
            return _Rendered(
                text,
                f"training_history: {len(epochs)} of {n} epochs shown "
                f"(first, best, last and every {stride} epochs)",
            )
    for epochs in (sorted(fixed), sorted({e for e in (1, best, n) if e})):
        text = render(epochs)
        if len(text) <= budget:
            return _Rendered(text, f"training_history: {len(epochs)} of {n} epochs shown")
    return _Rendered("", f"training_history: all {n} epochs omitted")


def _diagnosis_lines(diagnosis: Mapping[str, Any]) -> list[str]:
    lines: list[str] = []
    lists: list[tuple[str, list[Any]]] = []
    for k, v in diagnosis.items():
        if isinstance(v, list) and any(isinstance(x, str | Mapping | list) for x in v):
            lists.append((k, v))  # findings, recommendations: one bullet each
        elif isinstance(v, Mapping):
            lines.extend(_flatten(v, k))
        else:
            lines.append(f"{k} = {_fmt_inline(v)}")
    for k, items in lists:
        lines.append(f"{k}:")
        for x in items:
            if isinstance(x, Mapping):
                first = [f for f in ("text", "action", "message") if f in x]
                keys = first + [f for f in x if f not in first]
                lines.append("- " + "; ".join(f"{f}: {_fmt_inline(x[f])}" for f in keys))
            else:
                lines.append(f"- {_fmt_inline(x)}")
    return lines


_CSV_PRIORITY = re.compile(r"val|loss|acc|f1|mse|mae|prec|recall", re.I)
_CSV_GROUPS = ("stats", "metrics", "lr_schedule", "steps", "notes", "correlations")


def _csv_lines(summary: Mapping[str, Any]) -> list[str]:
    """Scalars, then per-metric statistics (validation and loss metrics first), the lr
    schedule and the rest: the end is what gets cut when the prompt is short of room."""
    lines: list[str] = [f"{k} = {_fmt_inline(v)}" for k, v in summary.items() if _is_scalar(v)]
    groups = [k for k in _CSV_GROUPS if k in summary]
    groups += [k for k in summary if k not in groups and not _is_scalar(summary[k])]
    for k in groups:
        v = summary[k]
        if isinstance(v, Mapping) and v and all(isinstance(x, Mapping) for x in v.values()):
            rows = [
                (0 if _CSV_PRIORITY.search(str(name)) else 1, f"{k}.{name}: {_stats(stats)}")
                for name, stats in v.items()
            ]
            lines.extend(line for _, line in sorted(rows, key=lambda t: t[0]))  # stable
        else:
            lines.extend(_flatten(v, str(k)))
    return lines


def _stats(stats: Mapping[str, Any]) -> str:
    return ", ".join(f"{s}={_fmt_inline(x)}" for s, x in stats.items() if x is not None)
