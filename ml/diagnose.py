"""Diagnosis of training curves: what happened, how far from the goal, what to do next.

Input is a per-epoch (or per-step) history of any metrics: ``{"loss": [...], "val_loss":
[...], "accuracy": [...], ...}`` (Keras-style: validation metrics carry a ``val_`` prefix;
``None``/NaN are non-finite values). Every finding carries the figures behind it; the
recommendations are an ordered decision list, each with the evidence that triggered it.

The run monitor applies the same rules live as the history grows (``live_alerts``), so
there is one copy of them.
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from enum import Enum
from pathlib import Path

from .errors import MLError

Series = Sequence[float | None]


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


def lower_is_better(metric: str) -> bool:
    name = metric.lower().removeprefix("val_").removeprefix("train_")
    return any(k in name for k in ("loss", "mse", "mae", "rmse", "error", "perplexity", "nll"))


def _finite(v: float | None) -> bool:
    return v is not None and math.isfinite(v)


def _fmt(v: float | None) -> str:
    if v is None or not math.isfinite(v):
        return "NaN" if v is not None and math.isnan(v) else str(v)
    if v == 0:
        return "0"
    if abs(v) >= 100:
        return f"{v:.1f}"
    if abs(v) >= 0.01:
        return f"{v:.4g}"
    return f"{v:.3g}"


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """``metric`` should reach ``goal``; between ``acceptable`` and ``goal`` is amber."""

    metric: str
    goal: float
    lower_better: bool
    acceptable: float | None = None

    @classmethod
    def parse(cls, text: str) -> Target:
        """``val_loss<0.01``, ``accuracy>=0.9``, or a range ``accuracy=0.85:0.95``
        (acceptable 0.85, goal 0.95; for a loss write ``val_loss=0.30:0.25``)."""
        m = re.fullmatch(r"\s*([\w./-]+)\s*(<=|>=|<|>|=)\s*([-+\d.eE]+)(?::([-+\d.eE]+))?\s*", text)
        if not m:
            raise DiagnosisError(
                f"cannot read target {text!r}: write metric<value, metric>value, "
                "or metric=acceptable:goal (e.g. val_loss<0.01, accuracy=0.85:0.95)"
            )
        metric, op, a, b = m.groups()
        try:
            first, second = float(a), (float(b) if b is not None else None)
        except ValueError:
            raise DiagnosisError(f"target {text!r}: {a!r} is not a number") from None
        if op == "=":
            if second is None:
                raise DiagnosisError(
                    f"target {text!r}: '=' needs a range acceptable:goal, e.g. accuracy=0.85:0.95"
                )
            if first == second:
                raise DiagnosisError(f"target {text!r}: acceptable and goal must differ")
            return cls(metric=metric, goal=second, lower_better=second < first, acceptable=first)
        if second is not None:
            raise DiagnosisError(f"target {text!r}: a range goes with '=', e.g. {metric}={a}:{b}")
        return cls(metric=metric, goal=first, lower_better=op.startswith("<"))

    def flag(self, value: float | None) -> Flag:
        if not _finite(value):
            return Flag.RED
        better = (value <= self.goal) if self.lower_better else (value >= self.goal)
        if better:
            return Flag.GREEN
        if self.acceptable is not None:
            ok = (value <= self.acceptable) if self.lower_better else (value >= self.acceptable)
            if ok:
                return Flag.AMBER
        return Flag.RED

    def describe(self, value: float | None) -> str:
        """``final val_loss 0.365 is 36.5x the 0.01 target`` and friends."""
        if not _finite(value):
            return f"{self.metric} is {_fmt(value)}; target {_fmt(self.goal)}"
        if self.lower_better:
            if self.goal > 0 and value > self.goal:
                return (
                    f"{self.metric} {_fmt(value)} is {value / self.goal:.1f}x the "
                    f"{_fmt(self.goal)} target"
                )
            return f"{self.metric} {_fmt(value)} meets the {_fmt(self.goal)} target"
        if value >= self.goal:
            return f"{self.metric} {_fmt(value)} meets the {_fmt(self.goal)} target"
        return (
            f"{self.metric} {_fmt(value)} is {_fmt(self.goal - value)} below the "
            f"{_fmt(self.goal)} target"
        )


# --------------------------------------------------------------------------- milestones


@dataclass(frozen=True)
class Milestone:
    """``epoch 20: val_loss < 0.25, red flag > 0.30``."""

    epoch: int
    metric: str
    expect: str  # "<" or ">"
    expect_value: float
    red_flag: float | None = None

    _PATTERN = re.compile(
        r"\s*epoch\s+(\d+)\s*:\s*(?:expect\s+)?([\w./-]+)\s*([<>])=?\s*([-+\d.eE]+)"
        r"(?:\s*,\s*red\s*flag\s*([<>])=?\s*([-+\d.eE]+))?\s*",
        re.IGNORECASE,
    )

    @classmethod
    def parse(cls, text: str) -> Milestone:
        m = cls._PATTERN.fullmatch(text)
        if not m:
            raise DiagnosisError(
                f"cannot read milestone {text!r}: write "
                "'epoch 20: val_loss < 0.25, red flag > 0.30'"
            )
        epoch, metric, op, value, red_op, red = m.groups()
        if red_op is not None and red_op == op:
            raise DiagnosisError(
                f"milestone {text!r}: the red flag must point the other way from the expectation"
            )
        return cls(
            epoch=int(epoch),
            metric=metric,
            expect=op,
            expect_value=float(value),
            red_flag=float(red) if red is not None else None,
        )

    def judge(self, value: float | None) -> Flag:
        if not _finite(value):
            return Flag.RED
        ok = value < self.expect_value if self.expect == "<" else value > self.expect_value
        if ok:
            return Flag.GREEN
        if self.red_flag is None:
            return Flag.AMBER
        bad = value > self.red_flag if self.expect == "<" else value < self.red_flag
        return Flag.RED if bad else Flag.AMBER


_OPPOSITE = {"<": ">", ">": "<"}


def read_milestones(path: Path) -> list[Milestone]:
    """One milestone per line; blank lines and ``#`` comments are skipped."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise DiagnosisError(f"cannot read milestones file {path}: {exc.strerror}") from None
    out = []
    for n, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if not text:
            continue
        try:
            out.append(Milestone.parse(text))
        except DiagnosisError as exc:
            raise DiagnosisError(f"{path}:{n}: {exc}") from None
    return out


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


