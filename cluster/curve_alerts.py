"""Training-curve alerts while a run trains: the rules of ``ml.diagnose`` (NaN/divergence,
plateau, oscillation, overfitting, red milestones, targets) applied to a trial's complete
epochs, each finding alerted once per (trial, code, epoch)."""

from __future__ import annotations

import logging
from collections.abc import Sequence

from tether.ml.diagnose import DiagnosisError, Milestone, Target, live_alerts

from .events import AlertLevel
from .monitor_state import MonitorState, TrialState

log = logging.getLogger(__name__)

_LEVELS = frozenset(a.value for a in AlertLevel)


def curve_alerts(
    state: MonitorState,
    tr: TrialState,
    *,
    targets: Sequence[Target],
    milestones: Sequence[Milestone],
    run_id: str,
) -> list[dict]:
    """The fields of each new alert (level, code, message, epoch, trial, stage, worker) that
    the complete epochs of trial ``tr`` call for, not yet in ``state``."""
    if not tr.complete:
        return []
    last = max(tr.complete)
    names = list(dict.fromkeys(k for x in sorted(tr.complete) for k in tr.epochs[x]))
    history = {
        k: [tr.epochs[x].get(k) if x in tr.complete else None for x in range(1, last + 1)]
        for k in names
    }
    try:
        findings = live_alerts(
            history,
            targets=[t for t in targets if t.metric in history],
            milestones=[m for m in milestones if m.metric in history],
        )
    except DiagnosisError as exc:
        log.warning("run %s trial %s: no live diagnosis: %s", run_id, tr.trial, exc)
        return []
    who = f"trial {tr.trial}: " if tr.trial else ""
    out = []
    for f in findings:
        if (tr.trial, f.code, f.epoch) in state.alert_keys:
            continue
        out.append(
            {
                "level": f.severity if f.severity in _LEVELS else "warning",
                "code": f.code,
                "message": who + f.text,
                "epoch": f.epoch,
                "trial": tr.trial,
                "stage": tr.stage,
                "worker": tr.worker,
            }
        )
    return out
