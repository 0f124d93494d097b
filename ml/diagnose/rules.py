"""``diagnose``: the rules, each a function over one shared ``_Context``, applied in order.

Best epoch; divergence; oscillation; status (converged, plateaued, still improving); the
generalization gap; the fit (overfitting, capacity-limited, good) - in ``curves``; the checks
of targets, milestones and groups, then the recommendations - in ``advice``. ``live_alerts``
applies the same rules while a run goes.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ..metrics import lower_is_better
from .advice import (
    _check_groups,
    _check_milestones,
    _check_targets,
    _recommend_checks,
    _recommend_fixes,
)
from .context import Series, _check_history, _Context, _pick_monitor
from .curves import (
    _best,
    _capacity,
    _divergence,
    _gap,
    _good_fit,
    _oscillation,
    _overfitting,
    _status,
)
from .goals import Milestone, Target
from .records import Diagnosis, Finding, Flag

RULES = (
    _best,
    _divergence,
    _oscillation,
    _status,
    _gap,
    _overfitting,
    _capacity,
    _good_fit,
    _check_targets,
    _check_milestones,
    _check_groups,
    _recommend_fixes,
    _recommend_checks,
)


# --------------------------------------------------------------------------- diagnose


def diagnose(
    history: Mapping[str, Series],
    *,
    monitor: str | None = None,
    targets: Sequence[Target] = (),
    milestones: Sequence[Milestone] = (),
    groups: Mapping[str, Mapping[str, float]] | None = None,
    patience: int = 5,
    min_delta: float = 1e-4,
    spike_ratio: float = 0.25,
    capacity_ratio: float = 2.0,
    group_spread: float = 0.1,
) -> Diagnosis:
    """Diagnose a history. ``groups`` maps a per-group metric name (``recall``, ``mse``) to
    ``{group: value}`` (per class, per frequency) so the worst group can be named; it gets a
    recommendation when it is more than ``group_spread`` (relative) off the groups' mean."""
    epochs = _check_history(history)
    mon = _pick_monitor(history, monitor)
    c = _Context(
        history=history,
        epochs=epochs,
        monitor=mon,
        lower=lower_is_better(mon),
        series=list(history[mon]),
        targets=targets,
        milestones=milestones,
        groups=groups or {},
        patience=patience,
        min_delta=min_delta,
        spike_ratio=spike_ratio,
        capacity_ratio=capacity_ratio,
        group_spread=group_spread,
    )
    for rule in RULES:
        rule(c)
    return Diagnosis(
        monitor=mon,
        lower_better=c.lower,
        epochs=epochs,
        best_epoch=c.best_i + 1 if c.best_i is not None else None,
        best_value=c.series[c.best_i] if c.best_i is not None else None,
        final_value=c.final,
        epochs_since_best=c.since,
        status=c.status,
        fit=c.fit,
        oscillation_epochs=c.spikes,
        gap_final=c.gap_final,
        gap_trend=c.gap_trend,
        targets=c.target_checks,
        milestones=c.milestone_checks,
        groups=c.group_checks,
        findings=c.findings,
        recommendations=c.recommendations,
    )


ALERT_CODES = ("diverged", "plateau", "oscillating", "overfitting", "capacity_limited")


def live_alerts(
    history: Mapping[str, Series], *, targets: Sequence[Target] = (),
    milestones: Sequence[Milestone] = (), patience: int = 5, min_delta: float = 1e-4,
) -> list[Finding]:  # fmt: skip
    """The findings worth an alert while a run is going: divergence, plateau, oscillation,
    overfitting, red milestones. Same rules as ``diagnose``; the caller de-duplicates."""
    d = diagnose(
        history, targets=targets, milestones=milestones, patience=patience, min_delta=min_delta
    )
    out = [f for f in d.findings if f.code in ALERT_CODES]
    out += [
        Finding("milestone", m.text, "critical", m.epoch)
        for m in d.milestones
        if m.flag is Flag.RED
    ]
    return out
