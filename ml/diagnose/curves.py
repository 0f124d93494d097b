"""The rules on the curves: best epoch, divergence, oscillation, status, the generalization
gap and the fit. Each reads and writes the shared ``_Context``."""

from __future__ import annotations

import math
import statistics

from .. import stats as _stats
from ..metrics import lower_is_better
from ..numfmt import sentence as _fmt
from .context import _Context
from .goals import _finite
from .records import Finding, Fit, Flag, Status


def _best(c: _Context) -> None:
    """Best epoch on the finite part, the final value, epochs since best."""
    for i, v in enumerate(c.series):
        if _finite(v) and (c.best_i is None or c.better(v, c.series[c.best_i])):
            c.best_i = i
    c.final = c.series[-1] if c.series else None
    c.since = (c.epochs - 1 - c.best_i) if c.best_i is not None else None


def _divergence(c: _Context) -> None:
    """Non-finite values anywhere in a lower-is-better metric, or a sustained rise of the
    (train) monitor far past its best."""
    first_bad: tuple[str, int] | None = None
    for key, s in c.history.items():
        if not lower_is_better(key):
            continue
        for i, v in enumerate(s):
            if v is not None and not math.isfinite(v):
                if first_bad is None or i < first_bad[1]:
                    first_bad = (key, i)
                break
    if first_bad is not None:
        key, i = first_bad
        c.diverged = True
        c.findings.append(
            Finding(
                "diverged", f"{key} is non-finite (NaN/inf) from epoch {i + 1}", "critical", i + 1
            )
        )
        return
    best_i, final, since = c.best_i, c.final, c.since
    if not (c.lower and best_i is not None and since is not None and since >= 3 and _finite(final)):
        return
    tail = [v for v in c.series[best_i:] if _finite(v)]
    rising = all(b >= a for a, b in zip(tail[-4:], tail[-3:], strict=False))
    best = c.series[best_i]
    if rising and best > 0 and final > 2 * best and "val_" not in c.monitor:
        c.diverged = True
        c.findings.append(
            Finding(
                "diverged",
                f"{c.monitor} rose from {_fmt(best)} (epoch {best_i + 1}) to "
                f"{_fmt(final)} and keeps rising",
                "critical",
                best_i + 1,
            )
        )


def _oscillation(c: _Context) -> None:
    """Spikes above a rolling median of the previous epochs (two or more make a finding)."""
    finite_vals = [(i, v) for i, v in enumerate(c.series) if _finite(v)]
    for j in range(3, len(finite_vals)):
        i, v = finite_vals[j]
        window = [w for _, w in finite_vals[max(0, j - 5) : j]]
        med = statistics.median(window)
        if med == 0:
            continue
        jump = (v - med) / abs(med) if c.lower else (med - v) / abs(med)
        if jump > c.spike_ratio:
            c.spikes.append(i + 1)
    if len(c.spikes) >= 2:
        c.findings.append(
            Finding(
                "oscillating",
                f"{c.monitor} spikes more than {c.spike_ratio:.0%} above its rolling median at "
                f"epochs {', '.join(map(str, c.spikes))}",
                "warning",
                c.spikes[0],
            )
        )
    else:
        c.spikes = []


def _status(c: _Context) -> None:
    """Diverged, too short, converged or plateaued (no improvement for ``patience`` epochs;
    with a target on the monitor, converged only if it got there), or still improving."""
    if c.diverged:
        c.status = Status.DIVERGED
    elif c.best_i is None or c.epochs < 3:
        c.status = Status.TOO_SHORT
    elif c.since is not None and c.since >= c.patience:
        target = c.monitor_target
        met = target is None or target.flag(c.series[c.best_i]) is Flag.GREEN
        c.status = Status.CONVERGED if met else Status.PLATEAUED
        c.findings.append(
            Finding(
                "plateau" if c.status is Status.PLATEAUED else "converged",
                f"{c.status.value}: no improvement of {c.monitor} beyond {c.min_delta:g} for "
                f"{c.since} epochs (best {_fmt(c.series[c.best_i])} at epoch {c.best_i + 1})",
                "warning" if c.status is Status.PLATEAUED else "info",
                c.best_i + 2,
            )
        )
    else:
        c.status = Status.STILL_IMPROVING
        window = [v for v in c.series[-c.patience :] if _finite(v)]
        if len(window) >= 2 and window[0]:
            change = (window[-1] - window[0]) / abs(window[0])
            c.findings.append(
                Finding(
                    "improving",
                    f"still improving: {c.monitor} changed {change:+.1%} over the last "
                    f"{len(window)} epochs (best at epoch {c.best_i + 1})",
                )
            )


