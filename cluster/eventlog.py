"""``events.jsonl``: the event log a run monitor writes and a local reporter appends to.

One JSON line per event (``cluster.events.dumps``). Events are appended in batches, each
batch one ``write`` followed by one ``fsync`` (``durable=False``: the write only, which
survives the process but not the machine), its last line marked ``"batch_end": true``. A
crash can tear only the batch being written, so after one:

* :meth:`EventLog.replay` (the monitor's rebuild) reads the file from the start, yields the
  events of every complete batch, checks that ``seq`` runs 1, 2, 3, ... without a gap, and
  cuts off what follows the last batch end (a torn write, never acknowledged). A damaged
  line with complete batches after it is refused (:class:`EventLogCorruptError`), never
  silently dropped: the file was edited or the disk is failing.
* :meth:`EventLog.recover_tail` (an appender sharing the file, e.g. several local processes)
  reads backwards to the last batch end only, cuts what follows, and says the last seq. A
  file that marks no batch ends (written by something else) keeps every complete line.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import os
from collections import deque
from collections.abc import Callable, Iterator
from pathlib import Path

from tether.ml.atomic import write_all

from .errors import ClusterRuntimeError
from .events import dumps

try:  # POSIX: lets several processes append to one file with gap-free seq
    import fcntl
except ImportError:  # pragma: no cover - Windows laptops: single-process appends only
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

_BATCH_END = b'"batch_end":true'
_TAIL_WINDOW = 64 * 1024  # bytes read backwards at first by recover_tail (grows 4x)


class EventLogCorruptError(ClusterRuntimeError):
    """``events.jsonl`` is damaged before its last complete write."""


class EventLog:
    """One ``events.jsonl``, open for appending (created when missing).

    ``size`` is the length of the part known to be complete (after :meth:`replay`,
    :meth:`recover_tail` or :meth:`append`). ``write`` and ``sync`` are the functions that
    write a batch to the descriptor and flush it to disk (``write_all`` and ``os.fsync``);
    tests pass counting wrappers to see one of each per batch."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        durable: bool = True,
        write: Callable[[int, bytes], None] = write_all,
        sync: Callable[[int], None] = os.fsync,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.durable = durable
        self._write, self._sync = write, sync
        self._fd: int | None = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
        self.size = 0

    @property
    def fd(self) -> int:
        if self._fd is None:
            raise ValueError(f"{self.path}: the event log is closed")
        return self._fd

    def disk_size(self) -> int:
        """The file's size now (other writers included)."""
        return os.fstat(self.fd).st_size

    # ------------------------------------------------------------------ writing

    def append(self, events: list[dict]) -> list[int]:
        """Append ``events`` as one batch: the last is marked ``batch_end``, then one write
        and (when durable) one fsync. Returns each event's byte offset. On an OSError the
        file is cut back to where it was and the error raised: the batch is not stored."""
        if not events:
            return []
        events[-1]["batch_end"] = True
        lines = [(dumps(e) + "\n").encode() for e in events]
        start = self.size
        try:
            self._write(self.fd, b"".join(lines))
            if self.durable:
                self._sync(self.fd)
        except OSError:
            with contextlib.suppress(OSError):
                os.ftruncate(self.fd, start)
            raise
        offsets = []
        for line in lines:
            offsets.append(self.size)
            self.size += len(line)
        return offsets

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold an exclusive ``flock`` on the file (other processes appending to it wait)."""
        if fcntl is not None:
            fcntl.flock(self.fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            if fcntl is not None:
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    # ------------------------------------------------------------------ reading

    def replay(self) -> Iterator[tuple[dict, int]]:
        """``(event, byte offset)`` for each event of every complete batch, in file order;
        seq must run 1, 2, 3, ... Once the iteration is done, whatever follows the last batch
        end is cut off (truncated and, when durable, fsynced) and ``size`` is set."""
        committed, dropped, last_seq = 0, 0, 0
        group: list[tuple[dict, int]] = []
        with open(self.path, "rb") as f:
            offset = 0
            for n, raw in enumerate(f, 1):
                start, offset = offset, offset + len(raw)
                event = _parse_line(raw)
                if event is None:  # torn or garbled: fine only if nothing complete follows
                    rest = f.read()
                    if _BATCH_END in rest:
                        raise EventLogCorruptError(
                            f"{self.path} line {n} is damaged but complete writes follow "
                            "it; the file was edited or the disk is failing. Move it aside "
                            "to start the monitor with an empty log."
                        )
                    dropped += 1 + rest.count(b"\n")
                    break
                expected = last_seq + len(group) + 1
                if event.get("seq") != expected:
                    raise EventLogCorruptError(
                        f"{self.path} line {n} has seq {event.get('seq')!r}, expected "
                        f"{expected}: the log is not one monitor's output. Move it aside."
                    )
                group.append((event, start))
                if event.get("batch_end"):
                    yield from group
                    last_seq += len(group)
                    group, committed = [], offset
        dropped += len(group)
        self._cut(committed, dropped)

    def events_from(self, offset: int) -> Iterator[dict]:
        """The stored events from byte ``offset`` (a line start) up to ``size``."""
        with open(self.path, "rb") as f:
            f.seek(offset)
            pos = offset
            for raw in f:
                pos += len(raw)
                if pos > self.size:
                    return
                yield json.loads(raw)

    def recover_tail(self) -> int:
        """The last seq of the file, read backwards from its end; lines after the last batch
        end (a torn write) are cut off. ``size`` is set to what stays."""
        last_seq, keep = _committed_tail(self.fd, self.disk_size())
        self._cut(keep, None)
        return last_seq

    def _cut(self, committed: int, dropped: int | None) -> None:
        if committed < self.disk_size():
            if dropped is not None:
                log.warning(
                    "%s: cut %d unacknowledged line(s) after byte %d (a write torn by a crash)",
                    self.path,
                    dropped,
                    committed,
                )
            os.ftruncate(self.fd, committed)
            if self.durable:
                self._sync(self.fd)
        self.size = committed


class StoredEvents:
    """The reading side of a log that one process writes (the run monitor's): the last seq,
    the newest ``window`` events in memory, the byte offset of every ``stride``-th line to
    seek older ones in the file, and the last seq each (src, batch) got, so a batch pushed
    again is known. Fed by :meth:`record` for each event replayed or appended."""

    def __init__(self, log: EventLog, *, window: int, stride: int = 1000) -> None:
        self.log = log
        self.last_seq = 0
        self.window: deque[dict] = deque(maxlen=max(1, int(window)))
        self.stride = stride
        self._offsets: list[int] = []  # byte offset of seq k * stride + 1
        self._batches: dict[tuple[str, int], int] = {}

    def record(self, event: dict, offset: int) -> None:
        seq = event["seq"]
        self.last_seq = seq
        self.window.append(event)
        if (seq - 1) % self.stride == 0:
            self._offsets.append(offset)
        if event.get("batch") is not None:
            key = (event["src"], event["batch"])
            self._batches[key] = max(seq, self._batches.get(key, 0))

    def batch_seq(self, src: str, batch: int) -> int | None:
        """The last seq of batch ``batch`` from ``src`` when it is stored, else None."""
        return self._batches.get((src, batch))

    def since(self, since_seq: int, limit: int) -> list[dict]:
        """Events with ``seq > since_seq``, oldest first, at most ``limit``."""
        if since_seq >= self.last_seq or limit <= 0:
            return []
        first = self.window[0]["seq"]
        if since_seq + 1 >= first:
            start = since_seq + 1 - first
            return list(itertools.islice(self.window, start, start + limit))
        block = since_seq // self.stride
        seq = block * self.stride  # the seq just before the line at self._offsets[block]
        out: list[dict] = []
        for event in self.log.events_from(self._offsets[block]):
            seq += 1
            if seq > self.last_seq or len(out) >= limit:
                break
            if seq > since_seq:
                out.append(event)
        return out


def _parse_line(raw: bytes) -> dict | None:
    """A complete stored event, or None for a torn (no newline) or unreadable line."""
    if not raw.endswith(b"\n"):
        return None
    try:
        event = json.loads(raw)
    except ValueError:
        return None
    return event if isinstance(event, dict) else None


def _committed_tail(fd: int, size: int) -> tuple[int, int]:
    """(last seq, size to keep) of an events file: the last line marked ``batch_end`` and
    the byte just after it. A file with no such mark (written by something else) keeps every
    complete line and continues after the last seq found."""
    window = _TAIL_WINDOW
    while True:
        start = max(0, size - window)
        chunk = os.pread(fd, size - start, start)
        complete = chunk.rfind(b"\n") + 1  # a last line without newline is torn
        ends = _line_ends(chunk[:complete])
        first = 1 if start > 0 else 0  # the window's first line may be cut
        fallback: tuple[int, int] | None = None
        for i in range(len(ends) - 1, first - 1, -1):
            raw = chunk[(ends[i - 1] if i else 0) : ends[i]]
            try:
                ev = json.loads(raw)
            except ValueError:
                continue  # torn or foreign
            if not isinstance(ev, dict) or not isinstance(ev.get("seq"), int):
                continue
            if ev.get("batch_end") is True:
                return ev["seq"], start + ends[i]
            if fallback is None:
                fallback = (ev["seq"], start + complete)
        if start == 0:
            return fallback if fallback is not None else (0, complete)
        window *= 4


def _line_ends(body: bytes) -> list[int]:
    ends: list[int] = []
    pos = 0
    while (nl := body.find(b"\n", pos)) != -1:
        ends.append(nl + 1)
        pos = nl + 1
    return ends
