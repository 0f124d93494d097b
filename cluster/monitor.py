"""The run monitor: one detached, restartable Ray actor per run, pinned to the head node.

It is the single writer of ``<run_dir>/events.jsonl``: reporters ``push`` batches of events,
the monitor gives each a ``seq`` (1, 2, 3, ... per run, no gaps), appends the batch and
fsyncs it before it answers, so an acknowledged event is never lost. It also keeps
``PROGRESS.txt`` (milestones) and ``HEARTBEAT.txt`` (last beat per worker) readable, judges
each worker's health, and applies the training-curve rules of ``ml.diagnose`` live.

Crash safety. Ray restarts the actor (``max_restarts=-1``) and retries the calls that were in
flight (``max_task_retries=-1``). On restart ``__init__`` rebuilds every piece of state from
``events.jsonl``. Each durable write (a pushed batch plus the alerts it caused) ends with a
line carrying ``"batch_end": true``; lines after the last such line were never acknowledged
(a torn write) and are cut off. Stored events carry ``src`` (the reporter) and ``batch`` (its
batch number), so a retried push of a batch already on disk stores nothing and returns the
seq it got the first time.

Health. Any event from a worker (the ``worker`` field) proves it alive; progress is a
``progress`` or ``metric`` event, a heartbeat whose ``progress_step`` went up, or a stage
start. A worker is ``dead`` without a sign of life for ``2 * heartbeat_s``, ``stalled`` when
alive but without progress for ``stall_timeout_s``, ``finished``/``failed`` after its stage
event says so. Every change is an ``alert`` event (code ``health:<state>``, field
``health``). Times are the events' own ``time`` against the monitor's clock, which never runs
backwards; ``check_health(now=...)`` lets tests drive it.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import ray

from tether.ml.atomic import write_bytes_atomic
from tether.ml.diagnose import DiagnosisError, Milestone, Target, live_alerts

from .errors import ClusterRuntimeError
from .events import (
    AlertLevel,
    EventError,
    Health,
    Kind,
    RunStatus,
    StageStatus,
    dumps,
    validate_event,
)

log = logging.getLogger(__name__)

NAMESPACE = "tether"
EVENTS_FILE = "events.jsonl"
PROGRESS_FILE = "PROGRESS.txt"
HEARTBEAT_FILE = "HEARTBEAT.txt"
MONITOR_SRC = "@monitor"  # ``src`` of the events the monitor writes itself
HEAD_NODE_RESOURCE = "node:__internal_head__"  # ray._common.constants.HEAD_NODE_RESOURCE_NAME
WINDOW = 10_000  # events kept in memory; older ranges are read from the file
_INDEX_STRIDE = 1000  # byte offset of every 1000th line, to seek into the file
_HEARTBEAT_FILE_EVERY_S = 1.0  # HEARTBEAT.txt at most this often on pushes (always on checks)


class MonitorError(ClusterRuntimeError):
    """The run monitor could not do what was asked; the message says what to do."""


class MonitorNotFoundError(MonitorError):
    """No monitor actor exists for the run id."""


class EventLogCorruptError(MonitorError):
    """``events.jsonl`` is damaged before its last complete write."""


def actor_name(run_id: str) -> str:
    return f"run:{run_id}"


# --------------------------------------------------------------------------- state records


@dataclass
class _Worker:
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
    health: Health = Health.OK


@dataclass
class _Trial:
    trial: str | None
    stage: str | None = None
    worker: str | None = None
    step: int | None = None
    epoch: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    updated: float | None = None
    epochs: dict[int, dict[str, Any]] = field(default_factory=dict)  # epoch -> its metrics
    complete: set[int] = field(default_factory=set)  # epochs whose metrics are all in


# --------------------------------------------------------------------------- the monitor


class MonitorCore:
    """The monitor's logic; ``RunMonitor`` is this class as a Ray actor. Usable in-process
    where a test wants no Ray. ``check_every_s`` > 0 starts the periodic health check."""

    def __init__(
        self,
        *,
        run_id: str,
        run_dir: str,
        heartbeat_s: float = 30.0,
        stall_timeout_s: float = 300.0,
        targets: Sequence[str] = (),
        milestones: Sequence[str] = (),
        check_every_s: float = 0.0,
        window: int = WINDOW,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if heartbeat_s <= 0 or stall_timeout_s <= 0:
            raise MonitorError("heartbeat_s and stall_timeout_s must be positive seconds")
        self.run_id = run_id
        self.run_dir = Path(run_dir)
        self.heartbeat_s = float(heartbeat_s)
        self.stall_timeout_s = float(stall_timeout_s)
        self.targets, self.milestones = _parse_goals(targets=targets, milestones=milestones)
        self._clock = clock
        self._window_size = max(1, int(window))
        self._lock = threading.RLock()
        self._path = self.run_dir / EVENTS_FILE
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self._rebuild()
        self._write_files(force=True)
        if check_every_s and check_every_s > 0:
            threading.Thread(
                target=self._check_loop, args=(float(check_every_s),), daemon=True
            ).start()

    # ------------------------------------------------------------------ public API

    def ready(self) -> dict:
        """Answers once the state is rebuilt: ``{"run", "last_seq", "pid"}``."""
        return {"run": self.run_id, "last_seq": self._last_seq, "pid": os.getpid()}

    def pid(self) -> int:
        return os.getpid()

    def last_seq(self) -> int:
        return self._last_seq

    def push(self, *, reporter: str, batch: int, events: list[dict]) -> int:
        """Store ``events`` (validated, given seqs) durably and return the last seq given to
        them. A batch already stored under the same (reporter, batch) is not stored again:
        its original last seq comes back. An invalid event rejects the whole batch."""
        if not isinstance(reporter, str) or not reporter or reporter == MONITOR_SRC:
            raise EventError(f"reporter must be a non-empty name other than {MONITOR_SRC!r}")
        if not isinstance(batch, int) or isinstance(batch, bool):
            raise EventError(f"batch must be an integer, not {batch!r}")
        with self._transaction():
            done = self._done.get((reporter, batch))
            if done is not None:
                return done
            checked = []
            for e in events:
                e = validate_event(e)
                if e["run"] != self.run_id:
                    raise EventError(
                        f"{e['kind']} event for run {e['run']!r} pushed to the monitor of run "
                        f"{self.run_id!r}: give the reporter this run's id"
                    )
                e.pop("seq", None)
                e.pop("batch_end", None)
                e["src"], e["batch"] = reporter, batch
                checked.append(e)
            if not checked:
                return self._last_seq
            for e in checked:
                self._emit(e)
            last = checked[-1]["seq"]
            self._derive(now=self._tick(None))
            self._commit()
            self._write_files(force=False)
            return last

    def events(self, *, since_seq: int = 0, limit: int = 1000) -> list[dict]:
        """Stored events with ``seq > since_seq``, oldest first, at most ``limit``."""
        limit = max(0, min(int(limit), WINDOW))
        since_seq = max(0, int(since_seq))
        with self._lock:
            if since_seq >= self._last_seq or limit == 0:
                return []
            first = self._window[0]["seq"]
            if since_seq + 1 >= first:
                start = since_seq + 1 - first
                return list(itertools.islice(self._window, start, start + limit))
            return self._read_file(since_seq=since_seq, limit=limit)

    def check_health(self, *, now: float | None = None) -> dict[str, str]:
        """Judge every worker at ``now`` (default: the clock), store an alert per change,
        rewrite HEARTBEAT.txt; returns ``{worker: health}``."""
        with self._transaction():
            self._health(now=self._tick(now))
            self._commit()
            self._write_files(force=True)
            return {w.worker: w.health.value for w in self._workers.values()}

    def finish(self, *, status: str, error: str | None = None) -> int:
        """Mark the run terminal (``succeeded`` or ``failed``) with a stage event carrying
        ``terminal: true``; a second call changes nothing. Returns the last seq."""
        try:
            run_status = RunStatus(status)
        except ValueError:
            raise MonitorError(
                f"finish status is {status!r}; use 'succeeded' or 'failed'"
            ) from None
        if not run_status.is_terminal():
            raise MonitorError("finish status must be 'succeeded' or 'failed', not 'running'")
        with self._transaction():
            if self._status.is_terminal():
                return self._last_seq
            now = self._tick(None)
            self._health(now=now)
            failed = run_status is RunStatus.FAILED
            status = StageStatus.FAILED if failed else StageStatus.FINISHED
            event = self._own_event(
                Kind.STAGE,
                now=now,
                status=status.value,
                error=error,
                terminal=True,
                run_status=run_status.value,
            )
            self._emit(event)
            self._commit()
            self._write_files(force=True)
            return self._last_seq

    def reopen(self) -> int:
        """A resumed run is running again: a stage event with ``resumed: true`` clears the
        terminal status (no-op when the run is not terminal). Returns the last seq."""
        with self._transaction():
            if not self._status.is_terminal():
                return self._last_seq
            now = self._tick(None)
            event = self._own_event(
                Kind.STAGE,
                now=now,
                status=StageStatus.STARTED.value,
                resumed=True,
                run_status=RunStatus.RUNNING.value,
            )
            self._emit(event)
            self._commit()
            self._write_files(force=True)
            return self._last_seq

    def is_terminal(self) -> bool:
        return self._status.is_terminal()

    def summary(self) -> dict:
        """The run at a glance: stages, trials with their latest metrics, workers with
        health and ages, recent alerts, terminal status."""
        with self._lock:
            now = self._tick(None)
            return {
                "run": self.run_id,
                "last_seq": self._last_seq,
                "status": self._status.value,
                "terminal": self._status.is_terminal(),
                "error": self._error,
                "now": now,
                "heartbeat_s": self.heartbeat_s,
                "stall_timeout_s": self.stall_timeout_s,
                "stages": [dict(s) for s in self._stages.values()],
                "trials": [
                    {
                        "trial": t.trial,
                        "stage": t.stage,
                        "step": t.step,
                        "epoch": t.epoch,
                        "metrics": dict(t.metrics),
                        "updated": t.updated,
                    }
                    for t in self._trials.values()
                ],
                "workers": [self._worker_row(w, now) for w in self._workers.values()],
                "alerts": list(self._alerts),
            }

    # ------------------------------------------------------------------ storage

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """Hold the lock; if anything fails after events were queued, forget them and
        rebuild the state from the file, which holds none of them."""
        with self._lock:
            try:
                yield
            except BaseException:
                if self._pending:
                    self._pending = []
                    self._rebuild()
                raise

    def _reset(self) -> None:
        self._last_seq = 0
        self._size = 0
        self._window: deque[dict] = deque(maxlen=self._window_size)
        self._index: list[int] = []  # byte offset of seq k * _INDEX_STRIDE + 1
        self._done: dict[tuple[str, int], int] = {}
        self._pending: list[dict] = []
        self._workers: dict[str, _Worker] = {}
        self._trials: dict[str | None, _Trial] = {}
        self._stages: dict[tuple[str | None, str | None], dict] = {}
        self._alerts: deque[dict] = deque(maxlen=100)
        self._alert_keys: set[tuple] = set()
        self._changed_trials: set[str | None] = set()
        self._progress_lines: list[str] = []
        self._progress_written = -1
        self._heartbeat_written_at = -math.inf
        self._status = RunStatus.RUNNING
        self._error: str | None = None
        self._now = self._clock()

    def _rebuild(self) -> None:
        """State from ``events.jsonl``: every complete write replayed, a torn tail cut off."""
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None
            self._reset()
            self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            committed, dropped = 0, 0
            group: list[tuple[dict, int]] = []
            with open(self._path, "rb") as f:
                offset = 0
                for n, raw in enumerate(f, 1):
                    start, offset = offset, offset + len(raw)
                    event = _parse_line(raw)
                    if event is None:  # torn or garbled: fine only if nothing complete follows
                        rest = f.read()
                        if b'"batch_end":true' in rest:
                            raise EventLogCorruptError(
                                f"{self._path} line {n} is damaged but complete writes follow "
                                "it; the file was edited or the disk is failing. Move it aside "
                                "to start the monitor with an empty log."
                            )
                        dropped += 1 + rest.count(b"\n")
                        break
                    expected = self._last_seq + len(group) + 1
                    if event.get("seq") != expected:
                        raise EventLogCorruptError(
                            f"{self._path} line {n} has seq {event.get('seq')!r}, expected "
                            f"{expected}: the log is not one monitor's output. Move it aside."
                        )
                    group.append((event, start))
                    if event.get("batch_end"):
                        for e, off in group:
                            self._apply(e)
                            self._record(e, off)
                        group, committed = [], offset
            dropped += len(group)
            self._changed_trials.clear()
            if committed < os.path.getsize(self._path):
                log.warning(
                    "%s: cut %d unacknowledged line(s) after byte %d (a write torn by a crash)",
                    self._path,
                    dropped,
                    committed,
                )
                os.truncate(self._path, committed)
                os.fsync(self._fd)
            self._size = committed

    def _record(self, event: dict, offset: int) -> None:
        """Book a stored event: seq, window, file index, idempotency key."""
        seq = event["seq"]
        self._last_seq = seq
        self._window.append(event)
        if (seq - 1) % _INDEX_STRIDE == 0:
            self._index.append(offset)
        if event.get("src") != MONITOR_SRC and event.get("batch") is not None:
            key = (event["src"], event["batch"])
            self._done[key] = max(seq, self._done.get(key, 0))

    def _emit(self, event: dict) -> None:
        """Give ``event`` the next seq, apply it to the state, queue it for ``_commit``."""
        event["seq"] = self._last_seq + len(self._pending) + 1
        self._pending.append(event)
        self._apply(event)

    def _commit(self) -> None:
        """Append the queued events as one write, fsync, then book them. On failure the
        state is rebuilt from the file (which holds none of them) and the error raised."""
        if not self._pending:
            return
        group, self._pending = self._pending, []
        group[-1]["batch_end"] = True
        lines = [(dumps(e) + "\n").encode() for e in group]
        data = b"".join(lines)
        try:
            _write_all(self._fd, data)
            os.fsync(self._fd)
        except OSError as exc:
            try:
                os.truncate(self._path, self._size)
            finally:
                self._rebuild()
            raise MonitorError(
                f"could not write {len(group)} event(s) to {self._path}: {exc.strerror}; "
                "free disk space or fix permissions, then push again"
            ) from None
        offset = self._size
        for e, line in zip(group, lines, strict=True):
            self._record(e, offset)
            offset += len(line)
        self._size = offset

    def _read_file(self, *, since_seq: int, limit: int) -> list[dict]:
        block = since_seq // _INDEX_STRIDE
        seq = block * _INDEX_STRIDE  # the seq just before the line at self._index[block]
        out: list[dict] = []
        with open(self._path, "rb") as f:
            f.seek(self._index[block])
            for raw in f:
                seq += 1
                if seq > self._last_seq or len(out) >= limit:
                    break
                if seq > since_seq:
                    out.append(json.loads(raw))
        return out

    def _own_event(self, kind: Kind, *, now: float, **fields: Any) -> dict:
        event = {
            "time": now,
            "run": self.run_id,
            "trial": None,
            "stage": None,
            "worker": None,
            "kind": kind.value,
            **fields,
            "src": MONITOR_SRC,
            "batch": None,
        }
        return validate_event(event)

    # ------------------------------------------------------------------ state from events

    def _tick(self, now: float | None) -> float:
        """The monitor's time: the clock (or ``now``), never earlier than before."""
        self._now = max(self._now, self._clock() if now is None else float(now))
        return self._now

    def _apply(self, e: dict) -> None:
        """Fold one event into the state. Pure function of the event sequence, so a replay
        of the file gives the same state."""
        kind, t = e["kind"], e["time"]
        if e["src"] == MONITOR_SRC:  # about a worker, not from it: no sign of life
            w = self._workers.get(e["worker"]) if e.get("worker") else None
        else:
            w = self._touch_worker(e) if e.get("worker") else None
        if kind == Kind.HEARTBEAT.value and w is not None:
            w.host, w.pid, w.rss_mb, w.gpus = e["host"], e["pid"], e["rss_mb"], e["gpus"]
            step = e.get("progress_step")
            if step is not None and step > (w.progress_step or 0):
                w.progress_step = step
                w.last_progress = max(w.last_progress, t)
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
            self._alerts.append(e)
            self._alert_keys.add((e["trial"], e["code"], e.get("epoch")))
            if e.get("health") and w is not None:
                w.health = Health(e["health"])
            who = f" {e['worker']}" if e.get("worker") else ""
            self._line(e, f"ALERT {e['level']} {e['code']}{who}: {e['message']}")

    def _touch_worker(self, e: dict) -> _Worker:
        t = e["time"]
        w = self._workers.get(e["worker"])
        if w is None:
            w = self._workers[e["worker"]] = _Worker(
                worker=e["worker"], first_seen=t, last_beat=t, last_progress=t
            )
        w.last_beat = max(w.last_beat, t)
        if e.get("trial") is not None:
            w.trial = e["trial"]
        if e.get("stage") is not None:
            w.stage = e["stage"]
        return w

    def _trial(self, e: dict) -> _Trial:
        tr = self._trials.get(e["trial"])
        if tr is None:
            tr = self._trials[e["trial"]] = _Trial(trial=e["trial"])
        tr.stage = e["stage"] or tr.stage
        tr.worker = e["worker"] or tr.worker
        tr.updated = e["time"]
        return tr

    def _apply_progress(self, e: dict, w: _Worker | None) -> None:
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

    def _complete(self, e: dict, tr: _Trial, epochs: Iterable[int]) -> None:
        for x in sorted(set(epochs) - tr.complete):
            tr.complete.add(x)
            self._changed_trials.add(tr.trial)
            shown = " ".join(f"{k}={_num(v)}" for k, v in tr.epochs[x].items())
            self._line(e, f"epoch {x}: {shown}", trial=tr.trial)

    def _apply_stage(self, e: dict, w: _Worker | None) -> None:
        status = e["status"]
        if e.get("resumed"):
            self._status, self._error = RunStatus.RUNNING, None
            self._line(e, "run resumed")
            return
        if e.get("terminal"):
            self._status = RunStatus(e["run_status"])
            self._error = e.get("error")
            err = f": {e['error']}" if e.get("error") else ""
            self._line(e, f"run {self._status.value}{err}")
            return
        key = (e["trial"], e["stage"])
        st = self._stages.setdefault(
            key,
            {
                "stage": e["stage"],
                "trial": e["trial"],
                "status": status,
                "started": None,
                "ended": None,
                "error": None,
                "worker": e["worker"],
            },
        )
        st["status"], st["worker"] = status, e["worker"] or st["worker"]
        if status == StageStatus.STARTED.value:
            st["started"], st["ended"], st["error"] = e["time"], None, None
        else:
            st["ended"], st["error"] = e["time"], e.get("error")
        if w is not None:
            w.stage_status = status
            w.error = e.get("error")
            if status == StageStatus.STARTED.value:
                w.last_progress = max(w.last_progress, e["time"])
        if status != StageStatus.STARTED.value and e["trial"] in self._trials:
            tr = self._trials[e["trial"]]
            self._complete(e, tr, tr.epochs)
        name = e["stage"] or "stage"
        by = f" on {e['worker']}" if e.get("worker") else ""
        if status == StageStatus.FAILED.value:
            text = f"{name} FAILED{by}: {e.get('error') or 'no error message'}"
            tail = e.get("last_log_lines") or []
            text += "".join(f"\n    | {line}" for line in tail[-20:])
        else:
            text = f"{name} {status}{by}"
        self._line(e, text)

    def _line(self, e: dict, text: str, *, trial: str | None = None) -> None:
        trial = trial if trial is not None else e.get("trial")
        scope = "/".join(x for x in (trial, e.get("stage")) if x)
        scope = f"[{scope}] " if scope else ""
        self._progress_lines.append(f"{_stamp(e['time'])}  {scope}{text}")

    # ------------------------------------------------------------------ derived alerts

    def _derive(self, *, now: float) -> None:
        """Alerts that the events just applied call for: training curves, then health."""
        changed, self._changed_trials = self._changed_trials, set()
        for trial in sorted(changed, key=lambda x: (x is not None, x or "")):
            self._diagnose(self._trials[trial], now=now)
        self._health(now=now)

    def _diagnose(self, tr: _Trial, *, now: float) -> None:
        if not tr.complete:
            return
        last = max(tr.complete)
        names = list(dict.fromkeys(k for x in sorted(tr.complete) for k in tr.epochs[x]))
        history = {
            k: [tr.epochs[x].get(k) if x in tr.complete else None for x in range(1, last + 1)]
            for k in names
        }
        targets = [t for t in self.targets if t.metric in history]
        milestones = [m for m in self.milestones if m.metric in history]
        try:
            findings = live_alerts(history, targets=targets, milestones=milestones)
        except DiagnosisError as exc:
            log.warning("run %s trial %s: no live diagnosis: %s", self.run_id, tr.trial, exc)
            return
        for f in findings:
            if (tr.trial, f.code, f.epoch) in self._alert_keys:
                continue
            level = f.severity if f.severity in {a.value for a in AlertLevel} else "warning"
            who = f"trial {tr.trial}: " if tr.trial else ""
            alert = self._own_event(
                Kind.ALERT, now=now, level=level, code=f.code, message=who + f.text, epoch=f.epoch
            )
            alert.update(trial=tr.trial, stage=tr.stage, worker=tr.worker)
            self._emit(alert)

    def _health(self, *, now: float) -> None:
        if self._status.is_terminal():
            return
        for w in self._workers.values():
            new = self._judge(w, now)
            if new is w.health:
                continue
            level, message = self._health_message(w, new, now)
            alert = self._own_event(
                Kind.ALERT,
                now=now,
                level=level,
                code=f"health:{new.value}",
                message=message,
                health=new.value,
            )
            alert.update(worker=w.worker, trial=w.trial, stage=w.stage)
            self._emit(alert)

    def _judge(self, w: _Worker, now: float) -> Health:
        if w.stage_status == StageStatus.FAILED.value:
            return Health.FAILED
        if w.stage_status == StageStatus.FINISHED.value:
            return Health.FINISHED
        if now - w.last_beat > 2 * self.heartbeat_s:
            return Health.DEAD
        if now - w.last_progress > self.stall_timeout_s:
            return Health.STALLED
        return Health.OK

    def _health_message(self, w: _Worker, new: Health, now: float) -> tuple[str, str]:
        where = f" ({w.host} pid {w.pid})" if w.host else ""
        name = f"worker {w.worker}{where}"
        stage = w.stage or "its stage"
        if new is Health.DEAD:
            return "critical", (
                f"{name} is dead: no heartbeat for {now - w.last_beat:.0f} s "
                f"(limit {2 * self.heartbeat_s:.0f} s)"
            )
        if new is Health.STALLED:
            return "warning", (
                f"{name} is stalled: alive, but no progress for {now - w.last_progress:.0f} s "
                f"(stall timeout {self.stall_timeout_s:.0f} s); a stuck dataloader or "
                "collective call looks like this"
            )
        if new is Health.FAILED:
            return "critical", f"{name} failed in {stage}: {w.error or 'no error message'}"
        if new is Health.FINISHED:
            return "info", f"{name} finished {stage}"
        if w.health in (Health.DEAD, Health.STALLED):
            return "info", f"{name} recovered: was {w.health.value}, progressing again"
        return "info", f"{name} started {stage}"

    # ------------------------------------------------------------------ readable files

    def _worker_row(self, w: _Worker, now: float) -> dict:
        return {
            "worker": w.worker,
            "health": w.health.value,
            "host": w.host,
            "pid": w.pid,
            "trial": w.trial,
            "stage": w.stage,
            "rss_mb": w.rss_mb,
            "gpus": w.gpus,
            "progress_step": w.progress_step,
            "last_beat_age_s": max(0.0, now - w.last_beat),
            "last_progress_age_s": max(0.0, now - w.last_progress),
        }

    def _write_files(self, *, force: bool) -> None:
        """PROGRESS.txt when it has new lines; HEARTBEAT.txt when forced, when a health
        changed, or at most once a second on pushes."""
        try:
            if len(self._progress_lines) != self._progress_written:
                head = f"# run {self.run_id}: stage starts and ends, epochs, alerts, errors\n"
                body = "".join(line + "\n" for line in self._progress_lines)
                write_bytes_atomic(self.run_dir / PROGRESS_FILE, (head + body).encode())
                self._progress_written = len(self._progress_lines)
                force = True  # a new milestone may be a health change
            if force or time.monotonic() - self._heartbeat_written_at >= _HEARTBEAT_FILE_EVERY_S:
                write_bytes_atomic(self.run_dir / HEARTBEAT_FILE, self._heartbeat_text().encode())
                self._heartbeat_written_at = time.monotonic()
        except OSError as exc:  # the events are safe; these files are a view of them
            log.warning("run %s: could not rewrite PROGRESS/HEARTBEAT: %s", self.run_id, exc)

    def _heartbeat_text(self) -> str:
        now = self._now
        lines = [
            f"# run {self.run_id} ({self._status.value}) at {_stamp(now)} UTC: heartbeat every "
            f"{self.heartbeat_s:g} s, dead after {2 * self.heartbeat_s:g} s without one, "
            f"stalled after {self.stall_timeout_s:g} s without progress",
        ]
        header = (
            "worker",
            "health",
            "host",
            "pid",
            "beat_age_s",
            "progress_age_s",
            "rss_mb",
            "step",
            "trial",
            "stage",
        )
        rows = [header]
        for w in self._workers.values():
            r = self._worker_row(w, now)
            rows.append(
                (
                    w.worker,
                    r["health"],
                    w.host or "-",
                    str(w.pid or "-"),
                    _age(r["last_beat_age_s"]),
                    _age(r["last_progress_age_s"]),
                    _num(w.rss_mb) if w.rss_mb is not None else "-",
                    str(w.progress_step if w.progress_step is not None else "-"),
                    w.trial or "-",
                    w.stage or "-",
                )
            )
        widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
        lines += [
            "  ".join(c.ljust(n) for c, n in zip(r, widths, strict=True)).rstrip() for r in rows
        ]
        if not self._workers:
            lines.append("(no worker has reported yet)")
        return "\n".join(lines) + "\n"

    def _check_loop(self, every_s: float) -> None:
        while True:
            time.sleep(every_s)
            if self._status.is_terminal():
                continue  # an ended run: its files stay as finish() left them
            try:
                self.check_health()
            except Exception:  # keep checking; the next push or check may work
                log.exception("run %s: periodic health check failed", self.run_id)


