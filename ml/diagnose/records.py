"""The records of a diagnosis: statuses, findings, recommendations, checks, and ``Diagnosis``
with its JSON (``to_dict``) and text (``to_text``) forms."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from enum import Enum

from ..errors import MLError
from ..numfmt import sentence as _fmt


class DiagnosisError(MLError):
    """A history, target or milestone could not be understood."""


class Status(str, Enum):
    STILL_IMPROVING = "still improving"
    CONVERGED = "converged"
    PLATEAUED = "plateaued"
    DIVERGED = "diverged"
    TOO_SHORT = "too short to judge"


class Fit(str, Enum):
    GOOD = "good fit"
    OVERFITTING = "overfitting"
    CAPACITY_LIMITED = "underfitting (capacity-limited)"
    UNKNOWN = "unknown"


class Flag(str, Enum):
    GREEN = "green"
    AMBER = "amber"
    RED = "red"
    PENDING = "pending"


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Finding:
    code: str  # stable id: diverged, plateau, overfitting, capacity_limited, oscillating, ...
    text: str  # with its figures
    severity: str = "info"  # info, warning, critical
    epoch: int | None = None  # where it starts, when it has a place in the run


@dataclass(frozen=True)
class Recommendation:
    action: str
    evidence: str


@dataclass(frozen=True)
class TargetCheck:
    metric: str
    value: float | None
    goal: float
    flag: Flag
    ratio: float | None  # value / goal for lower-is-better metrics
    text: str


@dataclass(frozen=True)
class MilestoneCheck:
    epoch: int
    metric: str
    value: float | None
    flag: Flag
    text: str


@dataclass(frozen=True)
class GroupCheck:
    metric: str  # e.g. "recall" or "mse"
    values: dict[str, float]
    worst: str
    text: str


@dataclass(frozen=True)
class Diagnosis:
    monitor: str
    lower_better: bool
    epochs: int
    best_epoch: int | None
    best_value: float | None
    final_value: float | None
    epochs_since_best: int | None
    status: Status
    fit: Fit
    oscillation_epochs: list[int]
    gap_final: float | None  # val_loss - loss at the last epoch
    gap_trend: float | None  # slope of the gap over the last `patience` epochs, per epoch
    targets: list[TargetCheck] = field(default_factory=list)
    milestones: list[MilestoneCheck] = field(default_factory=list)
    groups: list[GroupCheck] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    recommendations: list[Recommendation] = field(default_factory=list)

    def to_dict(self) -> dict:
        def clean(o):
            if isinstance(o, Enum):
                return o.value
            if isinstance(o, float) and not math.isfinite(o):
                return None
            if isinstance(o, dict):
                return {k: clean(v) for k, v in o.items()}
            if isinstance(o, list):
                return [clean(v) for v in o]
            return o

        return clean(asdict(self))

    def to_text(self) -> str:
        lines = [f"Diagnosis of {self.monitor} over {self.epochs} epochs: {self.status.value}"]
        if self.best_epoch is not None:
            lines.append(
                f"  best {self.monitor} {_fmt(self.best_value)} at epoch {self.best_epoch}; "
                f"final {_fmt(self.final_value)}; {self.epochs_since_best} epochs since best"
            )
        lines.append(f"  fit: {self.fit.value}")
        for f in self.findings:
            lines.append(f"  - [{f.severity}] {f.text}")
        for t in self.targets:
            lines.append(f"  target {t.metric}: {t.flag.value}: {t.text}")
        for m in self.milestones:
            lines.append(f"  milestone epoch {m.epoch} {m.metric}: {m.flag.value}: {m.text}")
        for g in self.groups:
            lines.append(f"  groups: {g.text}")
        if self.recommendations:
            lines.append("Recommendations (in order):")
            for i, r in enumerate(self.recommendations, 1):
                lines.append(f"  {i}. {r.action}\n     because {r.evidence}")
        return "\n".join(lines)
