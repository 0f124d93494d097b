"""Worker health: what the run monitor concludes about a worker at a moment, and how it
says so.

Two signals: **alive** (any event from the worker, a heartbeat at least) and
**progressing** (a ``progress`` or ``metric`` event, a heartbeat whose ``progress_step``
went up, a stage start). In order:

* ``failed`` / ``finished``: its stage event says so, or its process ended (the last
  heartbeat says ``ended``; a non-zero ``exit_code`` is a failure);
* ``dead``: its stage was retried on another worker (Ray retries a task only once its worker
  died), or no sign of life for ``2 * heartbeat_s``;
* ``stalled``: alive, but no progress for ``stall_timeout_s``;
* ``ok`` otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

from .events import AlertLevel, Health, StageStatus
from .monitor_state import MonitorState, WorkerState


@dataclass(frozen=True)
class HealthRules:
    heartbeat_s: float
    stall_timeout_s: float

    def judge(self, w: WorkerState, now: float) -> Health:
        """The health of ``w`` at ``now`` (seconds, the events' clock)."""
        if w.stage_status == StageStatus.FAILED.value:
            return Health.FAILED
        if w.stage_status == StageStatus.FINISHED.value:
            return Health.FINISHED
        if w.ended:
            return Health.FINISHED if not w.exit_code else Health.FAILED
        if w.replaced_by is not None:
            return Health.DEAD
        if now - w.last_beat > 2 * self.heartbeat_s:
            return Health.DEAD
        if now - w.last_progress > self.stall_timeout_s:
            return Health.STALLED
        return Health.OK

    def message(self, w: WorkerState, new: Health, now: float) -> tuple[AlertLevel, str]:
        """The alert for ``w`` changing from ``w.health`` to ``new``: level and text."""
        where = f" ({w.host} pid {w.pid})" if w.host else ""
        name = f"worker {w.worker}{where}"
        stage = w.stage or "its stage"
        if new is Health.DEAD and w.replaced_by is not None:
            attempt = f" (attempt {w.replaced_attempt})" if w.replaced_attempt else ""
            return AlertLevel.CRITICAL, (
                f"{name} is dead: {stage} was retried on worker {w.replaced_by}{attempt}"
            )
        if new is Health.DEAD:
            return AlertLevel.CRITICAL, (
                f"{name} is dead: no heartbeat for {now - w.last_beat:.0f} s "
                f"(limit {2 * self.heartbeat_s:.0f} s)"
            )
        if new is Health.STALLED:
            return AlertLevel.WARNING, (
                f"{name} is stalled: alive, but no progress for {now - w.last_progress:.0f} s "
                f"(stall timeout {self.stall_timeout_s:.0f} s); a stuck dataloader or "
                "collective call looks like this"
            )
        if new is Health.FAILED:
            return AlertLevel.CRITICAL, f"{name} failed in {stage}: {w.error or 'no error message'}"
        if new is Health.FINISHED:
            return AlertLevel.INFO, f"{name} finished {stage}"
        if w.health in (Health.DEAD, Health.STALLED):
            return AlertLevel.INFO, f"{name} recovered: was {w.health.value}, progressing again"
        return AlertLevel.INFO, f"{name} started {stage}"


def health_alerts(state: MonitorState, rules: HealthRules, now: float) -> list[dict]:
    """The fields of an alert (level, code, message, health, worker, trial, stage) for each
    worker whose health at ``now`` is not the one it last had."""
    out = []
    for w in state.workers.values():
        new = rules.judge(w, now)
        if new is w.health:
            continue
        level, message = rules.message(w, new, now)
        out.append(
            {
                "level": level,
                "code": f"health:{new.value}",
                "message": message,
                "health": new.value,
                "worker": w.worker,
                "trial": w.trial,
                "stage": w.stage,
            }
        )
    return out