RunMonitor = ray.remote(MonitorCore)


# --------------------------------------------------------------------------- helpers


def start_monitor(
    *,
    run_id: str,
    run_dir: str | os.PathLike,
    heartbeat_s: float = 30.0,
    stall_timeout_s: float = 300.0,
    targets: Sequence[str] = (),
    milestones: Sequence[str] = (),
    check_every_s: float | None = None,
    window: int = WINDOW,
    clock: Callable[[], float] = time.time,
    ready_timeout_s: float = 120.0,
) -> ray.actor.ActorHandle:
    """Create the run's monitor (named ``run:<run_id>`` in namespace ``tether``, detached,
    restartable, on the head node), or return the existing one. Waits until it answers.
    ``check_every_s``: seconds between periodic health checks (None: ``heartbeat_s / 2``;
    0: none, health is then judged only on pushes and ``check_health`` calls). The other
    arguments only matter when this call creates the actor."""
    if not run_id or not isinstance(run_id, str):
        raise MonitorError("run_id must be a non-empty string")
    if not ray.is_initialized():
        raise MonitorError("not connected to Ray: call ray.init(address=...) before start_monitor")
    _parse_goals(targets=targets, milestones=milestones)  # fail here, not in the actor
    if check_every_s is None:
        check_every_s = min(max(heartbeat_s / 2, 0.2), 15.0)
    handle = RunMonitor.options(
        name=actor_name(run_id),
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=-1,
        num_cpus=0,
        resources={HEAD_NODE_RESOURCE: 0.001},
    ).remote(
        run_id=run_id,
        run_dir=str(Path(run_dir).resolve()),
        heartbeat_s=heartbeat_s,
        stall_timeout_s=stall_timeout_s,
        targets=tuple(targets),
        milestones=tuple(milestones),
        check_every_s=check_every_s,
        window=window,
        clock=clock,
    )
    try:
        ray.get(handle.ready.remote(), timeout=ready_timeout_s)
    except ray.exceptions.GetTimeoutError:
        raise MonitorError(
            f"the monitor of run {run_id!r} did not start within {ready_timeout_s:.0f} s: is "
            "the head node up (`ray status`)?"
        ) from None
    except ray.exceptions.RayActorError as exc:
        raise MonitorError(f"the monitor of run {run_id!r} could not start: {exc}") from None
    return handle


