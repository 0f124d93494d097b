"""The run monitor's state, folded from its events: workers (last beat, last progress, host,
pid, RSS, health), trials (latest metrics, per-epoch metrics, which epochs are complete),
stages, recent alerts, the run's status, and the lines of ``PROGRESS.txt``.

:meth:`MonitorState.apply` is a pure function of the event sequence, so replaying
``events.jsonl`` after a restart gives the state the monitor had. What the state calls for
(health changes, training-curve alerts) the monitor decides and stores as events of its own.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from tether.ml.numfmt import metric_value

from .events import Health, Kind, RunStatus, StageStatus
from .progress_files import progress_line

MONITOR_SRC = "@monitor"  # ``src`` of the events the monitor writes itself
RECENT_ALERTS = 100


@dataclass
class WorkerState:
    worker: str
    first_seen: float
    last_beat: float  # any event from the worker
    last_progress: float
    host: str | None = None
    pid: int | None = None
    rss_mb: float | None = None
    gpus: list | None = None
    progress_step: int | None = None
    trial: str | None = None
    stage: str | None = None
    stage_status: str | None = None
    error: str | None = None
    ended: bool = False  # its process ended (the last heartbeat said so)
    exit_code: int | None = None
    replaced_by: str | None = None  # the worker its stage was retried on
    replaced_attempt: int | None = None
    health: Health = Health.OK


@dataclass
class TrialState:
    trial: str | None
    stage: str | None = None
    worker: str | None = None
    step: int | None = None
    epoch: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    updated: float | None = None
    epochs: dict[int, dict[str, Any]] = field(default_factory=dict)  # epoch -> its metrics
    complete: set[int] = field(default_factory=set)  # epochs whose metrics are all in


class MonitorState:
    """Everything the monitor knows about a run, from the events applied so far."""

    def __init__(self) -> None:
        self.workers: dict[str, WorkerState] = {}
        self.trials: dict[str | None, TrialState] = {}
        self.stages: dict[tuple[str | None, str | None], dict] = {}
        self.alerts: deque[dict] = deque(maxlen=RECENT_ALERTS)
        self.alert_keys: set[tuple] = set()  # (trial, code, epoch) of every alert stored
        self.changed_trials: set[str | None] = set()  # trials with newly complete epochs
        self.progress_lines: list[str] = []
        self.status = RunStatus.RUNNING
        self.error: str | None = None

    def take_changed_trials(self) -> set[str | None]:
        changed, self.changed_trials = self.changed_trials, set()
        return changed

    def apply(self, e: dict) -> None:
        """Fold one stored event into the state."""
        kind, t = e["kind"], e["time"]
        if e["src"] == MONITOR_SRC:  # about a worker, not from it: no sign of life
            w = self.workers.get(e["worker"]) if e.get("worker") else None
        else:
            w = self._touch_worker(e) if e.get("worker") else None
        if kind == Kind.HEARTBEAT.value and w is not None:
            self._apply_heartbeat(e, w)
        elif kind == Kind.PROGRESS.value:
            self._apply_progress(e, w)
        elif kind == Kind.METRIC.value:
            if w is not None:
                w.last_progress = max(w.last_progress, t)
            tr = self._trial(e)
            tr.metrics[e["name"]] = e["value"]
            tr.step = e["step"] if e["step"] is not None else tr.step
            tr.epoch = e["epoch"] if e["epoch"] is not None else tr.epoch
        elif kind == Kind.STAGE.value:
            self._apply_stage(e, w)
        elif kind == Kind.ALERT.value:
            self.alerts.append(e)
            self.alert_keys.add((e["trial"], e["code"], e.get("epoch")))
            if e.get("health") and w is not None:
                w.health = Health(e["health"])
            who = f" {e['worker']}" if e.get("worker") else ""
            self._line(e, f"ALERT {e['level']} {e['code']}{who}: {e['message']}")

    # ------------------------------------------------------------------ per kind

    def _touch_worker(self, e: dict) -> WorkerState:
        t = e["time"]
        w = self.workers.get(e["worker"])
        if w is None:
            w = self.workers[e["worker"]] = WorkerState(
                worker=e["worker"], first_seen=t, last_beat=t, last_progress=t
            )
        w.last_beat = max(w.last_beat, t)
        if e.get("trial") is not None:
            w.trial = e["trial"]
        if e.get("stage") is not None:
            w.stage = e["stage"]
        return w

    def _apply_heartbeat(self, e: dict, w: WorkerState) -> None:
        w.host, w.pid, w.rss_mb, w.gpus = e["host"], e["pid"], e["rss_mb"], e["gpus"]
        step = e.get("progress_step")
        if step is not None and step > (w.progress_step or 0):
            w.progress_step = step
            w.last_progress = max(w.last_progress, e["time"])
        if e.get("ended"):
            w.ended, w.exit_code = True, e.get("exit_code")
            if w.exit_code:
                w.error = f"its process exited with status {w.exit_code}"

    def _trial(self, e: dict) -> TrialState:
        tr = self.trials.get(e["trial"])
        if tr is None:
            tr = self.trials[e["trial"]] = TrialState(trial=e["trial"])
        tr.stage = e["stage"] or tr.stage
        tr.worker = e["worker"] or tr.worker
        tr.updated = e["time"]
        return tr

    def _apply_progress(self, e: dict, w: WorkerState | None) -> None:
        if w is not None:
            w.last_progress = max(w.last_progress, e["time"])
            if e["step"] is not None and e["step"] > (w.progress_step or 0):
                w.progress_step = e["step"]
        tr = self._trial(e)
        tr.step = e["step"] if e["step"] is not None else tr.step
        tr.epoch = e["epoch"] if e["epoch"] is not None else tr.epoch
        tr.metrics.update(e["metrics"])
        epoch = e["epoch"]
        if epoch is None or epoch < 1 or not e["metrics"]:
            return
        tr.epochs.setdefault(epoch, {}).update(e["metrics"])
        # An epoch is complete when it says so, or once a later epoch reports.
        ended = bool(e.get("epoch_end"))
        self._complete(e, tr, [x for x in tr.epochs if x < epoch or (x == epoch and ended)])

    def _complete(self, e: dict, tr: TrialState, epochs: Iterable[int]) -> None:
        for x in sorted(set(epochs) - tr.complete):
            tr.complete.add(x)
            self.changed_trials.add(tr.trial)
            shown = " ".join(f"{k}={metric_value(v)}" for k, v in tr.epochs[x].items())
            self._line(e, f"epoch {x}: {shown}", trial=tr.trial)

    def _apply_stage(self, e: dict, w: WorkerState | None) -> None:
        if e.get("resumed"):
            self.status, self.error = RunStatus.RUNNING, None
            self._line(e, "run resumed")
            return
        if e.get("terminal"):
            self.status = RunStatus(e["run_status"])
            self.error = e.get("error")
            err = f": {e['error']}" if e.get("error") else ""
            self._line(e, f"run {self.status.value}{err}")
            return
        status = e["status"]
        started = status == StageStatus.STARTED.value
        st = self._stage_row(e)
        st["status"], st["worker"] = status, e["worker"] or st["worker"]
        if started:
            st["started"], st["ended"], st["error"] = e["time"], None, None
            if e.get("attempt") is not None:
                st["attempt"] = e["attempt"]
        else:
            st["ended"], st["error"] = e["time"], e.get("error")
        if w is not None:
            w.stage_status = status
            w.error = e.get("error")
            if started:
                w.last_progress = max(w.last_progress, e["time"])
        if started and (e.get("attempt") or 1) > 1:
            self._replace_workers(e)
        if not started and e["trial"] in self.trials:
            tr = self.trials[e["trial"]]
            self._complete(e, tr, tr.epochs)
        self._line(e, _stage_text(e))

    def _stage_row(self, e: dict) -> dict:
        return self.stages.setdefault(
            (e["trial"], e["stage"]),
            {
                "stage": e["stage"],
                "trial": e["trial"],
                "status": e["status"],
                "started": None,
                "ended": None,
                "error": None,
                "worker": e["worker"],
                "attempt": 1,
            },
        )

    def _replace_workers(self, e: dict) -> None:
        """A retried stage (attempt 2, 3, ...) started: Ray retries a task only after its
        worker died, so the other live workers of that trial and stage are gone."""
        for other in self.workers.values():
            if (
                other.worker != e["worker"]
                and (other.trial, other.stage) == (e["trial"], e["stage"])
                and not other.health.is_terminal()
                and other.stage_status != StageStatus.FINISHED.value
                and other.replaced_by is None
            ):
                other.replaced_by, other.replaced_attempt = e["worker"], e["attempt"]

    def _line(self, e: dict, text: str, *, trial: str | None = None) -> None:
        trial = trial if trial is not None else e.get("trial")
        self.progress_lines.append(
            progress_line(time=e["time"], trial=trial, stage=e.get("stage"), text=text)
        )


def _stage_text(e: dict) -> str:
    """How PROGRESS.txt tells a stage event."""
    status = e["status"]
    name = e["stage"] or "stage"
    by = f" on {e['worker']}" if e.get("worker") else ""
    if status == StageStatus.FAILED.value:
        text = f"{name} FAILED{by}: {e.get('error') or 'no error message'}"
        tail = e.get("last_log_lines") or []
        return text + "".join(f"\n    | {line}" for line in tail[-20:])
    retry = []
    if (e.get("attempt") or 1) > 1:
        retry.append(f"attempt {e['attempt']}")
    if e.get("resumed_from_epoch") is not None:
        retry.append(f"resumed from the checkpoint of epoch {e['resumed_from_epoch']}")
    return f"{name} {status}{by}" + (f" ({', '.join(retry)})" if retry else "")
