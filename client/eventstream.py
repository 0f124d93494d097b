"""The laptop end of the event path: a run's events, live, from the head node.

:class:`EventStream` runs ``python -m tether.cluster.stream RUN --since N --dashboard-port P``
on the head over the profile's command channel (``Remote.stream_lines``: SSH, or a subprocess
for the embedded ``local`` profile) and yields each event as a :class:`StreamedEvent`, checked
against the one schema (``tether.cluster.events``, ray-free). The head prints every event with
``seq > N`` once, in order, and exits 0 when the run has ended and all are printed.

When the connection drops (``ConnectionLost``), the head's command dies, or the monitor stays
unreachable (the stream exits 3), it runs the command again with ``--since`` the last seq it
yielded, after a capped backoff (0.5 s, 1 s, 2 s ... 10 s): events with ``seq <=`` the last are
dropped, and a gap (a seq beyond the next one) is never yielded: the command is run again from
the last. So the consumer sees 1, 2, 3 ... exactly once whatever the network does. It gives up
(:class:`EventStreamError`) after ``give_up_s`` without an event (default 300 s).

Which cluster the head-side command reads: ``--dashboard-port`` (the profile's), resolved on
the head to the GCS address of the cluster whose dashboard serves that port
(``cluster/stream.py``). The same works for the embedded cluster (the head is this machine)
and for a head with several clusters, where Ray's ``auto`` may pick another one.

The stream's own state (:class:`StreamStatus`: connecting, connected, reconnecting since T,
ended, failed) goes to ``on_state`` at each change and is readable as ``.status``, so a view
can mark its data stale while reconnecting. Clock and sleep are parameters (tests drive them).
"""

from __future__ import annotations

import contextlib
import json
import shlex
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from enum import Enum
from types import MappingProxyType
from typing import Any

from tether.cluster.events import EventError, Kind, dumps, validate_event

from .errors import HostKeyError, StreamSilent, TetherError
from .remote import CommandFailed, ConnectionLost, Remote, RemoteError
from .remote import backoff_s as remote_backoff_s

STREAM_MODULE = "tether.cluster.stream"
MAX_BACKOFF_S = 10.0
GIVE_UP_S = 300.0  # reconnecting this long without an event: EventStreamError
# No line for this long: the connection may be half-open, so run the command again (a live
# run's workers beat every few seconds; a quiet one just costs a reconnect now and then).
IDLE_S = 300.0
# The exit status of `python -m tether.cluster.stream`: 2 no monitor / no cluster, 3 the
# monitor stayed unreachable (it may be restarting: try again).
_NO_MONITOR, _UNREACHABLE = 2, 3


class EventStreamError(TetherError):
    """The run's events cannot be streamed: unknown run, no cluster, or the head stayed
    unreachable; the message says which, the hint what to do."""


class StreamState(str, Enum):
    CONNECTING = "connecting"  # the head-side command is starting (first connection)
    CONNECTED = "connected"  # lines arrive
    RECONNECTING = "reconnecting"  # the last attempt failed; trying again (data may be stale)
    ENDED = "ended"  # every event is yielded: the run ended (or, without follow, caught up)
    FAILED = "failed"  # gave up: EventStreamError

    def is_terminal(self) -> bool:
        return self in (StreamState.ENDED, StreamState.FAILED)


@dataclass(frozen=True)
class StreamStatus:
    state: StreamState
    since: float  # clock() when this state began: "reconnecting since T"
    last_seq: int  # the last seq yielded (the ``--since`` of the next attempt)
    attempts: int = 0  # failed attempts in a row
    reason: str | None = None  # why it is reconnecting or failed (one line)


@dataclass(frozen=True)
class StreamedEvent:
    """One stored event as the head sent it: the common fields typed, the whole event (kind
    fields included) in ``data``, read-only."""

    seq: int
    kind: Kind
    time: float
    run: str
    trial: str | None
    stage: str | None
    worker: str | None
    data: Mapping[str, Any]

    @classmethod
    def from_dict(cls, event: dict) -> StreamedEvent:
        """Check ``event`` against the schema (it must carry its ``seq``); raises EventError."""
        checked = validate_event(event)
        if "seq" not in checked:
            raise EventError(f"{checked['kind']} event without a seq: {dumps(event)[:200]}")
        return cls(
            seq=checked["seq"],
            kind=Kind(checked["kind"]),
            time=checked["time"],
            run=checked["run"],
            trial=checked["trial"],
            stage=checked["stage"],
            worker=checked["worker"],
            data=MappingProxyType(event),
        )

    def get(self, key: str, default: Any = None) -> Any:
        return self.data.get(key, default)

    @property
    def ends_run(self) -> bool:
        """The run's own end: a ``stage`` event with ``terminal: true`` and ``run_status``."""
        return self.kind is Kind.STAGE and self.data.get("terminal") is True

    def json_line(self) -> str:
        """The event as one JSON line (no newline), as the head's ``events.jsonl`` has it."""
        return dumps(dict(self.data))


