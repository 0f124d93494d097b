"""What ``tether watch`` knows about one run: a pure model fed with the run's events.

No Textual, no I/O: the app's workers read events (live from the head, or replayed from a
pulled ``events.jsonl``) and hand them to :meth:`RunModel.apply` on the UI thread; every
screen renders from the model. Events are applied once, in seq order: an event with a seq at
or below the last applied is a duplicate and is dropped (``duplicates`` counts them), a seq
beyond the next is a gap (``gaps`` counts them; the stream never yields one).

Memory is bounded: the per-epoch metric series (what the charts draw) keep every epoch, but
the raw windows (log lines, step-level progress per trial, alerts) are capped deques
(:class:`Caps`), so a 100,000-event run costs what a 10,000-event one does.

Health per worker follows the monitor's own verdicts (``health:*`` alerts carry ``health``);
a heartbeat makes a worker ``ok`` again, and a worker's ``ended`` heartbeat or its stage's
end makes it ``finished``/``failed``. Ages (heartbeat, progress) are computed at render time
from the times kept here, with an injected clock.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

TERMINAL_HEALTH = ("finished", "failed")


@dataclass(frozen=True)
class Caps:
    """The windows' sizes (``[watch]`` settings)."""

    log_lines: int = 2000
    alerts: int = 500
    steps_per_trial: int = 300  # step-level loss points kept per trial (the epoch series stay)


@dataclass
class StageView:
    name: str
    status: str = "pending"  # pending, running, finished, failed
    started: float | None = None
    ended: float | None = None
    attempt: int | None = None
    commit: str | None = None  # the last commit of the stage (a compare stage commits often)
    summary: str | None = None
    error: str | None = None

    def duration(self, now: float) -> float | None:
        if self.started is None:
            return None
        return (self.ended or now) - self.started


@dataclass
class TrialView:
    """One trial, or a stage's own work when there is no trial (keyed by the stage name)."""

    trial: str | None
    stage: str | None = None
    status: str = "pending"
    epoch: int | None = None  # the last epoch that ended
    step: int | None = None
    epochs: int | None = None  # planned (from the stage's start), for the progress bar
    started: float | None = None
    ended: float | None = None
    attempt: int | None = None
    resumed_from_epoch: int | None = None
    gpu_ids: list[str] = field(default_factory=list)
    last_progress: float | None = None
    epoch_times: deque = field(default_factory=lambda: deque(maxlen=8))  # (time, epoch)
    steps: deque = field(default_factory=deque)  # (step, loss), capped
    results: dict[str, float | None] = field(default_factory=dict)  # metric events
    error: str | None = None

    @property
    def fraction(self) -> float | None:
        if self.status == "finished":
            return 1.0
        if not self.epochs or self.epoch is None:
            return None
        return min(1.0, self.epoch / self.epochs)

    def eta_s(self) -> float | None:
        """Seconds to the planned last epoch at the recent rate (the last few epochs)."""
        if self.status != "running" or not self.epochs or len(self.epoch_times) < 2:
            return None
        (t0, e0), (t1, e1) = self.epoch_times[0], self.epoch_times[-1]
        if e1 <= e0 or t1 <= t0:
            return None
        return max(0.0, (self.epochs - e1) * (t1 - t0) / (e1 - e0))


@dataclass
class WorkerView:
    worker: str
    trial: str | None = None
    stage: str | None = None
    health: str = "ok"
    host: str | None = None
    pid: int | None = None
    rss_mb: float | None = None
    gpus: list | None = None
    last_heartbeat: float | None = None
    last_progress: float | None = None


@dataclass(frozen=True)
class AlertView:
    seq: int
    time: float
    level: str
    code: str
    message: str
    trial: str | None
    stage: str | None


@dataclass(frozen=True)
class LogLine:
    seq: int
    time: float
    trial: str | None
    stage: str | None
    stream: str
    line: str


@dataclass
class SyncView:
    """The last pull (``sync`` events from ``tether pull`` or the app's own pulls)."""

    time: float | None = None
    ok: bool | None = None
    files: int = 0
    bytes: int = 0
    transferred: int = 0
    refused: list = field(default_factory=list)
    error: str | None = None


