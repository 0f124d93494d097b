"""Where ``tether watch`` gets a run's events: live from the head, or replayed from the pulled
``results/<run-id>/events.jsonl``.

Both feeds are plain objects whose blocking ``run()`` is meant for a thread (a Textual thread
worker in the app, a daemon thread in the plain watch); they hand events on in **batches**
through ``on_events`` (at most every ``batch_s``, 100 ms, or as soon as ``batch_max``, 500,
events are waiting, whichever comes first), so the UI re-renders ten times a second at most
however fast the run reports, and tell their state through ``on_status``: ``connecting``,
``connected``, ``reconnecting`` (since when, and why), ``ended``, ``failed`` and, for the
replay, ``offline``. Events always reach ``on_events`` before the state change that follows
them (the last batch before ``ended``).

- :class:`LiveFeed` runs :class:`~tether.client.eventstream.EventStream` (the same stream as
  ``tether events -f``): after a cut it resumes from the last seq it yielded, so no event is
  lost or repeated; the model drops duplicates anyway when a feed is started again from its
  ``last_seq`` (after a resume of the run).
- :class:`OfflineFeed` reads the pulled file once, skipping lines that are not events (a torn
  last line of a pull in progress).

The app wraps the callbacks into :class:`EventsArrived` and :class:`FeedChanged` messages
(``post_message`` is thread-safe), so the model is only touched on the UI thread.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from textual.message import Message

from ..errors import TetherError
from ..eventstream import GIVE_UP_S, STREAM_MODULE, EventStream, StreamStatus

BATCH_S = 0.1
BATCH_MAX = 500
EVENTS_FILE = "events.jsonl"

Events = list[Mapping[str, Any]]


@dataclass(frozen=True)
class FeedStatus:
    """A feed's state, as ``RunScreen.set_connection`` takes it: ``since`` is wall-clock
    (``time.time()``) when the state began, ``reason`` one line (why it reconnects or failed,
    or what is replayed), ``hint`` what to do after a failure."""

    state: str  # connecting, connected, reconnecting, ended, failed, offline
    since: float | None
    reason: str | None = None
    last_seq: int = 0
    hint: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.state in ("ended", "failed", "offline")


class EventsArrived(Message):
    """A batch of a run's events, in seq order, from feed number ``feed`` of the app."""

    def __init__(self, run_id: str, events: Events, *, feed: int = 0) -> None:
        super().__init__()
        self.run_id = run_id
        self.events = events
        self.feed = feed


class FeedChanged(Message):
    """The feed (number ``feed`` of the app) of a run changed state."""

    def __init__(self, run_id: str, status: FeedStatus, *, feed: int = 0) -> None:
        super().__init__()
        self.run_id = run_id
        self.status = status
        self.feed = feed


def pulled_events(*, repo: Path, results_dir: str, run_id: str) -> Path:
    """``<repo>/<results_dir>/<run-id>/events.jsonl`` (an absolute results_dir as it is)."""
    return Path(repo) / results_dir / run_id / EVENTS_FILE