def _gap(c: _Context) -> None:
    """The generalization gap (val_loss - loss) at the last epoch and its recent trend."""
    if "loss" not in c.history or "val_loss" not in c.history:
        return
    gaps = [
        (v - t) if _finite(v) and _finite(t) else None
        for t, v in zip(c.history["loss"], c.history["val_loss"], strict=True)
    ]
    if not any(g is not None for g in gaps):
        return
    c.gap_final = gaps[-1]
    recent = [g for g in gaps[-c.patience :] if g is not None]
    c.gap_trend = _stats.index_slope(recent) if len(recent) >= 2 else None
    if c.gap_final is not None:
        trend = _fmt(c.gap_trend) if c.gap_trend is not None else "n/a"
        c.findings.append(
            Finding(
                "gap",
                f"generalization gap (val_loss - loss) {_fmt(c.gap_final)} at the last epoch, "
                f"trend {trend} per epoch",
            )
        )


def _overfitting(c: _Context) -> None:
    """val_loss rose well past its best while the train loss kept falling."""
    if c.diverged or not c.train_key or not c.val_key:
        return
    tr = list(c.history[c.train_key])
    va = list(c.history[c.val_key])
    vb = min((i for i in range(c.epochs) if _finite(va[i])), key=lambda i: va[i], default=None)
    if vb is None or not (_finite(va[-1]) and _finite(tr[-1]) and _finite(tr[vb])):
        return
    val_rise = va[-1] - va[vb]
    train_fall = tr[vb] - tr[-1]
    if (
        c.epochs - 1 - vb >= max(2, c.patience // 2)
        and val_rise > max(c.min_delta, 0.05 * abs(va[vb]))
        and train_fall > 0
    ):
        c.fit = Fit.OVERFITTING
        c.findings.append(
            Finding(
                "overfitting",
                f"overfitting: val_loss rose from {_fmt(va[vb])} (epoch {vb + 1}) to "
                f"{_fmt(va[-1])} while train loss fell from {_fmt(tr[vb])} to {_fmt(tr[-1])}",
                "warning",
                vb + 2,
            )
        )


def _capacity(c: _Context) -> None:
    """Train and val loss both stay ``capacity_ratio`` x above a loss target after the curve
    has flattened: the model cannot get there."""
    target = next((t for t in c.targets if t.metric in ("val_loss", "loss")), None)
    if c.fit is not Fit.UNKNOWN or c.diverged or target is None or not c.train_key:
        return
    tr_final = c.history[c.train_key][-1]
    va_final = c.history[c.val_key][-1] if c.val_key else tr_final
    goal = target.goal
    if (
        _finite(tr_final)
        and _finite(va_final)
        and goal > 0
        and tr_final > c.capacity_ratio * goal
        and va_final > c.capacity_ratio * goal
        and c.status in (Status.PLATEAUED, Status.CONVERGED)
    ):
        c.fit = Fit.CAPACITY_LIMITED
        c.findings.append(
            Finding(
                "capacity_limited",
                f"capacity-limited: train loss {_fmt(tr_final)} and val_loss "
                f"{_fmt(va_final)} both stay {tr_final / goal:.1f}x and "
                f"{va_final / goal:.1f}x above the {_fmt(goal)} target after the plateau",
                "warning",
            )
        )


def _good_fit(c: _Context) -> None:
    if c.fit is Fit.UNKNOWN and not c.diverged and c.train_key and c.val_key and c.status in (
        Status.CONVERGED, Status.STILL_IMPROVING
    ):  # fmt: skip
        c.fit = Fit.GOOD
