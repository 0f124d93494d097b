"""The batching reporter: what every task, and the user's own training code, reports through.

The hot path (``report``, ``metric``, ``log``...) only builds a small tuple and appends it to
a ``collections.deque``: no lock, no I/O, no Ray call. One background daemon thread per
reporter turns the queue into events (checked against ``cluster.events``) and ships them in
numbered batches (1, 2, 3... per reporter id) through its transport (``cluster.transports``)
at most every ``flush_interval_s`` or as soon as ``max_batch`` events are queued, resending the
same (reporter, batch) until it is acknowledged (the receiver dedupes), so nothing is lost or
doubled. The same thread sends a heartbeat every ``heartbeat_s`` (``cluster.probe``). An
unreachable receiver makes the queue shed log lines first (``max_queued``), never stage,
alert or artifact events.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import math
import os
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tether.ml.atomic import file_digest

from .batching import BatchShipper
from .errors import ClusterRuntimeError
from .events import (
    EVENT_KINDS,
    IDENTITY_KEYS,
    RECEIVER_KEYS,
    AlertLevel,
    StageStatus,
)
from .probe import fallback_heartbeat_fields, heartbeat_fields

if TYPE_CHECKING:
    from .transports import Transport

LOCAL_RUN_ID = "local"  # the run of events reported with no run id (a plain local script)
MIN_HEARTBEAT_S = 1.0
_NOT_FORWARDED = IDENTITY_KEYS | RECEIVER_KEYS  # what forward() never takes from an event


class ReporterConfigError(ClusterRuntimeError, ValueError):
    """A reporter was configured with a value it cannot work with."""


@dataclass(frozen=True)
class ArtifactRecord:
    """What :meth:`Reporter.artifact` recorded about a file."""

    path: str
    bytes: int
    sha256: str


@dataclass(frozen=True)
class ReporterStats:
    """Counters of one reporter (read them any time; they lag the hot path by one flush)."""

    worker: str
    mode: str
    queued: int  # events waiting in the queue (not yet in a batch)
    pending: int  # events in the batch being sent (0 when none)
    sent_events: int  # events acknowledged by the transport
    sent_batches: int
    last_seq: int | None  # what the transport last acknowledged (None: it does not say)
    failed_attempts: int  # send attempts that raised (each retried)
    dropped: int  # shed from an overflowing queue (see max_queued), or reported after close
    invalid: int  # events that broke the schema and were sent as a reporter:bad_event alert


_LIVE: weakref.WeakSet[Reporter] = weakref.WeakSet()


class Reporter:
    """Reports progress, metrics, stage changes, alerts, artifacts and log lines of one worker
    (a task, or the user's training code) and beats a heartbeat.

    Every reporting method is non-blocking (one ``deque.append``, no lock, no I/O) and safe to
    call from any thread; events from one thread keep their order. Call :meth:`close` (or use
    the reporter as a context manager) to flush what is left and stop the thread; reporters
    still open at interpreter exit are closed by an ``atexit`` hook.

    ``clock`` gives event times (epoch seconds); ``monotonic`` paces flushes and heartbeats;
    ``probe`` gives the heartbeat's kind fields. ``worker`` defaults to a fresh uuid-based id.
    """

    def __init__(
        self,
        *,
        transport: Transport,
        run_id: str | None = None,
        trial: str | None = None,
        stage: str | None = None,
        heartbeat_s: float = 30.0,
        flush_interval_s: float = 0.5,
        max_batch: int = 512,
        max_queued: int = 200_000,
        max_send_attempts: int = 5,
        retry_backoff_s: float = 0.2,
        worker: str | None = None,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
        probe: Callable[[], dict] = heartbeat_fields,
    ) -> None:
        _check_settings(
            heartbeat_s=heartbeat_s, names={"run_id": run_id, "trial": trial, "stage": stage},
            flush_interval_s=flush_interval_s, max_batch=max_batch, max_queued=max_queued,
            max_send_attempts=max_send_attempts,
        )  # fmt: skip
        self.transport = transport
        self.run_id = run_id
        self.run = run_id or LOCAL_RUN_ID  # the events' "run" field
        self.trial = trial
        self.stage_name = stage
        self.worker = worker or f"w-{uuid.uuid4().hex[:12]}"
        self.heartbeat_s = float(heartbeat_s)
        self.flush_interval_s = float(flush_interval_s)
        self.max_batch = int(max_batch)
        self.max_queued = int(max_queued)
        self.max_send_attempts = int(max_send_attempts)
        self.retry_backoff_s = float(retry_backoff_s)
        self._clock = clock
        self._monotonic = monotonic
        self._probe = probe
        self.pid = os.getpid()

        # Items: (time, kind, fields) tuples, (time, "progress", step, epoch, metrics,
        # epoch_end) from report(), or a threading.Event flush marker.
        self._q: collections.deque = collections.deque()
        self._abandon = threading.Event()  # close gave up: stop retrying
        self._shipper = BatchShipper(
            self._q, transport=transport, run=self.run, trial=trial, stage=stage,
            worker=self.worker, max_batch=self.max_batch, max_queued=self.max_queued,
            max_send_attempts=self.max_send_attempts, retry_backoff_s=self.retry_backoff_s,
            abandon=self._abandon, clock=clock,
        )  # fmt: skip
        self._wake = threading.Event()
        self._stopping = False
        self._urgent = False
        self._closed = False
        self._close_lock = threading.Lock()
        self._close_result: bool | None = None
        self._dropped = 0  # reported after close, or not acknowledged before close

        self._thread = threading.Thread(
            target=self._run, name=f"tether-reporter-{self.worker}", daemon=True
        )
        self._thread.start()
        _LIVE.add(self)

    # ---------------------------------------------------------------- hot path

    def report(
        self,
        *,
        step: int | None = None,
        epoch: int | None = None,
        metrics: Mapping | None = None,
        epoch_end: bool = False,
    ) -> None:
        """A progress event: the training loop reached ``step`` (and/or ``epoch``) with these
        ``metrics`` (copied, so the caller may reuse the dict). ``epoch_end``: these are the
        epoch's complete metrics (train and validation), what the monitor's live alerts
        read. Non-blocking."""
        if self._closed:
            self._dropped += 1
            return
        if metrics:
            metrics = metrics.copy() if type(metrics) is dict else dict(metrics)
        q = self._q
        # A flat tuple, no per-call dict: the event is built on the reporter's thread.
        q.append((self._clock(), "progress", step, epoch, metrics, epoch_end))
        if len(q) >= self.max_batch and not self._wake.is_set():
            self._wake.set()

    def metric(
        self, name: str, value: float, *, step: int | None = None, epoch: int | None = None
    ) -> None:
        """A single named metric value. Non-blocking."""
        self._put("metric", {"name": name, "value": value, "step": step, "epoch": epoch})

    def log(self, line: str, *, stream: str = "stdout") -> None:
        """A log line (``stream`` "stdout" or "stderr"). Non-blocking."""
        self._put("log", {"stream": stream, "line": line})

    def stage(self, name: str, status: StageStatus | str, **fields: Any) -> None:
        """A stage status change: ``started``, ``finished`` or ``failed`` (then with ``error=``
        and ``last_log_lines=``). The event's ``stage`` is ``name``. Sent at the next flush;
        call :meth:`flush` after a terminal status if the process may exit right away."""
        bad = IDENTITY_KEYS.intersection(fields)
        if bad:
            raise ReporterConfigError(f"stage(): {sorted(bad)} are set by the reporter")
        try:
            status = StageStatus(status).value
        except ValueError:
            allowed = ", ".join(s.value for s in StageStatus)
            raise ReporterConfigError(f"stage status {status!r}: use one of {allowed}") from None
        self._put("stage", {"stage": name, "status": status, **fields})

    def alert(
        self, message: str, *, level: AlertLevel | str = "warning", code: str = "user"
    ) -> None:
        """An alert shown prominently by the TUI (``level``: info, warning, critical)."""
        try:
            level = AlertLevel(level).value
        except ValueError:
            allowed = ", ".join(a.value for a in AlertLevel)
            raise ReporterConfigError(f"alert level {level!r}: use one of {allowed}") from None
        self._put("alert", {"level": level, "code": code, "message": message})

    def artifact(
        self, path: str | os.PathLike[str], *, digest: tuple[int, str] | None = None
    ) -> ArtifactRecord:
        """Record that the file at ``path`` was produced: an ``artifact`` event with its path,
        size and sha256. ``digest`` is ``(size, sha256)`` when the caller has it (e.g. the
        artifact sink verified it; ``path`` is then the path it was stored under), else it is
        computed now on the caller's thread. Only the event: shipping the file is the
        artifact sink's job."""
        size, sha256 = digest if digest is not None else file_digest(Path(path))
        rec = ArtifactRecord(path=os.fspath(path), bytes=size, sha256=sha256)
        self._put("artifact", {"path": rec.path, "bytes": rec.bytes, "sha256": rec.sha256})
        return rec

    def forward(self, event: Mapping) -> None:
        """Queue an event built elsewhere (a parsed ``TETHER`` line): its ``kind`` and kind
        fields are kept, its ``time`` when numeric, and its ``worker`` when it names one (a
        command stage's own reporter: its heartbeats say its pid and RSS, not this
        process's); run, trial (and stage, except for ``stage`` events) are this reporter's,
        and the worker too when the event names none. Non-blocking."""
        kind = event.get("kind", "progress")
        if kind not in EVENT_KINDS:
            raise ReporterConfigError(f"forward(): unknown event kind {kind!r}")
        t = event.get("time")
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t):
            t = self._clock()
        fields = {k: v for k, v in event.items() if k not in _NOT_FORWARDED}
        if kind == "stage" and "stage" in event:
            fields["stage"] = event["stage"]
        worker = event.get("worker")
        if worker and type(worker) is str:
            fields["worker"] = worker
        if self._closed:
            self._dropped += 1
            return
        q = self._q
        q.append((t, kind, fields))
        if len(q) >= self.max_batch and not self._wake.is_set():
            self._wake.set()

    def _put(self, kind: str, fields: dict) -> None:
        if self._closed:
            self._dropped += 1
            return
        q = self._q
        q.append((self._clock(), kind, fields))
        if len(q) >= self.max_batch and not self._wake.is_set():
            self._wake.set()

    # ---------------------------------------------------------------- control

    @property
    def mode(self) -> str:
        """Where events go: ``ray``, ``file`` or ``stdout`` (the transport's mode)."""
        return getattr(self.transport, "mode", type(self.transport).__name__)

    @property
    def closed(self) -> bool:
        return self._closed

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every event queued before this call was acknowledged; False when that
        did not happen within ``timeout`` seconds (None: wait as long as it takes)."""
        if self._thread is threading.current_thread():
            raise RuntimeError("flush() called from the reporter's own thread")
        if not self._thread.is_alive():
            return not self._q and self._shipper.pending is None
        marker = threading.Event()
        self._q.append(marker)
        self._urgent = True
        self._wake.set()
        return marker.wait(timeout)

    def close(self, *, timeout: float | None = 30.0) -> bool:
        """Flush (waiting at most ``timeout`` seconds) and stop the thread. Idempotent: later
        calls return the first call's result. Events reported after close are dropped."""
        with self._close_lock:
            if self._closed:
                return bool(self._close_result)
            self._closed = True
        ok = self.flush(timeout)
        if not ok:
            self._abandon.set()
        self._stopping = True
        self._wake.set()
        self._thread.join(timeout=5.0 if ok else 1.0)
        left = len([i for i in self._q if not isinstance(i, threading.Event)])
        pending = self._shipper.pending
        left += len(pending.events) if pending else 0
        if left:
            self._dropped += left
            print(
                f"tether reporter {self.worker}: {left} events not delivered to "
                f"{self.mode} before close (the receiver did not acknowledge them)",
                file=sys.stderr,
            )
        with contextlib.suppress(Exception):
            self.transport.close()
        _LIVE.discard(self)
        self._close_result = ok and not left
        return self._close_result

    def __enter__(self) -> Reporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def stats(self) -> ReporterStats:
        b = self._shipper
        pending = b.pending
        return ReporterStats(
            worker=self.worker,
            mode=self.mode,
            queued=sum(1 for i in list(self._q) if not isinstance(i, threading.Event)),
            pending=len(pending.events) if pending else 0,
            sent_events=b.sent_events,
            sent_batches=b.sent_batches,
            last_seq=b.last_seq,
            failed_attempts=b.failed_attempts,
            dropped=self._dropped + b.shed,
            invalid=b.invalid,
        )

    # ---------------------------------------------------------------- the thread

    def _run(self) -> None:
        mono = self._monotonic
        next_flush = mono() + self.flush_interval_s
        next_beat = mono()  # the first heartbeat goes out at once
        while True:
            try:
                now = mono()
                if now >= next_beat:
                    beat = self._heartbeat()
                    self._q.append((self._clock(), "heartbeat", beat))
                    next_beat = now + self.heartbeat_s
                    self._urgent = True
                self._shipper.trim()
                stopping = self._stopping
                if stopping or self._urgent or now >= next_flush:
                    self._urgent = False
                    self._shipper.drain(full_only=False)
                    next_flush = mono() + self.flush_interval_s
                else:
                    self._shipper.drain(full_only=True)
                if stopping:
                    return
                timeout = max(0.0, min(next_flush, next_beat) - mono())
                self._wake.wait(timeout)
                self._wake.clear()
            except Exception as exc:  # never let the thread die: report and go on
                print(f"tether reporter {self.worker}: {exc!r}", file=sys.stderr)
                if self._stopping:
                    return
                time.sleep(self.flush_interval_s)

    def _heartbeat(self) -> dict:
        try:
            fields = dict(self._probe())
        except Exception as exc:
            fields = fallback_heartbeat_fields(exc)
        if self._shipper.last_step is not None:
            fields.setdefault("progress_step", self._shipper.last_step)
        return fields