def _slope(values: Sequence[float]) -> float:
    n = len(values)
    if n < 2:
        return 0.0
    mx = (n - 1) / 2
    my = sum(values) / n
    den = sum((i - mx) ** 2 for i in range(n))
    return sum((i - mx) * (v - my) for i, v in enumerate(values)) / den


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
    lower = lower_is_better(mon)
    series = list(history[mon])
    findings: list[Finding] = []
    recs: list[Recommendation] = []

    def better(a: float, b: float) -> bool:
        return a < b - min_delta if lower else a > b + min_delta

    # Best epoch on the finite part, epochs since best.
    best_i: int | None = None
    for i, v in enumerate(series):
        if _finite(v) and (best_i is None or better(v, series[best_i])):
            best_i = i
    final = series[-1] if series else None
    since = (epochs - 1 - best_i) if best_i is not None else None

    # Divergence: non-finite values anywhere in a loss, or a sustained rise far past best.
    first_bad: tuple[str, int] | None = None
    for key, s in history.items():
        if not lower_is_better(key):
            continue
        for i, v in enumerate(s):
            if v is not None and not math.isfinite(v):
                if first_bad is None or i < first_bad[1]:
                    first_bad = (key, i)
                break
    diverged = False
    if first_bad is not None:
        key, i = first_bad
        diverged = True
        findings.append(
            Finding(
                "diverged", f"{key} is non-finite (NaN/inf) from epoch {i + 1}", "critical", i + 1
            )
        )
    elif lower and best_i is not None and since is not None and since >= 3 and _finite(final):
        tail = [v for v in series[best_i:] if _finite(v)]
        rising = all(b >= a for a, b in zip(tail[-4:], tail[-3:], strict=False))
        if rising and series[best_i] > 0 and final > 2 * series[best_i] and "val_" not in mon:
            diverged = True
            findings.append(
                Finding(
                    "diverged",
                    f"{mon} rose from {_fmt(series[best_i])} (epoch {best_i + 1}) to "
                    f"{_fmt(final)} and keeps rising",
                    "critical",
                    best_i + 1,
                )
            )

    # Oscillation: spikes above a rolling median of the previous epochs.
    spikes = []
    finite_vals = [(i, v) for i, v in enumerate(series) if _finite(v)]
    for j in range(3, len(finite_vals)):
        i, v = finite_vals[j]
        window = [w for _, w in finite_vals[max(0, j - 5) : j]]
        med = statistics.median(window)
        if med == 0:
            continue
        jump = (v - med) / abs(med) if lower else (med - v) / abs(med)
        if jump > spike_ratio:
            spikes.append(i + 1)
    if len(spikes) >= 2:
        findings.append(
            Finding(
                "oscillating",
                f"{mon} spikes more than {spike_ratio:.0%} above its rolling median at epochs "
                f"{', '.join(map(str, spikes))}",
                "warning",
                spikes[0],
            )
        )

    # Status.
    target_for_mon = next((t for t in targets if t.metric == mon), None)
    if diverged:
        status = Status.DIVERGED
    elif best_i is None or epochs < 3:
        status = Status.TOO_SHORT
    elif since is not None and since >= patience:
        # Without a target a finished curve has converged; with one, only if it got there.
        met = target_for_mon is None or target_for_mon.flag(series[best_i]) is Flag.GREEN
        status = Status.CONVERGED if met else Status.PLATEAUED
        findings.append(
            Finding(
                "plateau" if status is Status.PLATEAUED else "converged",
                f"{status.value}: no improvement of {mon} beyond {min_delta:g} for {since} "
                f"epochs (best {_fmt(series[best_i])} at epoch {best_i + 1})",
                "warning" if status is Status.PLATEAUED else "info",
                best_i + 2,
            )
        )
    else:
        status = Status.STILL_IMPROVING
        window = [v for v in series[-patience:] if _finite(v)]
        if len(window) >= 2 and window[0]:
            change = (window[-1] - window[0]) / abs(window[0])
            findings.append(
                Finding(
                    "improving",
                    f"still improving: {mon} changed {change:+.1%} over the last "
                    f"{len(window)} epochs (best at epoch {best_i + 1})",
                )
            )

    # Generalization gap (val_loss - loss) and its trend.
    gap_final = gap_trend = None
    if "loss" in history and "val_loss" in history:
        gaps = [
            (v - t) if _finite(v) and _finite(t) else None
            for t, v in zip(history["loss"], history["val_loss"], strict=True)
        ]
        finite_gaps = [g for g in gaps if g is not None]
        if finite_gaps:
            gap_final = gaps[-1]
            recent = [g for g in gaps[-patience:] if g is not None]
            gap_trend = _slope(recent) if len(recent) >= 2 else None
            if gap_final is not None:
                findings.append(
                    Finding(
                        "gap",
                        f"generalization gap (val_loss - loss) {_fmt(gap_final)} at the last "
                        f"epoch, trend {_fmt(gap_trend) if gap_trend is not None else 'n/a'} "
                        "per epoch",
                    )
                )

    # Fit: overfitting vs capacity-limited.
    fit = Fit.UNKNOWN
    train_key = "loss" if "loss" in history else None
    val_key = "val_loss" if "val_loss" in history else None
    if not diverged and train_key and val_key:
        tr = [v for v in history[train_key]]
        va = [v for v in history[val_key]]
        vb = min((i for i in range(epochs) if _finite(va[i])), key=lambda i: va[i], default=None)
        if vb is not None and _finite(va[-1]) and _finite(tr[-1]) and _finite(tr[vb]):
            val_rise = va[-1] - va[vb]
            train_fall = tr[vb] - tr[-1]
            if (
                epochs - 1 - vb >= max(2, patience // 2)
                and val_rise > max(min_delta, 0.05 * abs(va[vb]))
                and train_fall > 0
            ):
                fit = Fit.OVERFITTING
                findings.append(
                    Finding(
                        "overfitting",
                        f"overfitting: val_loss rose from {_fmt(va[vb])} (epoch {vb + 1}) to "
                        f"{_fmt(va[-1])} while train loss fell from {_fmt(tr[vb])} to "
                        f"{_fmt(tr[-1])}",
                        "warning",
                        vb + 2,
                    )
                )
    loss_target = next((t for t in targets if t.metric in ("val_loss", "loss")), None)
    if fit is Fit.UNKNOWN and not diverged and loss_target is not None and train_key:
        tr_final = history[train_key][-1]
        va_final = history[val_key][-1] if val_key else tr_final
        if (
            _finite(tr_final)
            and _finite(va_final)
            and loss_target.goal > 0
            and tr_final > capacity_ratio * loss_target.goal
            and va_final > capacity_ratio * loss_target.goal
            and status in (Status.PLATEAUED, Status.CONVERGED)
        ):
            fit = Fit.CAPACITY_LIMITED
            findings.append(
                Finding(
                    "capacity_limited",
                    f"capacity-limited: train loss {_fmt(tr_final)} and val_loss "
                    f"{_fmt(va_final)} both stay {tr_final / loss_target.goal:.1f}x and "
                    f"{va_final / loss_target.goal:.1f}x above the {_fmt(loss_target.goal)} "
                    "target after the plateau",
                    "warning",
                )
            )
    if fit is Fit.UNKNOWN and not diverged and train_key and val_key and status in (
        Status.CONVERGED, Status.STILL_IMPROVING
    ):  # fmt: skip
        fit = Fit.GOOD

    # Targets, milestones, groups.
    target_checks = []
    for t in targets:
        if t.metric not in history:
            raise DiagnosisError(
                f"target names {t.metric!r}, which is not in the history ({', '.join(history)})"
            )
        s = history[t.metric]
        value = s[-1]
        target_checks.append(
            TargetCheck(
                metric=t.metric,
                value=value,
                goal=t.goal,
                flag=t.flag(value),
                ratio=(value / t.goal) if t.lower_better and _finite(value) and t.goal else None,
                text=f"final {t.describe(value)}",
            )
        )
    milestone_checks = []
    for m in milestones:
        if m.metric not in history:
            raise DiagnosisError(
                f"milestone names {m.metric!r}, which is not in the history ({', '.join(history)})"
            )
        if m.epoch > epochs:
            milestone_checks.append(
                MilestoneCheck(m.epoch, m.metric, None, Flag.PENDING, f"run has {epochs} epochs")
            )
            continue
        value = history[m.metric][m.epoch - 1]
        flag = m.judge(value)
        red = (
            f", red flag {_OPPOSITE[m.expect]} {_fmt(m.red_flag)}" if m.red_flag is not None else ""
        )
        milestone_checks.append(
            MilestoneCheck(
                m.epoch, m.metric, value, flag,
                f"{m.metric} {_fmt(value)} at epoch {m.epoch} (expect {m.expect} "
                f"{_fmt(m.expect_value)}{red})",
            )
        )  # fmt: skip
    group_checks = []
    for metric, values in (groups or {}).items():
        if not values:
            continue
        worst = (max if lower_is_better(metric) else min)(values, key=values.__getitem__)
        mean = sum(values.values()) / len(values)
        group_checks.append(
            GroupCheck(
                metric=metric,
                values=dict(values),
                worst=worst,
                text=f"worst {metric} is {worst} at {_fmt(values[worst])} "
                f"(mean over {len(values)} groups {_fmt(mean)})",
            )
        )

    # Recommendations: an ordered decision list, each citing the finding that triggered it.
    found = {}
    for x in findings:
        found.setdefault(x.code, x)
    if diverged:
        f = found["diverged"]
        recs.append(
            Recommendation(
                "lower the learning rate (e.g. 3-10x) and clip gradients (max norm 1.0); "
                "check the data for NaN/inf inputs",
                f.text,
            )
        )
    if fit is Fit.OVERFITTING:
        f = found["overfitting"]
        recs.append(
            Recommendation(
                f"use early stopping (keep the epoch-{best_i + 1 if best_i is not None else '?'} "
                "weights) and add regularisation: weight decay, dropout, data augmentation",
                f.text,
            )
        )
    if fit is Fit.CAPACITY_LIMITED:
        f = found["capacity_limited"]
        recs.append(
            Recommendation(
                "increase capacity: double the hidden size or add layers; then check the "
                "learning rate schedule",
                f.text,
            )
        )
    elif status is Status.PLATEAUED and not diverged and fit is not Fit.OVERFITTING:
        f = found["plateau"]
        recs.append(
            Recommendation(
                "the run stopped improving: try a learning-rate decay or restart, or more "
                "capacity if the train loss is also high",
                f.text,
            )
        )
    if "oscillating" in found and not diverged:
        recs.append(
            Recommendation(
                "lower the learning rate or raise the batch size", found["oscillating"].text
            )
        )
    if status is Status.STILL_IMPROVING:
        f = found.get("improving")
        if (
            f is not None
            and target_for_mon is not None
            and target_for_mon.flag(final) is not Flag.GREEN
        ):
            recs.append(
                Recommendation("train longer: the monitored metric is still improving", f.text)
            )
    for m in milestone_checks:
        if m.flag is Flag.RED:
            recs.append(
                Recommendation(
                    f"investigate before going on: milestone at epoch {m.epoch} is red", m.text
                )
            )
    for g in group_checks:
        mean = sum(g.values.values()) / len(g.values)
        spread = abs(g.values[g.worst] - mean) / max(abs(mean), 1e-12)
        if len(g.values) > 1 and spread > group_spread:
            recs.append(
                Recommendation(
                    f"look at group {g.worst} first: it is {spread:.0%} off the mean", g.text
                )
            )
            break  # one group recommendation: the first metric that singles one out

    return Diagnosis(
        monitor=mon,
        lower_better=lower,
        epochs=epochs,
        best_epoch=best_i + 1 if best_i is not None else None,
        best_value=series[best_i] if best_i is not None else None,
        final_value=final,
        epochs_since_best=since,
        status=status,
        fit=fit,
        oscillation_epochs=spikes if len(spikes) >= 2 else [],
        gap_final=gap_final,
        gap_trend=gap_trend,
        targets=target_checks,
        milestones=milestone_checks,
        groups=group_checks,
        findings=findings,
        recommendations=recs,
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
