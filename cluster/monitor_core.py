"""The run monitor's logic, without Ray: ``MonitorCore`` (``cluster.monitor`` makes it the
run's actor; a test may use it in-process).

It is the single writer of ``<run_dir>/events.jsonl`` (``cluster.eventlog``): reporters
``push`` batches of events, the monitor gives each a ``seq`` (1, 2, 3, ... per run, no gaps),
appends the batch and fsyncs it before it answers, so an acknowledged event is never lost. It
folds the events into the run's state (``cluster.monitor_state``), judges each worker's
health (``cluster.health``), applies the training-curve rules of ``ml.diagnose`` live
(``cluster.curve_alerts``), and keeps ``PROGRESS.txt`` and ``HEARTBEAT.txt`` readable
(``cluster.progress_files``).

On a restart ``__init__`` rebuilds every piece of state from ``events.jsonl``: every complete
write is replayed, a torn one cut off. Stored events carry ``src`` (the reporter) and
``batch`` (its batch number), so a retried push of a batch already on disk stores nothing
and returns the seq it got the first time.

Health is judged on every push, on ``check_health`` and periodically; every change is an
``alert`` event (code ``health:<state>``, field ``health``). Times are the events' own
``time`` against the monitor's clock, which never runs backwards; ``check_health(now=...)``
lets tests drive it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from tether.ml.diagnose import DiagnosisError, Milestone, Target

from .curve_alerts import curve_alerts
from .errors import ClusterRuntimeError
from .eventlog import EventLog, StoredEvents
from .events import EventError, Kind, RunStatus, StageStatus, make_event, validate_event
from .health import HealthRules, health_alerts
from .monitor_state import MONITOR_SRC, MonitorState, TrialState
from .progress_files import ProgressFiles, worker_row

log = logging.getLogger(__name__)

EVENTS_FILE = "events.jsonl"
WINDOW = 10_000  # events kept in memory; older ranges are read from the file
_HEARTBEAT_FILE_EVERY_S = 1.0  # HEARTBEAT.txt at most this often on pushes (always on checks)


class MonitorError(ClusterRuntimeError):
    """The run monitor could not do what was asked; the message says what to do."""


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
        self.health_rules = HealthRules(
            heartbeat_s=self.heartbeat_s, stall_timeout_s=self.stall_timeout_s
        )
        self.targets, self.milestones = parse_goals(targets=targets, milestones=milestones)
        self._clock = clock
        self._window_size = max(1, int(window))
        self._lock = threading.RLock()
        self._path = self.run_dir / EVENTS_FILE
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._log: EventLog | None = None
        self._files = ProgressFiles(
            run_dir=self.run_dir, run_id=run_id, heartbeat_every_s=_HEARTBEAT_FILE_EVERY_S
        )
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

    @property
    def _last_seq(self) -> int:
        return self._stored.last_seq

    def push(self, *, reporter: str, batch: int, events: list[dict]) -> int:
        """Store ``events`` (validated, given seqs) durably and return the last seq given to
        them. A batch already stored under the same (reporter, batch) is not stored again:
        its original last seq comes back. An invalid event rejects the whole batch."""
        if not isinstance(reporter, str) or not reporter or reporter == MONITOR_SRC:
            raise EventError(f"reporter must be a non-empty name other than {MONITOR_SRC!r}")
        if not isinstance(batch, int) or isinstance(batch, bool):
            raise EventError(f"batch must be an integer, not {batch!r}")
        with self._transaction():
            done = self._stored.batch_seq(reporter, batch)
            if done is not None:
                return done
            checked = [self._received(e, reporter=reporter, batch=batch) for e in events]
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
            return self._stored.since(since_seq, limit)

    def check_health(self, *, now: float | None = None) -> dict[str, str]:
        """Judge every worker at ``now`` (default: the clock), store an alert per change,
        rewrite HEARTBEAT.txt; returns ``{worker: health}``."""
        with self._transaction():
            self._health(now=self._tick(now))
            self._commit()
            self._write_files(force=True)
            return {w.worker: w.health.value for w in self._state.workers.values()}

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
            if self._state.status.is_terminal():
                return self._last_seq
            now = self._tick(None)
            self._health(now=now)
            failed = run_status is RunStatus.FAILED
            status = StageStatus.FAILED if failed else StageStatus.FINISHED
            event = self._own_event(
                Kind.STAGE, now=now, status=status.value, error=error, terminal=True,
                run_status=run_status.value,
            )  # fmt: skip
            self._emit(event)
            self._commit()
            self._write_files(force=True)
            return self._last_seq

    def reopen(self) -> int:
        """A resumed run is running again: a stage event with ``resumed: true`` clears the
        terminal status (no-op when the run is not terminal). Returns the last seq."""
        with self._transaction():
            if not self._state.status.is_terminal():
                return self._last_seq
            now = self._tick(None)
            event = self._own_event(
                Kind.STAGE, now=now, status=StageStatus.STARTED.value, resumed=True,
                run_status=RunStatus.RUNNING.value,
            )  # fmt: skip
            self._emit(event)
            self._commit()
            self._write_files(force=True)
            return self._last_seq

    def is_terminal(self) -> bool:
        return self._state.status.is_terminal()

    def summary(self) -> dict:
        """The run at a glance: stages, trials with their latest metrics, workers with
        health and ages, recent alerts, terminal status."""
        with self._lock:
            now = self._tick(None)
            s = self._state
            return {
                "run": self.run_id,
                "last_seq": self._last_seq,
                "status": s.status.value,
                "terminal": s.status.is_terminal(),
                "error": s.error,
                "now": now,
                "heartbeat_s": self.heartbeat_s,
                "stall_timeout_s": self.stall_timeout_s,
                "stages": [dict(row) for row in s.stages.values()],
                "trials": [_trial_row(t) for t in s.trials.values()],
                "workers": [worker_row(w, now) for w in s.workers.values()],
                "alerts": list(s.alerts),
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

    def _rebuild(self) -> None:
        """State from ``events.jsonl``: every complete write replayed, a torn tail cut off."""
        with self._lock:
            if self._log is not None:
                self._log.close()
            self._log = EventLog(self._path)
            self._stored = StoredEvents(self._log, window=self._window_size)
            self._pending: list[dict] = []
            self._state = MonitorState()
            self._now = self._clock()
            for event, offset in self._log.replay():
                self._state.apply(event)
                self._stored.record(event, offset)
            self._state.changed_trials.clear()

    def _received(self, e: dict, *, reporter: str, batch: int) -> dict:
        """A pushed event, validated and stamped with who sent it."""
        e = validate_event(e)
        if e["run"] != self.run_id:
            raise EventError(
                f"{e['kind']} event for run {e['run']!r} pushed to the monitor of run "
                f"{self.run_id!r}: give the reporter this run's id"
            )
        e.pop("seq", None)
        e.pop("batch_end", None)
        e["src"], e["batch"] = reporter, batch
        return e

    def _emit(self, event: dict) -> None:
        """Give ``event`` the next seq, apply it to the state, queue it for ``_commit``."""
        event["seq"] = self._last_seq + len(self._pending) + 1
        self._pending.append(event)
        self._state.apply(event)

    def _commit(self) -> None:
        """Append the queued events as one write + fsync, then book them. On failure the
        state is rebuilt from the file (which holds none of them) and the error raised."""
        if not self._pending:
            return
        group, self._pending = self._pending, []
        try:
            offsets = self._log.append(group)
        except OSError as exc:
            self._rebuild()
            raise MonitorError(
                f"could not write {len(group)} event(s) to {self._path}: {exc.strerror}; "
                "free disk space or fix permissions, then push again"
            ) from None
        for e, offset in zip(group, offsets, strict=True):
            self._stored.record(e, offset)

    def _own_event(self, kind: Kind, *, now: float, **fields: Any) -> dict:
        event = make_event(kind=kind, run=self.run_id, time=now, **fields)
        event["src"], event["batch"] = MONITOR_SRC, None
        return event

    def _tick(self, now: float | None) -> float:
        """The monitor's time: the clock (or ``now``), never earlier than before."""
        self._now = max(self._now, self._clock() if now is None else float(now))
        return self._now

    # ------------------------------------------------------------------ derived alerts

    def _derive(self, *, now: float) -> None:
        """Alerts that the events just applied call for: training curves, then health."""
        changed = self._state.take_changed_trials()
        for trial in sorted(changed, key=lambda x: (x is not None, x or "")):
            for fields in curve_alerts(
                self._state, self._state.trials[trial], targets=self.targets,
                milestones=self.milestones, run_id=self.run_id,
            ):  # fmt: skip
                self._emit(self._own_event(Kind.ALERT, now=now, **fields))
        self._health(now=now)

    def _health(self, *, now: float) -> None:
        if self._state.status.is_terminal():
            return
        for fields in health_alerts(self._state, self.health_rules, now):
            self._emit(self._own_event(Kind.ALERT, now=now, **fields))

    def _write_files(self, *, force: bool) -> None:
        self._files.write(self._state, now=self._now, rules=self.health_rules, force=force)

    def _check_loop(self, every_s: float) -> None:
        while True:
            time.sleep(every_s)
            if self._state.status.is_terminal():
                continue  # an ended run: its files stay as finish() left them
            try:
                self.check_health()
            except Exception:  # keep checking; the next push or check may work
                log.exception("run %s: periodic health check failed", self.run_id)


def _trial_row(t: TrialState) -> dict:
    return {
        "trial": t.trial,
        "stage": t.stage,
        "step": t.step,
        "epoch": t.epoch,
        "metrics": dict(t.metrics),
        "updated": t.updated,
    }


def parse_goals(
    *, targets: Sequence[str], milestones: Sequence[str]
) -> tuple[list[Target], list[Milestone]]:
    try:
        return [Target.parse(t) for t in targets], [Milestone.parse(m) for m in milestones]
    except DiagnosisError as exc:
        raise MonitorError(str(exc)) from None
