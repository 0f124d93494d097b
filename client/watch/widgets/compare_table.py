"""The live comparison table: per extractor, mean ± std of the ranking metric over the seeds
finished so far, seeds done / failed / running, the tier, and a warning under 3 seeds.

Trial ids are ``<extractor>-s<seed>``. The statistics are ``tether.ml.comparison_stats``'s
(``summarize`` and ``rank_tiers``: Welch's t-test, Holm-corrected; a tier holds extractors
the seeds cannot separate), the very numbers the comparison report gives. They need scipy
and bootstrap resamples, so :func:`compare_rows` is called off the UI thread (a worker).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from rich.text import Text
from textual.widgets import DataTable

from tether.ml.comparison_stats import TrialResult, rank_tiers, summarize

from ..model import RunModel

TRIAL_ID = re.compile(r"^(?P<extractor>.+)-s(?P<seed>\d+)$")
COLUMNS = ("tier", "extractor", "mean ± std", "done", "failed", "running", "seeds", "note")


def split_trial(trial_id: str | None) -> tuple[str, int] | None:
    """``("magvit", 2)`` for ``magvit-s2``; None for anything else (a stage's own work)."""
    m = TRIAL_ID.match(trial_id or "")
    return (m["extractor"], int(m["seed"])) if m else None


@dataclass(frozen=True)
class TrialState:
    """What the table needs of one trial: a snapshot taken on the UI thread."""

    extractor: str
    seed: int
    status: str
    value: float | None
    error: str | None


@dataclass(frozen=True)
class CompareRow:
    extractor: str
    tier: str  # "1", "2" ...; "3*" a single seed (untested); "-" nothing finished yet
    mean: float | None
    std: float | None
    done: int
    failed: int
    running: int
    values: tuple[float, ...]  # the finished seeds' values, by seed
    warning: str | None


def trial_states(model: RunModel, *, metric: str) -> list[TrialState]:
    """The compare trials of the model (ids ``<extractor>-s<seed>``), in order of appearance."""
    out = []
    for key, t in model.trials.items():
        parsed = split_trial(key)
        if parsed is None:
            continue
        value = t.results.get(metric)
        out.append(TrialState(parsed[0], parsed[1], t.status, value, t.error))
    return out


def _result(s: TrialState, metric: str) -> TrialResult | None:
    if s.status == "failed":
        return TrialResult(s.extractor, s.seed, None, s.error or "failed")
    if s.status != "finished":
        return None
    if s.value is None or not math.isfinite(s.value):
        return TrialResult(s.extractor, s.seed, None, f"finished without a finite {metric}")
    return TrialResult(s.extractor, s.seed, s.value)


def compare_rows(states: list[TrialState], *, metric: str, mode: str) -> list[CompareRow]:
    """The table's rows, best tier first; extractors with nothing finished last."""
    order: list[str] = []
    for s in states:
        if s.extractor not in order:
            order.append(s.extractor)
    results = [r for r in (_result(s, metric) for s in states) if r is not None]
    summaries = {}
    tiers: dict[str, str] = {}
    ranked: list[str] = []
    if results:
        summary = summarize(trials=results, metric=metric, mode=mode)  # type: ignore[arg-type]
        summaries = {e.extractor: e for e in summary.extractors}
        ranking = rank_tiers(trials=results, metric=metric, mode=mode)  # type: ignore[arg-type]
        for tier in ranking.tiers:
            for e in tier.extractors:
                tiers[e] = str(tier.rank) if tier.tested else f"{tier.rank}*"
        ranked = list(ranking.order)
    rows = []
    for e in ranked + [e for e in order if e not in ranked]:
        mine = [s for s in states if s.extractor == e]
        summ = summaries.get(e)
        rows.append(
            CompareRow(
                extractor=e,
                tier=tiers.get(e, "-"),
                mean=summ.mean if summ else None,
                std=summ.std if summ else None,
                done=summ.n if summ else 0,
                failed=sum(s.status == "failed" for s in mine),
                running=sum(s.status == "running" for s in mine),
                values=tuple(p.value for p in sorted(summ.points, key=lambda p: p.seed))
                if summ
                else (),
                warning=_note(summ, mine, metric),
            )
        )
    return rows


def _note(summ, mine: list[TrialState], metric: str) -> str | None:
    """The row's warning; a finished trial that reported no value is not a failure, it is said
    so (a run from before trials reported their metrics as events)."""
    silent = sum(s.status == "finished" and s.value is None for s in mine)
    warning = summ.warning if summ else "0 seeds: no result"
    if silent:
        said = f"{silent} finished without a {metric} event"
        return f"{warning}; {said}" if warning else said
    return warning


def mean_std_text(mean: float | None, std: float | None) -> str:
    if mean is None:
        return "-"
    return f"{mean:.4f} ± {std:.4f}" if std is not None else f"{mean:.4f} ± -"


class CompareTable(DataTable):
    DEFAULT_CSS = """
    CompareTable {
        height: 1fr;
        border: round $primary-darken-2;
        border-title-color: $text-muted;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.rows_shown: list[CompareRow] = []

    def on_mount(self) -> None:
        for name in COLUMNS:
            self.add_column(name, key=name)

    def show(self, rows: list[CompareRow], *, colors: dict[str, str]) -> None:
        if rows == self.rows_shown:
            return
        self.rows_shown = rows
        self.clear()
        for r in rows:
            best = r.tier == "1"
            self.add_row(
                Text(r.tier, style="bold #59a14f" if best else ""),
                Text(r.extractor, style=f"bold {colors.get(r.extractor, '')}".strip()),
                Text(mean_std_text(r.mean, r.std), style="bold" if best else ""),
                Text(str(r.done), justify="right"),
                Text(str(r.failed), justify="right", style="#e15759" if r.failed else ""),
                Text(str(r.running), justify="right", style="#4e9ded" if r.running else ""),
                Text(" ".join(f"{v:.3f}" for v in r.values)),
                Text(r.warning or "", style="#f28e2b" if r.warning else ""),
                key=r.extractor,
            )
