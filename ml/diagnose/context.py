"""The history a diagnosis reads, and the context its rules share: the inputs, and what
each rule found for the ones after it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .goals import Milestone, Target
from .records import (
    DiagnosisError,
    Finding,
    Fit,
    GroupCheck,
    MilestoneCheck,
    Recommendation,
    Status,
    TargetCheck,
)

Series = Sequence[float | None]


# --------------------------------------------------------------------------- history


def history_from_results(results: Mapping) -> dict[str, list[float | None]]:
    """Flatten a training_results.json dict: train series as-is, validation with ``val_``."""
    train = results.get("train_history") or {}
    val = results.get("val_history") or {}
    out = {k: list(v) for k, v in train.items()}
    out.update({f"val_{k}": list(v) for k, v in val.items()})
    return out


def _check_history(history: Mapping[str, Series]) -> int:
    if not history:
        raise DiagnosisError("the history is empty: give at least one metric with one value")
    lengths = {k: len(v) for k, v in history.items()}
    if len(set(lengths.values())) != 1:
        raise DiagnosisError(f"every metric needs one value per epoch; lengths differ: {lengths}")
    for key, series in history.items():
        for i, v in enumerate(series):
            if v is not None and not isinstance(v, int | float):
                raise DiagnosisError(f"{key}[{i}] is {v!r}, not a number")
    return next(iter(lengths.values()))


def _pick_monitor(history: Mapping[str, Series], monitor: str | None) -> str:
    if monitor:
        if monitor not in history:
            raise DiagnosisError(
                f"no metric {monitor!r} in the history; it has: {', '.join(history)}"
            )
        return monitor
    for name in ("val_loss", "loss"):
        if name in history:
            return name
    return next(iter(history))


# --------------------------------------------------------------------------- the context


@dataclass
class _Context:
    """What the rules read (the inputs) and write (what they found), in rule order."""

    history: Mapping[str, Series]
    epochs: int
    monitor: str
    lower: bool
    series: list[float | None]
    targets: Sequence[Target]
    milestones: Sequence[Milestone]
    groups: Mapping[str, Mapping[str, float]]
    patience: int
    min_delta: float
    spike_ratio: float
    capacity_ratio: float
    group_spread: float
    best_i: int | None = None
    final: float | None = None
    since: int | None = None
    diverged: bool = False
    spikes: list[int] = field(default_factory=list)
    status: Status = Status.TOO_SHORT
    gap_final: float | None = None
    gap_trend: float | None = None
    fit: Fit = Fit.UNKNOWN
    findings: list[Finding] = field(default_factory=list)
    target_checks: list[TargetCheck] = field(default_factory=list)
    milestone_checks: list[MilestoneCheck] = field(default_factory=list)
    group_checks: list[GroupCheck] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)

    def better(self, a: float, b: float) -> bool:
        return a < b - self.min_delta if self.lower else a > b + self.min_delta

    @property
    def monitor_target(self) -> Target | None:
        return next((t for t in self.targets if t.metric == self.monitor), None)

    @property
    def train_key(self) -> str | None:
        return "loss" if "loss" in self.history else None

    @property
    def val_key(self) -> str | None:
        return "val_loss" if "val_loss" in self.history else None

    def found(self) -> dict[str, Finding]:
        """The first finding of each code."""
        out: dict[str, Finding] = {}
        for x in self.findings:
            out.setdefault(x.code, x)
        return out
