"""The rules that check and advise: targets, milestones and groups, then the recommendations,
an ordered decision list in which each cites the finding that triggered it."""

from __future__ import annotations

from ..metrics import lower_is_better
from ..numfmt import sentence as _fmt
from .context import _Context
from .goals import _OPPOSITE, _finite
from .records import (
    DiagnosisError,
    Fit,
    Flag,
    GroupCheck,
    MilestoneCheck,
    Recommendation,
    Status,
    TargetCheck,
)


def _check_targets(c: _Context) -> None:
    for t in c.targets:
        if t.metric not in c.history:
            raise DiagnosisError(
                f"target names {t.metric!r}, which is not in the history ({', '.join(c.history)})"
            )
        value = c.history[t.metric][-1]
        c.target_checks.append(
            TargetCheck(
                metric=t.metric,
                value=value,
                goal=t.goal,
                flag=t.flag(value),
                ratio=(value / t.goal) if t.lower_better and _finite(value) and t.goal else None,
                text=f"final {t.describe(value)}",
            )
        )


def _check_milestones(c: _Context) -> None:
    for m in c.milestones:
        if m.metric not in c.history:
            raise DiagnosisError(
                f"milestone names {m.metric!r}, which is not in the history "
                f"({', '.join(c.history)})"
            )
        if m.epoch > c.epochs:
            c.milestone_checks.append(
                MilestoneCheck(m.epoch, m.metric, None, Flag.PENDING, f"run has {c.epochs} epochs")
            )
            continue
        value = c.history[m.metric][m.epoch - 1]
        red = (
            f", red flag {_OPPOSITE[m.expect]} {_fmt(m.red_flag)}" if m.red_flag is not None else ""
        )
        c.milestone_checks.append(
            MilestoneCheck(
                m.epoch, m.metric, value, m.judge(value),
                f"{m.metric} {_fmt(value)} at epoch {m.epoch} (expect {m.expect} "
                f"{_fmt(m.expect_value)}{red})",
            )
        )  # fmt: skip


def _check_groups(c: _Context) -> None:
    for metric, values in c.groups.items():
        if not values:
            continue
        worst = (max if lower_is_better(metric) else min)(values, key=values.__getitem__)
        mean = sum(values.values()) / len(values)
        c.group_checks.append(
            GroupCheck(
                metric=metric,
                values=dict(values),
                worst=worst,
                text=f"worst {metric} is {worst} at {_fmt(values[worst])} "
                f"(mean over {len(values)} groups {_fmt(mean)})",
            )
        )


def _recommend_fixes(c: _Context) -> None:
    """What the curves call for: divergence, overfitting, capacity, a plateau, oscillation,
    or more epochs; each cites the finding behind it."""
    found = c.found()
    recs = c.recommendations
    if c.diverged:
        recs.append(
            Recommendation(
                "lower the learning rate (e.g. 3-10x) and clip gradients (max norm 1.0); "
                "check the data for NaN/inf inputs",
                found["diverged"].text,
            )
        )
    if c.fit is Fit.OVERFITTING:
        best = c.best_i + 1 if c.best_i is not None else "?"
        recs.append(
            Recommendation(
                f"use early stopping (keep the epoch-{best} weights) and add regularisation: "
                "weight decay, dropout, data augmentation",
                found["overfitting"].text,
            )
        )
    if c.fit is Fit.CAPACITY_LIMITED:
        recs.append(
            Recommendation(
                "increase capacity: double the hidden size or add layers; then check the "
                "learning rate schedule",
                found["capacity_limited"].text,
            )
        )
    elif c.status is Status.PLATEAUED and not c.diverged and c.fit is not Fit.OVERFITTING:
        recs.append(
            Recommendation(
                "the run stopped improving: try a learning-rate decay or restart, or more "
                "capacity if the train loss is also high",
                found["plateau"].text,
            )
        )
    if "oscillating" in found and not c.diverged:
        recs.append(
            Recommendation(
                "lower the learning rate or raise the batch size", found["oscillating"].text
            )
        )
    improving = found.get("improving")
    target = c.monitor_target
    if (
        c.status is Status.STILL_IMPROVING
        and improving is not None
        and target is not None
        and target.flag(c.final) is not Flag.GREEN
    ):
        recs.append(
            Recommendation("train longer: the monitored metric is still improving", improving.text)
        )


def _recommend_checks(c: _Context) -> None:
    """Red milestones first, then the first group metric that singles one group out."""
    for m in c.milestone_checks:
        if m.flag is Flag.RED:
            c.recommendations.append(
                Recommendation(
                    f"investigate before going on: milestone at epoch {m.epoch} is red", m.text
                )
            )
    for g in c.group_checks:
        mean = sum(g.values.values()) / len(g.values)
        spread = abs(g.values[g.worst] - mean) / max(abs(mean), 1e-12)
        if len(g.values) > 1 and spread > c.group_spread:
            c.recommendations.append(
                Recommendation(
                    f"look at group {g.worst} first: it is {spread:.0%} off the mean", g.text
                )
            )
            break  # one group recommendation: the first metric that singles one out