def backoff_s(attempt: int) -> float:
    """Seconds to wait before attempt ``attempt + 1`` (0-based): the command channel's
    doubling backoff, capped: 0.5, 1, 2, 4, 8, 10, 10 ..."""
    return remote_backoff_s(attempt, cap=MAX_BACKOFF_S)


def stream_command(
    *, python: str, run_id: str, since: int, dashboard_port: int | None, follow: bool = True
) -> str:
    """The head-side command: ``<python> -m tether.cluster.stream RUN --since N ...``."""
    parts = [python, "-m", STREAM_MODULE, run_id, "--since", str(since)]
    if dashboard_port is not None:
        parts += ["--dashboard-port", str(dashboard_port)]
    if not follow:
        parts.append("--once")
    return shlex.join(parts)


class _Retry(Exception):
    """This attempt ended early; run the command again from the last seq. ``healthy``: the
    head side worked (events came, or it was only quiet), so the backoff starts over;
    ``alive``: the head answered (a job still starting), so the give-up clock starts over
    while the backoff still grows."""

    def __init__(self, reason: str, *, healthy: bool = False, alive: bool = False) -> None:
        super().__init__(reason)
        self.healthy = healthy
        self.alive = alive or healthy


class EventStream:
    """Iterate to get the run's events, each once, in seq order (see the module docstring).

    ``follow=False``: the events there are now, then stop. ``is_pending``: asked when the
    head has no monitor for the run; True (the job is queued or starting) means wait for it,
    False means the run is unknown (EventStreamError). Breaking out of the loop (or
    ``close()``) stops the head-side command.
    """

    def __init__(
        self,
        *,
        remote: Remote,
        python: str,
        run_id: str,
        since: int = 0,
        follow: bool = True,
        dashboard_port: int | None = None,
        is_pending: Callable[[], bool] | None = None,
        on_state: Callable[[StreamStatus], None] | None = None,
        give_up_s: float = GIVE_UP_S,
        idle_s: float | None = IDLE_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        if since < 0:
            raise ValueError(f"since must be >= 0, not {since}")
        self.run_id = run_id
        self._remote = remote
        self._python = python
        self._follow = follow
        self._dashboard_port = dashboard_port
        self._is_pending = is_pending
        self._on_state = on_state
        self._give_up_s = give_up_s
        self._idle_s = idle_s
        self._clock = clock
        self._sleep = sleep
        self._last = since
        self._seen_line = False  # any line in any attempt: the head side works
        self._status = StreamStatus(state=StreamState.CONNECTING, since=clock(), last_seq=since)
        self._lines: Iterator[str] | None = None
        self._closed = False

    @property
    def status(self) -> StreamStatus:
        return self._status

    @property
    def last_seq(self) -> int:
        return self._last

    def command(self) -> str:
        """The head-side command for the next attempt (``--since`` the last seq yielded)."""
        return stream_command(
            python=self._python,
            run_id=self.run_id,
            since=self._last,
            dashboard_port=self._dashboard_port,
            follow=self._follow,
        )

    def close(self) -> None:
        """Stop the stream and the head-side command. From another thread than the one
        iterating, the iteration stops at the next line that arrives."""
        self._closed = True
        self._stop_command()

    def _stop_command(self) -> None:
        lines, self._lines = self._lines, None
        stop = getattr(lines, "close", None)
        if stop is not None:
            with contextlib.suppress(ValueError):  # "generator already executing": see close
                stop()

    def __iter__(self) -> Iterator[StreamedEvent]:
        attempts = 0
        down_since: float | None = None
        while not self._closed:
            try:
                yield from self._attempt()
                self._set(StreamState.ENDED)
                return
            except _Retry as exc:
                retry = exc
            except TetherError as exc:
                if self._status.state is not StreamState.FAILED:
                    self._set(StreamState.FAILED, reason=_first_line(exc.message))
                raise
            finally:
                self._stop_command()
            if retry.healthy:
                attempts = 0
            if retry.alive:
                down_since = None
            now = self._clock()
            down_since = now if down_since is None else down_since
            if now - down_since >= self._give_up_s:
                raise self._failed(
                    f"the event stream of run {self.run_id!r} on {self._remote.name} has been "
                    f"down for {now - down_since:.0f} s (last event: seq {self._last}): {retry}",
                    hint=f"resume with `tether events {self.run_id} -f --since {self._last}` "
                    "once the head answers (`tether cluster status`)",
                )
            self._set(StreamState.RECONNECTING, attempts=attempts + 1, reason=str(retry))
            self._sleep(backoff_s(attempts))
            attempts += 1

    # ------------------------------------------------------------------ one attempt

    def _attempt(self) -> Iterator[StreamedEvent]:
        """Run the command once from the last seq; yield its new events in order. Returns
        when it exits 0; raises _Retry for what another attempt may cure, EventStreamError
        (or the remote's error) for what it cannot."""
        first = self._last
        try:
            self._lines = self._remote.stream_lines(self.command(), timeout=self._idle_s)
            for line in self._lines:
                if self._closed:
                    return
                self._seen_line = True
                if self._status.state is not StreamState.CONNECTED:
                    self._set(StreamState.CONNECTED)
                event = self._parse(line)
                if event is None or event.seq <= self._last:
                    continue  # not an event line, or one yielded before a reconnect
                if event.seq != self._last + 1:
                    reason = f"expected seq {self._last + 1}, got {event.seq}"
                    raise _Retry(reason, healthy=self._last > first)
                self._last = event.seq
                self._status = StreamStatus(
                    state=StreamState.CONNECTED, since=self._status.since, last_seq=self._last
                )
                yield event
        except HostKeyError:
            raise  # the head's key changed: never retried
        except ConnectionLost as exc:
            raise _Retry(_first_line(exc.message), healthy=self._last > first) from None
        except CommandFailed as exc:
            self._command_failed(exc, healthy=self._last > first)
        except StreamSilent as exc:  # quiet for idle_s: maybe half-open
            raise _Retry(_first_line(exc.message), healthy=True) from None
        except RemoteError as exc:
            if not self._seen_line:
                raise  # a refused session or login on the first try: not a network blip
            raise _Retry(_first_line(exc.message), healthy=self._last > first) from None

    def _command_failed(self, exc: CommandFailed, *, healthy: bool) -> None:
        """Sort a non-zero exit of the head-side command: raise _Retry or EventStreamError
        (return: without follow, a run still starting has no events yet)."""
        detail = _last_line(exc.output) or f"exit {exc.exit_code}"
        if exc.exit_code == _NO_MONITOR and "no run monitor" in exc.output:
            if self._pending():
                if not self._follow:
                    return
                raise _Retry(
                    f"waiting for the monitor of run {self.run_id!r} to start", alive=True
                ) from None
            raise self._failed(
                f"no events for run {self.run_id!r} on {self._remote.name}: {detail}",
                hint="`tether runs` lists the runs; the events of a run whose cluster is gone "
                "are in results/<run-id>/events.jsonl after `tether pull RUN`",
            )
        retry = exc.exit_code == _UNREACHABLE or exc.exit_code < 0 or exc.exit_code > 128
        if retry or self._seen_line:  # the monitor restarting, the command killed, a blip
            raise _Retry(detail, healthy=healthy) from None
        raise self._failed(
            f"the event stream of run {self.run_id!r} failed on {self._remote.name} "
            f"(exit {exc.exit_code}): {detail}",
            hint="is the cluster up and tether installed there? `tether doctor` and "
            "`tether cluster status` check both",
        )

    def _pending(self) -> bool:
        if self._is_pending is None:
            return False
        try:
            return bool(self._is_pending())
        except TetherError:
            return False

    def _parse(self, line: str) -> StreamedEvent | None:
        """The event on ``line``; None for a line that is not one (noise, or the torn last
        line of a killed command: the gap check then asks for it again)."""
        if not line.startswith("{"):
            return None
        try:
            obj = json.loads(line)
        except ValueError:
            return None
        if not isinstance(obj, dict) or not isinstance(obj.get("seq"), int):
            return None
        try:
            return StreamedEvent.from_dict(obj)
        except EventError as exc:
            raise self._failed(
                f"run {self.run_id!r}: the head sent an event this tether cannot read: {exc}",
                hint="install the same tether version on the laptop and the head",
            ) from None

    # ------------------------------------------------------------------ state

    def _set(self, state: StreamState, *, attempts: int = 0, reason: str | None = None) -> None:
        keep = state is self._status.state and state is StreamState.RECONNECTING
        since = self._status.since if keep else self._clock()
        self._status = StreamStatus(
            state=state, since=since, last_seq=self._last, attempts=attempts, reason=reason
        )
        if self._on_state is not None:
            self._on_state(self._status)

    def _failed(self, message: str, *, hint: str) -> EventStreamError:
        self._set(StreamState.FAILED, reason=_first_line(message))
        return EventStreamError(message, hint=hint)


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else ""


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1] if lines else ""
