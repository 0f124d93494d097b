"""The reporter's queue seen from its thread: what the hot path appended (flat tuples and
flush markers) turned into numbered batches of events checked against the schema
(``cluster.events``) and sent through the transport until acknowledged; bounded while the
receiver is unreachable by shedding the least precious events first."""

from __future__ import annotations

import collections
import sys
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from .events import coerced, json_safe_fields, surely_valid, validate_event

if TYPE_CHECKING:
    from .transports import Transport

_SHED_FIRST = frozenset({"log"})  # what an overflowing queue drops first, then also:
_SHED_LATER = frozenset({"log", "progress", "metric", "heartbeat"})


class Batch:
    """Events sent together under one number (0 for a batch of flush markers only), and the
    flush markers to set once the batch is acknowledged."""

    __slots__ = ("events", "markers", "number")

    def __init__(self, number: int, events: list[dict], markers: list[threading.Event]):
        self.number = number
        self.events = events
        self.markers = markers


class BatchShipper:
    """Takes batches of at most ``max_batch`` events from the left of ``q`` and sends them
    through ``transport``, each until it is acknowledged (only the reporter's thread calls
    it); ``run``, ``trial``, ``stage`` and ``worker`` stamp each event. Items:
    ``(time, kind, fields)``, ``(time, "progress", step, epoch, metrics, epoch_end)`` from
    ``report()``, or a ``threading.Event`` flush marker. A send that raises is retried
    ``max_send_attempts`` times with a doubling delay from ``retry_backoff_s`` (cut short
    once ``abandon`` is set); the batch then stays pending for the next drain."""

    def __init__(
        self,
        q: collections.deque,
        *,
        transport: Transport,
        run: str,
        trial: str | None,
        stage: str | None,
        worker: str,
        max_batch: int,
        max_queued: int,
        max_send_attempts: int,
        retry_backoff_s: float,
        abandon: threading.Event,
        clock: Callable[[], float],
    ) -> None:
        self.q = q
        self.transport = transport
        self.max_send_attempts, self.retry_backoff_s = max_send_attempts, retry_backoff_s
        self.abandon = abandon
        self.run, self.trial, self.stage, self.worker = run, trial, stage, worker
        self.max_batch, self.max_queued = max_batch, max_queued
        self._clock = clock
        self.shed = 0  # events dropped by trim()
        self.invalid = 0  # events that broke the schema (sent as an alert instead)
        self.last_step: int | None = None  # of the last progress event taken
        self._unreported_shed = 0
        self._next_batch = 1
        self.pending: Batch | None = None  # taken, not yet acknowledged
        self.sent_events = 0  # acknowledged by the transport
        self.sent_batches = 0
        self.last_seq: int | None = None  # what the transport last acknowledged
        self.failed_attempts = 0
        self._failing = False

    @property
    def mode(self) -> str:
        """Where the batches go: the transport's mode (ray, file, stdout)."""
        return getattr(self.transport, "mode", type(self.transport).__name__)

    def trim(self) -> None:
        """Bound the queue while the receiver is unreachable or far behind: past
        ``max_queued`` the oldest log events go; past twice that, the oldest progress, metric
        and heartbeat events too. Stage, alert and artifact events and flush markers stay, in
        order (only the reporter's thread takes from the left of the queue)."""
        q = self.q
        excess = len(q) - self.max_queued
        if excess <= 0:
            return
        sheddable = _SHED_FIRST if len(q) <= 2 * self.max_queued else _SHED_LATER
        kept = []
        dropped = 0
        for _ in range(excess):
            item = q.popleft()
            if type(item) is tuple and item[1] in sheddable:
                dropped += 1
            else:
                kept.append(item)
        q.extendleft(reversed(kept))
        self.shed += dropped
        self._unreported_shed += dropped

    def take(self) -> Batch | None:
        """The next batch: up to max_batch events, ending early after a flush marker."""
        q = self.q
        events: list[dict] = []
        markers: list[threading.Event] = []
        run, trial, stage, worker = self.run, self.trial, self.stage, self.worker
        while len(events) < self.max_batch:
            try:
                item = q.popleft()
            except IndexError:
                break
            if isinstance(item, threading.Event):
                markers.append(item)
                break
            if len(item) == 6:  # report(): (time, "progress", step, epoch, metrics, epoch_end)
                t, kind, step, epoch, metrics, epoch_end = item
                fields = {"step": step, "epoch": epoch, "metrics": metrics or {}}
                if epoch_end:
                    fields["epoch_end"] = True
            else:
                t, kind, fields = item
            ev = {"time": t, "run": run, "trial": trial, "stage": stage, "worker": worker}
            ev["kind"] = kind
            events.append(self._checked(ev, fields))
        if self._unreported_shed and len(events) < self.max_batch:
            n, self._unreported_shed = self._unreported_shed, 0
            ev = {"time": self._clock(), "run": run, "trial": trial, "stage": stage}
            ev.update(worker=worker, kind="alert", level="warning", code="reporter:dropped")
            ev["message"] = (
                f"this reporter dropped {n} events (oldest log lines first) while its queue "
                f"was over {self.max_queued} events: the {self.mode} receiver was unreachable "
                "or far behind"
            )
            events.append(ev)
        if not events and not markers:
            return None
        number = 0
        if events:
            number = self._next_batch
            self._next_batch += 1
        return Batch(number, events, markers)

    def _checked(self, common: dict, fields: dict) -> dict:
        """The event ``common`` + ``fields`` when it follows the schema (cluster.events); else
        a coerced copy that does; else an alert saying what was wrong (a receiver rejects a
        batch with a bad event, which would then be resent forever). Never raises."""
        try:
            ev = {**common, **json_safe_fields(fields)}
            if not surely_valid(ev):
                ev = validate_event(coerced(ev))
        except Exception as exc:  # EventError, or anything odd in a forwarded event
            self.invalid += 1
            return {
                **common,
                "kind": "alert",
                "level": "warning",
                "code": "reporter:bad_event",
                "message": f"dropped an event that breaks the schema: {exc}",
            }
        if ev["kind"] == "progress" and ev["step"] is not None:
            self.last_step = ev["step"]  # heartbeats carry it as progress_step
        return ev

    def drain(self, *, full_only: bool) -> None:
        """Send the pending batch, then batches from the queue: all of it, or only full ones."""
        while True:
            if self.pending is None:
                if full_only and len(self.q) < self.max_batch:
                    return
                batch = self.take()
                if batch is None:
                    return
                self.pending = batch
            batch = self.pending
            if batch.events and not self._send(batch):
                return  # still pending; retried at the next flush
            self.pending = None
            for marker in batch.markers:
                marker.set()

    def _send(self, batch: Batch) -> bool:
        delay = self.retry_backoff_s
        for attempt in range(1, self.max_send_attempts + 1):
            try:
                seq = self.transport.send(
                    reporter=self.worker, batch=batch.number, events=batch.events
                )
            except Exception as exc:
                self.failed_attempts += 1
                if not self._failing:
                    self._failing = True
                    print(
                        f"tether reporter {self.worker}: sending batch {batch.number} to "
                        f"{self.mode} failed ({exc!r}); retrying, nothing is dropped",
                        file=sys.stderr,
                    )
                if attempt == self.max_send_attempts or self.abandon.wait(delay):
                    return False
                delay = min(delay * 2, 5.0)
                continue
            self._failing = False
            if seq is not None:
                self.last_seq = seq
            self.sent_events += len(batch.events)
            self.sent_batches += 1
            return True
        return False