class RunModel:
    """The run as its events tell it. ``apply`` is the only way in."""

    def __init__(self, run_id: str, *, caps: Caps | None = None) -> None:
        self.run_id = run_id
        self.caps = caps or Caps()
        self.last_seq = 0
        self.applied = 0
        self.duplicates = 0
        self.gaps = 0
        self.status = "running"  # running, succeeded, failed, stopped
        self.error: str | None = None
        self.started: float | None = None
        self.ended: float | None = None
        self.last_event_time: float | None = None
        self.stages: dict[str, StageView] = {}
        self.trials: dict[str | None, TrialView] = {}
        self.workers: dict[str, WorkerView] = {}
        # (trial, metric) -> {epoch: value}: every epoch of every series (the charts)
        self.epoch_metrics: dict[tuple[str | None, str], dict[int, float | None]] = {}
        self.alerts: deque[AlertView] = deque(maxlen=self.caps.alerts)
        self.logs: deque[LogLine] = deque(maxlen=self.caps.log_lines)
        self.sync = SyncView()
        self.artifacts = 0

    # ------------------------------------------------------------------ input

    def apply(self, event: Mapping[str, Any]) -> bool:
        """Apply one event; False when it was a duplicate (seq already applied)."""
        seq = event.get("seq")
        if isinstance(seq, int):
            if seq <= self.last_seq:
                self.duplicates += 1
                return False
            if seq > self.last_seq + 1 and self.last_seq:
                self.gaps += 1
            self.last_seq = seq
        self.applied += 1
        t = float(event.get("time") or 0.0)
        self.last_event_time = t
        if self.started is None:
            self.started = t
        handler = _HANDLERS.get(event.get("kind"))
        if handler is not None:
            handler(self, event, t)
        return True

    def apply_all(self, events) -> int:
        return sum(self.apply(e) for e in events)

    # ------------------------------------------------------------------ views

    def series(self, trial: str | None, metric: str) -> list[tuple[int, float | None]]:
        points = self.epoch_metrics.get((trial, metric), {})
        return sorted(points.items())

    def metric_names(self) -> list[str]:
        return sorted({m for _, m in self.epoch_metrics})

    def trial_names(self) -> list[str | None]:
        return list(self.trials)

    def current_stage(self) -> StageView | None:
        running = [s for s in self.stages.values() if s.status == "running"]
        if running:
            return running[-1]
        return next(reversed(self.stages.values()), None) if self.stages else None

    def progress(self) -> float | None:
        """The run's progress: the mean of its trials' fractions where known."""
        fractions = [t.fraction for t in self.trials.values() if t.fraction is not None]
        return sum(fractions) / len(fractions) if fractions else None

    # ------------------------------------------------------------------ helpers

    def _trial(self, event: Mapping[str, Any]) -> TrialView:
        """The trial of the event; a stage's own work (no trial) is keyed by the stage."""
        key = event.get("trial") or event.get("stage")
        view = self.trials.get(key)
        if view is None:
            view = self.trials[key] = TrialView(trial=key, stage=event.get("stage"))
            view.steps = deque(maxlen=self.caps.steps_per_trial)
        return view

    def _worker(self, event: Mapping[str, Any]) -> WorkerView | None:
        wid = event.get("worker")
        if not wid or str(wid).startswith("driver-"):
            return None
        view = self.workers.get(wid)
        if view is None:
            view = self.workers[wid] = WorkerView(worker=wid)
        view.trial = event.get("trial") or view.trial
        view.stage = event.get("stage") or view.stage
        return view


def _stage(m: RunModel, e: Mapping[str, Any], t: float) -> None:
    if e.get("terminal"):
        m.status = str(e.get("run_status") or "finished")
        m.error = e.get("error")
        m.ended = t
        return
    if e.get("resumed"):
        m.status, m.ended, m.error = "running", None, None
        return
    name, status = e.get("stage"), e.get("status")
    if not name:
        return
    stage = m.stages.setdefault(name, StageView(name=name))
    trial = m._trial(e)
    if status == "started":
        trial.status, trial.started, trial.ended, trial.error = "running", t, None, None
        trial.attempt = e.get("attempt") or trial.attempt
        trial.resumed_from_epoch = e.get("resumed_from_epoch", trial.resumed_from_epoch)
        trial.epochs = e.get("epochs") or trial.epochs
        trial.gpu_ids = [str(g) for g in e.get("gpu_ids") or trial.gpu_ids]
    elif status in ("finished", "failed"):
        trial.status, trial.ended, trial.error = status, t, e.get("error")
    if e.get("trial") is None:  # the stage's own task
        stage.attempt = trial.attempt
        stage.summary, stage.error = e.get("summary", stage.summary), trial.error
    trials = [v for v in m.trials.values() if v.stage == name]
    if any(v.status == "running" for v in trials):
        stage.status, stage.ended = "running", None
    elif trials and all(v.status in TERMINAL_HEALTH for v in trials):
        stage.status = "failed" if any(v.status == "failed" for v in trials) else "finished"
        stage.ended = max(v.ended or t for v in trials)
    if stage.started is None and status == "started":
        stage.started = t
    worker = m._worker(e)
    if worker is not None and status in ("finished", "failed"):
        worker.health = status