class Batcher:
    """Collects events from a producer thread and delivers them in batches: from a flusher
    thread of its own ``batch_s`` after the first waiting event, or from the producer at
    once when ``batch_max`` are waiting. ``flush()`` delivers what waits now (deliveries are
    one at a time, in order); ``close()`` flushes and stops the flusher."""

    def __init__(
        self,
        *,
        deliver: Callable[[Events], None],
        batch_s: float = BATCH_S,
        batch_max: int = BATCH_MAX,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._deliver = deliver
        self._batch_s = batch_s
        self._batch_max = max(1, batch_max)
        self._clock = clock
        self._cond = threading.Condition()
        self._send = threading.Lock()  # one delivery at a time, in order
        self._pending: Events = []
        self._first: float | None = None
        self._closed = False
        self._thread = threading.Thread(target=self._loop, name="tether-watch-batcher", daemon=True)
        self._thread.start()

    def add(self, event: Mapping[str, Any]) -> None:
        with self._cond:
            if not self._pending:
                self._first = self._clock()
            self._pending.append(event)
            full = len(self._pending) >= self._batch_max
            if len(self._pending) == 1:
                self._cond.notify()
        if full:  # delivered by the producer itself: a batch never grows past batch_max
            self.flush()

    def flush(self) -> None:
        with self._send:
            with self._cond:
                batch, self._pending, self._first = self._pending, [], None
            if batch:
                self._deliver(batch)

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()
        self._thread.join(timeout=5)
        self.flush()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed:
                    if self._pending and self._first is not None:
                        left = self._first + self._batch_s - self._clock()
                        if left <= 0:
                            break
                        self._cond.wait(left)
                    else:
                        self._cond.wait()
                if self._closed:
                    return
            self.flush()


class LiveFeed:
    """A run's events from the head, live (``EventStream`` with follow), in batches."""

    def __init__(
        self,
        *,
        head,  # tether.client.head.Head
        run_id: str,
        on_events: Callable[[Events], None],
        on_status: Callable[[FeedStatus], None],
        since: int = 0,
        batch_s: float = BATCH_S,
        batch_max: int = BATCH_MAX,
        give_up_s: float = GIVE_UP_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.run_id = run_id
        self._head = head
        self._on_status = on_status
        self._clock = clock
        self._batcher_args = dict(deliver=on_events, batch_s=batch_s, batch_max=batch_max)
        self._stream = EventStream(
            remote=head.remote,
            python=head.python,
            run_id=run_id,
            since=since,
            follow=True,
            dashboard_port=head.profile.dashboard_port,
            is_pending=self._job_pending,
            on_state=self._state,
            give_up_s=give_up_s,
            clock=clock,
        )
        self._batcher: Batcher | None = None
        self.status = FeedStatus(state="connecting", since=clock(), last_seq=since)
        self.error: TetherError | None = None
        self.events = 0

    @property
    def last_seq(self) -> int:
        return self._stream.last_seq

    def run(self) -> FeedStatus:
        """Stream until the run has ended (``ended``), the stream gave up or cannot start
        (``failed``, with ``error`` set), or ``close()``. Returns the final status."""
        self._batcher = Batcher(**self._batcher_args)
        self._set(self.status)
        try:
            for event in self._stream:
                self.events += 1
                self._batcher.add(event.data)
        except TetherError as exc:
            self.error = exc
            self._batcher.flush()
            line = exc.message.strip().splitlines()[0] if exc.message.strip() else str(exc)
            self._set(
                FeedStatus(
                    state="failed", since=self._clock(), reason=line,
                    last_seq=self.last_seq, hint=exc.hint,
                )
            )  # fmt: skip
        finally:
            self._batcher.close()
        return self.status

    def close(self) -> None:
        """Stop streaming (from any thread); ``run`` returns soon after.

        ``EventStream.close`` from another thread stops at the next line, and a stream that
        prints nothing (a job Ray stopped: its monitor never ends) would live on; on the
        embedded profile the head-side command is a child of this process, so it is ended
        here by its pid. (Over SSH it ends with the connection.)"""
        self._stream.close()
        if getattr(self._head, "is_local", False):
            stop_own_streams(run_id=self.run_id)

    def _job_pending(self) -> bool:
        """The run's Ray job exists and has not ended (its monitor may still be starting)."""
        with self._head.jobs() as jobs:
            return not jobs.status(run_id=self.run_id).is_terminal()

    def _state(self, status: StreamStatus) -> None:
        if self._batcher is not None:
            self._batcher.flush()  # the events before the change reach the app first
        state = status.state.value
        if state == "reconnecting" and status.last_seq == 0 and self._waiting(status.reason):
            state = "connecting"  # a queued or starting job: nothing was lost, nothing is stale
        if state == "connecting" and self.status.state == "connecting":
            since = self.status.since  # connecting since the start, not since the last try
        else:
            since = status.since
        self._set(
            FeedStatus(state=state, since=since, reason=status.reason, last_seq=status.last_seq)
        )

    @staticmethod
    def _waiting(reason: str | None) -> bool:
        return bool(reason) and reason.startswith("waiting for the monitor")

    def _set(self, status: FeedStatus) -> None:
        self.status = status
        self._on_status(status)


class OfflineFeed:
    """A pulled ``events.jsonl`` replayed in batches of ``batch_max``; state ``offline``."""

    def __init__(
        self,
        *,
        path: Path,
        run_id: str,
        on_events: Callable[[Events], None],
        on_status: Callable[[FeedStatus], None],
        batch_max: int = BATCH_MAX,
        since: int = 0,
    ) -> None:
        self.run_id = run_id
        self.path = Path(path)
        self._on_events = on_events
        self._on_status = on_status
        self._batch_max = max(1, batch_max)
        self._since = since
        self._closed = False
        self.events = 0
        self.skipped = 0
        self.status = FeedStatus(state="offline", since=None, reason=f"replaying {self.path}")
        self.error: TetherError | None = None

    def run(self) -> FeedStatus:
        try:
            pulled = self.path.stat().st_mtime
        except OSError as exc:
            self.error = TetherError(
                f"no pulled events for run {self.run_id}: {self.path} cannot be read "
                f"({exc.strerror or exc})",
                hint=f"pull them while the cluster is up: tether pull {self.run_id}",
            )
            self.status = FeedStatus(
                state="failed", since=time.time(), reason=self.error.message,
                hint=self.error.hint,
            )  # fmt: skip
            self._on_status(self.status)
            return self.status
        reason = f"replaying the events pulled at {_hhmmss(pulled)} ({self.path.name})"
        self.status = FeedStatus(state="offline", since=pulled, reason=reason)
        self._on_status(self.status)
        batch: Events = []
        last = self._since
        for event in read_events(self.path):
            if self._closed:
                break
            seq = event.get("seq")
            if isinstance(seq, int) and seq <= self._since:
                continue
            last = seq if isinstance(seq, int) else last
            batch.append(event)
            if len(batch) >= self._batch_max:
                self._deliver(batch)
                batch = []
        if batch:
            self._deliver(batch)
        self.status = FeedStatus(state="offline", since=pulled, reason=reason, last_seq=last)
        self._on_status(self.status)
        return self.status

    def close(self) -> None:
        self._closed = True

    def _deliver(self, batch: Events) -> None:
        self.events += len(batch)
        self._on_events(batch)


def stop_own_streams(*, run_id: str) -> int:
    """TERM this process's own children running ``tether.cluster.stream`` for ``run_id``
    (the local head's stream commands); how many were signalled."""
    import psutil

    count = 0
    for child in psutil.Process().children(recursive=True):
        try:
            argv = child.cmdline()
            if STREAM_MODULE in argv and run_id in argv:
                child.terminate()
                count += 1
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return count


def read_events(path: Path) -> Iterator[dict]:
    """The event objects of a JSON-lines file, in file order; other lines are skipped."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not line.startswith("{"):
                continue
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and "kind" in obj:
                yield obj


def _hhmmss(t: float) -> str:
    return time.strftime("%H:%M:%S", time.localtime(t))