def _check_settings(
    *,
    heartbeat_s: float,
    names: dict[str, str | None],
    flush_interval_s: float,
    max_batch: int,
    max_queued: int,
    max_send_attempts: int,
) -> None:
    if not isinstance(heartbeat_s, (int, float)) or not heartbeat_s >= MIN_HEARTBEAT_S:
        raise ReporterConfigError(
            f"heartbeat_s={heartbeat_s!r}: give a number of seconds >= {MIN_HEARTBEAT_S:g} "
            "(30 is the default; 1 is for tests)"
        )
    for name, value in names.items():
        if value is not None and (not isinstance(value, str) or not value):
            raise ReporterConfigError(f"{name}={value!r}: give a non-empty string or None")
    if not flush_interval_s > 0:
        raise ReporterConfigError(f"flush_interval_s={flush_interval_s!r}: must be > 0")
    if max_batch < 1 or max_queued < max_batch or max_send_attempts < 1:
        raise ReporterConfigError(
            f"max_batch={max_batch}, max_queued={max_queued}, max_send_attempts="
            f"{max_send_attempts}: need max_batch >= 1, max_queued >= max_batch, "
            "max_send_attempts >= 1"
        )


@atexit.register
def _close_live_reporters() -> None:
    for r in list(_LIVE):
        with contextlib.suppress(Exception):
            r.close(timeout=10.0)
