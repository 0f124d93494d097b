"""Diagnosis of training curves: what happened, how far from the goal, what to do next.

Input is a per-epoch (or per-step) history of any metrics: ``{"loss": [...], "val_loss":
[...], "accuracy": [...], ...}`` (Keras-style: validation metrics carry a ``val_`` prefix;
``None``/NaN are non-finite values). Every finding carries the figures behind it; the
recommendations are an ordered decision list, each with the evidence that triggered it.

The run monitor applies the same rules live as the history grows (``live_alerts``), so
there is one copy of them. One module per concern: ``goals`` (targets and milestones),
``rules`` (``diagnose``: one function per rule, applied in order over the shared context of
``context``; the rules on the curves in ``curves``, the checks and recommendations in
``advice``) and ``records`` (the findings and ``Diagnosis``). Which way a metric improves is
``tether.ml.metrics.lower_is_better``.
"""

from .context import history_from_results
from .goals import Milestone, Target, read_milestones
from .records import (
    Diagnosis,
    DiagnosisError,
    Finding,
    Fit,
    Flag,
    GroupCheck,
    MilestoneCheck,
    Recommendation,
    Status,
    TargetCheck,
)
from .rules import ALERT_CODES, diagnose, live_alerts

__all__ = [
    "ALERT_CODES",
    "Diagnosis",
    "DiagnosisError",
    "Finding",
    "Fit",
    "Flag",
    "GroupCheck",
    "Milestone",
    "MilestoneCheck",
    "Recommendation",
    "Status",
    "Target",
    "TargetCheck",
    "diagnose",
    "history_from_results",
    "live_alerts",
    "read_milestones",
]