def get_monitor(*, run_id: str) -> ray.actor.ActorHandle:
    """The handle of a running monitor; :class:`MonitorNotFoundError` when there is none."""
    if not ray.is_initialized():  # ray.get_actor would start a throwaway local Ray instead
        raise MonitorError("not connected to Ray: call ray.init(address=...) first")
    try:
        return ray.get_actor(actor_name(run_id), namespace=NAMESPACE)
    except ValueError:
        raise MonitorNotFoundError(
            f"no run monitor for run {run_id!r} on this Ray cluster (actor "
            f"{actor_name(run_id)!r} in namespace {NAMESPACE!r}): check the run id, and that "
            "this is the cluster the run was submitted to"
        ) from None


def stop_monitor(*, run_id: str) -> bool:
    """End the run's monitor for good (events.jsonl stays); False when there was none."""
    try:
        handle = get_monitor(run_id=run_id)
    except MonitorNotFoundError:
        return False
    ray.kill(handle, no_restart=True)
    return True


# --------------------------------------------------------------------------- small helpers


def _parse_goals(
    *, targets: Sequence[str], milestones: Sequence[str]
) -> tuple[list[Target], list[Milestone]]:
    try:
        return [Target.parse(t) for t in targets], [Milestone.parse(m) for m in milestones]
    except DiagnosisError as exc:
        raise MonitorError(str(exc)) from None


def _parse_line(raw: bytes) -> dict | None:
    """A complete stored event, or None for a torn (no newline) or unreadable line."""
    if not raw.endswith(b"\n"):
        return None
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _stamp(t: float) -> str:
    try:
        return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return f"t={t:.0f}"


def _age(seconds: float) -> str:
    return f"{seconds:.1f}" if seconds < 100 else f"{seconds:.0f}"


def _num(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}" if math.isfinite(v) else str(v)
    return str(v)
