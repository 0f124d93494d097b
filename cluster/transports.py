"""Where a reporter's batches go: one ``Transport`` per reporter.

* :class:`MonitorTransport` (``ray``): the run monitor actor ``run:<run_id>`` in namespace
  ``tether`` (``monitor.push.remote(reporter=, batch=, events=) -> last seq``); the monitor
  assigns seq.
* :class:`JsonlTransport` (``file``): no Ray (a user script on a laptop, or Ray not
  initialised): the batches appended to an events file (``cluster.eventlog``) with ``seq``
  assigned here, gap-free even with several processes on one file.
* :class:`StdoutTransport` (``stdout``): inside a shell-command stage, ``TETHER {json}``
  lines, which the stage runner parses and forwards to its own reporter.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any, Protocol

from .command_stage import format_tether_line
from .eventlog import EventLog
from .events import NAMESPACE, monitor_name


class Transport(Protocol):
    """Where a reporter's batches go. ``send`` is called from the reporter's thread only,
    one batch at a time, in batch order, and again with the same (reporter, batch) and the
    same events after a failure; it must be idempotent per (reporter, batch). Returns the
    last seq the receiver assigned, or None when it does not number events."""

    mode: str

    def send(self, *, reporter: str, batch: int, events: list[dict]) -> int | None: ...

    def close(self) -> None: ...


class MonitorTransport:
    """Pushes batches to the run monitor actor (``push(reporter=, batch=, events=)``)."""

    mode = "ray"

    def __init__(self, *, monitor: Any, call_timeout_s: float = 30.0) -> None:
        self.monitor = monitor
        self.call_timeout_s = call_timeout_s

    @classmethod
    def for_run(cls, *, run_id: str, call_timeout_s: float = 30.0) -> MonitorTransport:
        """The transport to ``run:<run_id>``; raises ValueError when no such actor exists."""
        import ray

        actor = ray.get_actor(monitor_name(run_id=run_id), namespace=NAMESPACE)
        return cls(monitor=actor, call_timeout_s=call_timeout_s)

    def send(self, *, reporter: str, batch: int, events: list[dict]) -> int | None:
        import ray

        ref = self.monitor.push.remote(reporter=reporter, batch=batch, events=events)
        return ray.get(ref, timeout=self.call_timeout_s)

    def close(self) -> None:
        pass


class JsonlTransport:
    """Appends events to a JSON-lines file in the run monitor's own format, assigning ``seq``
    here: strictly increasing and gap-free across every writer of the file on this machine
    (an exclusive ``flock`` per batch; the tail is re-read when another writer appended).

    Like the monitor's ``events.jsonl``, each stored event carries ``src`` (the reporter) and
    ``batch``, and the last line of each batch ``"batch_end": true``; lines after the last
    batch end (a write torn by a crash) are cut off before the next batch is appended. Each
    batch is one ``write``; ``durable`` adds an fsync per batch (off by default: the write
    survives the process, which is what a local script's file needs; the run monitor's log
    is durable)."""

    mode = "file"

    def __init__(self, *, path: str | os.PathLike[str], durable: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.durable = durable
        self._log: EventLog | None = None
        self._last_seq = 0
        self._size_after_write = -1  # file size right after our last write
        self._done: dict[str, int] = {}  # reporter -> last batch written

    def send(self, *, reporter: str, batch: int, events: list[dict]) -> int | None:
        if self._done.get(reporter, 0) >= batch:
            return self._last_seq  # a resend of a batch already written
        if self._log is None:
            self._log = EventLog(self.path, durable=self.durable)
        log = self._log
        with log.locked():
            if log.disk_size() != self._size_after_write:  # another writer, or a first send
                self._last_seq = log.recover_tail()
            seq = self._last_seq
            lines = []
            for ev in events:
                seq += 1
                lines.append({**ev, "src": reporter, "batch": batch, "seq": seq})
            log.append(lines)
            self._last_seq = seq
            self._size_after_write = log.size
        self._done[reporter] = batch
        return self._last_seq

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None


class StdoutTransport:
    """Prints each event as one ``TETHER {json}`` line (for shell-command stages: the stage
    runner on the other end of the pipe parses and forwards them). ``stream`` defaults to
    ``sys.stdout`` as it is at send time."""

    mode = "stdout"

    def __init__(self, *, stream: Any = None) -> None:
        self.stream = stream

    def send(self, *, reporter: str, batch: int, events: list[dict]) -> int | None:
        stream = self.stream or sys.stdout
        # One write call per batch, each line whole, so user prints cannot split a line.
        stream.write("".join(format_tether_line(ev) + "\n" for ev in events))
        stream.flush()
        return None

    def close(self) -> None:
        pass