def _progress(m: RunModel, e: Mapping[str, Any], t: float) -> None:
    trial = m._trial(e)
    trial.last_progress = t
    if trial.status == "pending":
        trial.status = "running"
    worker = m._worker(e)
    if worker is not None:
        worker.last_progress = t
        if worker.health == "stalled":
            worker.health = "ok"
    step, epoch, metrics = e.get("step"), e.get("epoch"), e.get("metrics") or {}
    if step is not None:
        trial.step = step
        loss = metrics.get("loss")
        if isinstance(loss, (int, float)) and not e.get("epoch_end"):
            trial.steps.append((step, float(loss)))
    if epoch is not None and (e.get("epoch_end") or step is None):
        trial.epoch = epoch
        trial.epoch_times.append((t, epoch))
        for name, value in metrics.items():
            v = float(value) if isinstance(value, (int, float)) else None
            m.epoch_metrics.setdefault((trial.trial, name), {})[epoch] = v


def _metric(m: RunModel, e: Mapping[str, Any], t: float) -> None:
    value = e.get("value")
    v = float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None
    trial = m._trial(e)
    trial.results[str(e.get("name"))] = v
    if e.get("epoch") is not None:
        m.epoch_metrics.setdefault((trial.trial, str(e.get("name"))), {})[e["epoch"]] = v


def _heartbeat(m: RunModel, e: Mapping[str, Any], t: float) -> None:
    worker = m._worker(e)
    if worker is None:
        return
    worker.last_heartbeat = t
    worker.host, worker.pid = e.get("host", worker.host), e.get("pid", worker.pid)
    worker.rss_mb, worker.gpus = e.get("rss_mb", worker.rss_mb), e.get("gpus", worker.gpus)
    if e.get("ended"):
        if worker.health not in TERMINAL_HEALTH:
            worker.health = "finished" if (e.get("exit_code") or 0) == 0 else "failed"
    elif worker.health == "dead":
        worker.health = "ok"  # it beats again


def _alert(m: RunModel, e: Mapping[str, Any], t: float) -> None:
    code = str(e.get("code") or "")
    if code == "git:committed" and e.get("stage") in m.stages:
        m.stages[e["stage"]].commit = e.get("commit")
    elif code == "git:committed" and e.get("stage"):
        m.stages.setdefault(e["stage"], StageView(name=e["stage"])).commit = e.get("commit")
    health = e.get("health")
    wid = e.get("worker")
    if health and wid and wid in m.workers:
        m.workers[wid].health = str(health)
    m.alerts.append(
        AlertView(
            seq=int(e.get("seq") or 0),
            time=t,
            level=str(e.get("level") or "info"),
            code=code,
            message=str(e.get("message") or ""),
            trial=e.get("trial"),
            stage=e.get("stage"),
        )
    )


def _log(m: RunModel, e: Mapping[str, Any], t: float) -> None:
    m.logs.append(
        LogLine(
            seq=int(e.get("seq") or 0),
            time=t,
            trial=e.get("trial"),
            stage=e.get("stage"),
            stream=str(e.get("stream") or "stdout"),
            line=str(e.get("line") or ""),
        )
    )


def _sync(m: RunModel, e: Mapping[str, Any], t: float) -> None:
    m.sync = SyncView(
        time=t, ok=bool(e.get("ok")), files=int(e.get("files") or 0),
        bytes=int(e.get("bytes") or 0), transferred=len(e.get("transferred") or []),
        refused=list(e.get("refused") or []), error=e.get("error"),
    )  # fmt: skip


def _artifact(m: RunModel, e: Mapping[str, Any], t: float) -> None:
    m.artifacts += 1


_HANDLERS: dict[str, Callable[[RunModel, Mapping[str, Any], float], None]] = {
    "stage": _stage,
    "progress": _progress,
    "metric": _metric,
    "heartbeat": _heartbeat,
    "alert": _alert,
    "log": _log,
    "sync": _sync,
    "artifact": _artifact,
}
