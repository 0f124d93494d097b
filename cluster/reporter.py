"""The reporter: what every task, and the user's own training code, calls to say what it does.

    from tether.cluster.reporter import get_reporter

    with get_reporter() as r:                     # run/trial/stage from TETHER_* env vars
        for step in range(n):
            r.report(step=step, metrics={"loss": loss})   # non-blocking: one deque append

The hot path (``report``, ``metric``, ``log``...) only builds a small tuple and appends it to
a ``collections.deque``: no lock, no I/O, no Ray call. One background daemon thread per
reporter turns the queue into events and ships them in numbered batches (1, 2, 3... per
reporter id) at most every ``flush_interval_s`` or as soon as ``max_batch`` events are queued,
resending the same (reporter, batch) until it is acknowledged (the receiver dedupes), so
nothing is lost or doubled. The same thread sends a heartbeat every ``heartbeat_s`` with host,
pid, RSS and GPU utilisation/memory where a GPU exists.

Where events go (one ``Transport`` per reporter; ``get_reporter`` picks):

* **ray**: the run monitor actor ``run:<run_id>`` in namespace ``tether``
  (``monitor.push.remote(reporter=, batch=, events=) -> last seq``); the monitor assigns seq.
* **file**: no Ray (a user script on a laptop, or Ray not initialised): JSON lines appended to
  ``events.jsonl`` (default ``./tether-events.jsonl``) with ``seq`` assigned here, gap-free
  even with several processes on one file (an ``flock`` per batch).
* **stdout**: inside a shell-command stage (``TETHER_REPORT_TO=stdout``, set by
  :func:`run_command_stage`), events are printed as ``TETHER {json}`` lines, which the stage
  runner parses and forwards to its own reporter.

Shell-command stages (``command = "python train.py"``) report by printing ``TETHER {json}``
lines; :func:`run_command_stage` runs such a command and forwards them.
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import enum
import hashlib
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
import weakref
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil

from .errors import ClusterRuntimeError
from .events import AlertLevel, Kind, StageStatus, validate_event

try:  # POSIX: lets several processes append to one events.jsonl with gap-free seq
    import fcntl
except ImportError:  # pragma: no cover - Windows laptops: single-process appends only
    fcntl = None  # type: ignore[assignment]

__all__ = [
    "DEFAULT_EVENTS_PATH",
    "ENV_EVENTS_PATH",
    "ENV_REPORT_FD",
    "ENV_REPORT_TO",
    "ENV_RUN_ID",
    "ENV_STAGE",
    "ENV_TRIAL",
    "EVENT_KINDS",
    "MONITOR_NAMESPACE",
    "TETHER_PREFIX",
    "ArtifactRecord",
    "CommandOutcome",
    "JsonlTransport",
    "MonitorTransport",
    "Reporter",
    "ReporterConfigError",
    "ReporterStats",
    "StdoutTransport",
    "TetherLineError",
    "Transport",
    "alert",
    "artifact",
    "close_default_reporter",
    "default_reporter",
    "flush",
    "format_tether_line",
    "get_reporter",
    "heartbeat_fields",
    "log",
    "metric",
    "monitor_name",
    "parse_tether_line",
    "report",
    "run_command_stage",
    "set_default_reporter",
    "stage",
]

MB = 1024 * 1024
MONITOR_NAMESPACE = "tether"
DEFAULT_EVENTS_PATH = "tether-events.jsonl"
ENV_RUN_ID = "TETHER_RUN_ID"
ENV_TRIAL = "TETHER_TRIAL"
ENV_STAGE = "TETHER_STAGE"
ENV_EVENTS_PATH = "TETHER_EVENTS_PATH"
ENV_REPORT_TO = "TETHER_REPORT_TO"  # "stdout": print TETHER lines (set by run_command_stage)
# A pipe of their own for those lines (set by run_command_stage), so a reporter thread's
# write can never land in the middle of a line the program prints on stdout.
ENV_REPORT_FD = "TETHER_REPORT_FD"
TETHER_PREFIX = "TETHER"
EVENT_KINDS = frozenset(k.value for k in Kind)
LOCAL_RUN_ID = "local"  # the run of events reported with no run id (a plain local script)
# Keys every event carries; the reporter stamps them, callers cannot override them.
_IDENTITY_KEYS = frozenset({"seq", "time", "run", "trial", "stage", "kind", "worker"})
# ...and the ones a receiver adds when it stores an event.
_NOT_FORWARDED = _IDENTITY_KEYS | {"src", "batch", "batch_end"}
MIN_HEARTBEAT_S = 1.0
COMMAND_TIMEOUT_EXIT_CODE = 124  # what coreutils' timeout(1) returns
LAST_LINES = 50
_KILL_GRACE_S = 2.0
_MAX_BAD_LINE_ALERTS = 5
_MAX_LINE_BYTES = 1 << 20  # a longer line is read (and reported) in pieces of this size
_SHED_FIRST = frozenset({"log"})  # what an overflowing queue drops first, then also:
_SHED_LATER = frozenset({"log", "progress", "metric", "heartbeat"})


class ReporterConfigError(ClusterRuntimeError, ValueError):
    """A reporter was configured with a value it cannot work with."""


class TetherLineError(ClusterRuntimeError, ValueError):
    """A ``TETHER ...`` stdout line whose payload is not a valid event object."""


def monitor_name(*, run_id: str) -> str:
    """Name of the run monitor actor for ``run_id`` (in namespace :data:`MONITOR_NAMESPACE`)."""
    return f"run:{run_id}"


# --------------------------------------------------------------------------- records


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


@dataclass(frozen=True)
class CommandOutcome:
    """How a shell-command stage ended."""

    exit_code: int  # the command's; 128+N when killed by signal N; 124 when it timed out
    last_lines: list[str]  # the last lines it printed (stdout and stderr), for error reports
    events_forwarded: int  # valid TETHER lines forwarded as events
    timed_out: bool = False
    log_lines: int = 0  # plain lines kept as log events
    bad_lines: int = 0  # TETHER lines that were malformed (kept as log events + alerts)


# --------------------------------------------------------------------------- transports


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

        actor = ray.get_actor(monitor_name(run_id=run_id), namespace=MONITOR_NAMESPACE)
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
    batch is one ``write`` (it survives the process; no fsync)."""

    mode = "file"

    def __init__(self, *, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd: int | None = None
        self._last_seq = 0
        self._size_after_write = -1  # file size right after our last write
        self._done: dict[str, int] = {}  # reporter -> last batch written

    def send(self, *, reporter: str, batch: int, events: list[dict]) -> int | None:
        if self._done.get(reporter, 0) >= batch:
            return self._last_seq  # a resend of a batch already written
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        fd = self._fd
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            size = os.fstat(fd).st_size
            if size != self._size_after_write:
                self._last_seq, committed = _committed_tail(fd, size)
                if committed < size:
                    os.ftruncate(fd, committed)
                    size = committed
            seq = self._last_seq
            lines = []
            for ev in events:
                seq += 1
                lines.append({**ev, "src": reporter, "batch": batch, "seq": seq})
            if lines:
                lines[-1]["batch_end"] = True
            data = "".join(_dumps(e) + "\n" for e in lines).encode()
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            self._last_seq = seq
            self._size_after_write = size + len(data)
        finally:
            if fcntl is not None:
                fcntl.flock(fd, fcntl.LOCK_UN)
        self._done[reporter] = batch
        return self._last_seq

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def _committed_tail(fd: int, size: int) -> tuple[int, int]:
    """(last seq, size to keep) of an events file: the last line marked ``batch_end`` and
    the byte just after it. A file with no such mark (written by something else) keeps every
    complete line and continues after the last seq found."""
    window = 64 * 1024
    while True:
        start = max(0, size - window)
        chunk = os.pread(fd, size - start, start)
        complete = chunk.rfind(b"\n") + 1  # a last line without newline is torn
        body = chunk[:complete]
        ends: list[int] = []
        pos = 0
        while (nl := body.find(b"\n", pos)) != -1:
            ends.append(nl + 1)
            pos = nl + 1
        first = 1 if start > 0 else 0  # the window's first line may be cut
        fallback: tuple[int, int] | None = None
        for i in range(len(ends) - 1, first - 1, -1):
            raw = body[(ends[i - 1] if i else 0) : ends[i]]
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


# --------------------------------------------------------------------------- JSON safety

_PLAIN = (str, int, float, bool, type(None))


def _json_safe(value: Any) -> Any:
    """``value`` made of JSON types only: numpy/torch scalars become numbers (``.item()``),
    tuples and sets lists, enums their value, paths strings, anything else its ``str``."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_safe(v) for v in value]
    if isinstance(value, enum.Enum):
        return _json_safe(value.value)
    if isinstance(value, _PLAIN):  # subclasses (bool is an int, IntEnum handled above)
        return value
    item = getattr(value, "item", None)
    if callable(item):
        with contextlib.suppress(Exception):  # numpy/torch scalar (or 1-element tensor)
            out = item()
            if type(out) in _PLAIN:
                return out
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return str(value)


def _fields_safe(fields: dict) -> dict:
    """Fast path of :func:`_json_safe` for the flat dicts the hot path builds."""
    for k, v in fields.items():
        if type(v) not in _PLAIN:
            fields[k] = _json_safe(v)
    return fields


def _dumps(event: Mapping) -> str:
    return json.dumps(event, separators=(",", ":"), default=str)


def _is_opt_int(v: Any) -> bool:
    return v is None or type(v) is int


def _is_opt_number(v: Any) -> bool:
    return v is None or type(v) is float or type(v) is int


def _fast_valid(ev: dict) -> bool:
    """True when ``ev`` (built by the reporter, common fields checked at construction) surely
    follows the schema; the frequent kinds are checked here, the rest by validate_event."""
    t = ev["time"]
    if not (type(t) is float or type(t) is int) or not math.isfinite(t):
        return False
    kind = ev["kind"]
    if kind == "progress":
        m = ev.get("metrics")
        return (
            _is_opt_int(ev.get("step", 0.5))
            and _is_opt_int(ev.get("epoch", 0.5))
            and type(m) is dict
            and all(type(k) is str and _is_opt_number(v) for k, v in m.items())
            and type(ev.get("epoch_end", False)) is bool
        )
    if kind == "log":
        return type(ev.get("stream")) is str and type(ev.get("line")) is str
    if kind == "metric":
        return (
            type(ev.get("name")) is str
            and bool(ev["name"])
            and _is_opt_number(ev.get("value", "missing"))
            and _is_opt_int(ev.get("step", 0.5))
            and _is_opt_int(ev.get("epoch", 0.5))
        )
    return False


def _as_int(v: Any) -> Any:
    if isinstance(v, float) and v.is_integer():
        return int(v)
    if isinstance(v, str):
        with contextlib.suppress(ValueError):
            return int(v)
    return v


def _as_number(v: Any) -> Any:
    if isinstance(v, bool):
        return int(v)
    if isinstance(v, str):
        with contextlib.suppress(ValueError):
            return float(v)
    return v


def _coerced(ev: dict) -> dict:
    """A copy of ``ev`` with near-misses fixed: integral floats and numeric strings as steps
    and epochs, booleans and numeric strings as metric values."""
    ev = dict(ev)
    for key in ("step", "epoch"):
        if key in ev:
            ev[key] = _as_int(ev[key])
    if ev.get("kind") == "progress" and isinstance(ev.get("metrics"), dict):
        ev["metrics"] = {str(k): _as_number(v) for k, v in ev["metrics"].items()}
    if ev.get("kind") == "metric" and "value" in ev:
        ev["value"] = _as_number(ev["value"])
    return ev


def format_tether_line(event: Mapping) -> str:
    """``TETHER {json}``: how a shell-command stage reports an event on stdout (any program
    can print these; ``kind`` defaults to ``progress``)."""
    return f"{TETHER_PREFIX} {_dumps(event)}"


def parse_tether_line(line: str) -> dict | None:
    """The event a ``TETHER {json}`` stdout line carries, or None for any other line.

    Missing ``kind`` means ``progress`` (and a progress event gets ``step``, ``epoch`` and
    ``metrics`` defaults); ``seq`` is dropped (the receiver assigns it). Raises
    :class:`TetherLineError` for a TETHER line whose payload is not a JSON object with a
    known kind."""
    text = line.rstrip("\r\n")
    if not text.startswith(TETHER_PREFIX):
        return None
    rest = text[len(TETHER_PREFIX) :]
    if rest and not rest[0].isspace():
        return None  # "TETHERED ...": not ours
    payload = rest.strip()
    if not payload:
        raise TetherLineError("TETHER line without a JSON object after it")
    try:
        obj = json.loads(payload)
    except ValueError as exc:
        raise TetherLineError(f"TETHER line is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise TetherLineError(f"TETHER line holds a JSON {type(obj).__name__}, not an object")
    kind = obj.setdefault("kind", "progress")
    if kind not in EVENT_KINDS:
        raise TetherLineError(
            f"TETHER line has unknown kind {kind!r}; use one of {', '.join(sorted(EVENT_KINDS))}"
        )
    obj.pop("seq", None)
    if kind == "progress":
        obj.setdefault("step", None)
        obj.setdefault("epoch", None)
        metrics = obj.setdefault("metrics", {})
        if not isinstance(metrics, dict):
            raise TetherLineError("TETHER progress line: 'metrics' must be an object")
    return obj


# --------------------------------------------------------------------------- heartbeat probe


class _GpuProbe:
    """GPU utilisation/memory of the GPUs this process may use: NVML (``pynvml``) when it is
    importable and works, else ``torch.cuda`` memory when the caller already imported torch and
    initialised CUDA (never imported or initialised here), else None."""

    def __init__(self) -> None:
        self._nvml: Any = None
        self._handles: list[tuple[int, Any]] | None = None
        self._nvml_failed = False
        self._lock = threading.Lock()  # every reporter thread of the process shares this probe

    def __call__(self) -> list[dict] | None:
        with self._lock:
            if not self._nvml_failed:
                try:
                    return self._from_nvml()
                except Exception:
                    self._nvml_failed = True
            return self._from_torch()

    def _from_nvml(self) -> list[dict] | None:
        if self._handles is None:
            import pynvml  # nvidia-ml-py; ImportError disables this path

            pynvml.nvmlInit()
            self._nvml = pynvml
            self._handles = self._visible_handles(pynvml)
        if not self._handles:
            return None
        nv = self._nvml
        out = []
        for index, handle in self._handles:
            mem = nv.nvmlDeviceGetMemoryInfo(handle)
            util = nv.nvmlDeviceGetUtilizationRates(handle)
            out.append(
                {
                    "index": index,
                    "util_pct": float(util.gpu),
                    "mem_used_mb": round(mem.used / MB, 1),
                    "mem_total_mb": round(mem.total / MB, 1),
                }
            )
        return out

    @staticmethod
    def _visible_handles(nv: Any) -> list[tuple[int, Any]]:
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        count = nv.nvmlDeviceGetCount()
        if visible is None:
            return [(i, nv.nvmlDeviceGetHandleByIndex(i)) for i in range(count)]
        handles = []
        for token in (t.strip() for t in visible.split(",") if t.strip()):
            if token.isdigit():
                if int(token) < count:
                    handles.append((int(token), nv.nvmlDeviceGetHandleByIndex(int(token))))
            else:  # GPU-<uuid> / MIG-<uuid>
                handle = nv.nvmlDeviceGetHandleByUUID(token)
                handles.append((nv.nvmlDeviceGetIndex(handle), handle))
        return handles

    @staticmethod
    def _from_torch() -> list[dict] | None:
        torch = sys.modules.get("torch")
        cuda = getattr(torch, "cuda", None)
        try:
            if cuda is None or not cuda.is_initialized():
                return None
            out = []
            for i in range(cuda.device_count()):
                out.append(
                    {
                        "index": i,
                        "util_pct": None,
                        "mem_used_mb": round(cuda.memory_reserved(i) / MB, 1),
                        "mem_total_mb": round(cuda.get_device_properties(i).total_memory / MB, 1),
                    }
                )
            return out
        except Exception:
            return None


_GPU_PROBE = _GpuProbe()
_PROCESS: tuple[int, Any] | None = None


def heartbeat_fields() -> dict:
    """The kind fields of a heartbeat for this process: host, pid, rss_mb, gpus (a list of
    {index, util_pct, mem_used_mb, mem_total_mb}, or None where no GPU is visible)."""
    global _PROCESS
    pid = os.getpid()
    if _PROCESS is None or _PROCESS[0] != pid:
        _PROCESS = (pid, psutil.Process(pid))
    rss = _PROCESS[1].memory_info().rss
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "rss_mb": round(rss / MB, 1),
        "gpus": _GPU_PROBE(),
    }


# --------------------------------------------------------------------------- the reporter


class _Batch:
    __slots__ = ("events", "markers", "number")

    def __init__(self, number: int, events: list[dict], markers: list[threading.Event]):
        self.number = number
        self.events = events
        self.markers = markers


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
        if not isinstance(heartbeat_s, (int, float)) or not heartbeat_s >= MIN_HEARTBEAT_S:
            raise ReporterConfigError(
                f"heartbeat_s={heartbeat_s!r}: give a number of seconds >= {MIN_HEARTBEAT_S:g} "
                "(30 is the default; 1 is for tests)"
            )
        for name, value in (("run_id", run_id), ("trial", trial), ("stage", stage)):
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

        # Items: (time, kind, fields) tuples, (time, "progress", step, epoch, metrics) from
        # report(), or a threading.Event flush marker.
        self._q: collections.deque = collections.deque()
        self._wake = threading.Event()
        self._stopping = False
        self._abandon = threading.Event()  # close gave up: stop retrying
        self._urgent = False
        self._closed = False
        self._close_lock = threading.Lock()
        self._close_result: bool | None = None

        self._next_batch = 1
        self._pending: _Batch | None = None
        self._sent_events = 0
        self._sent_batches = 0
        self._last_seq: int | None = None
        self._failed_attempts = 0
        self._dropped = 0
        self._invalid = 0
        self._unreported_drops = 0
        self._last_step: int | None = None
        self._failing = False

        self._thread = threading.Thread(
            target=self._run, name=f"tether-reporter-{self.worker}", daemon=True
        )
        self._thread.start()
        _LIVE.add(self)

    # ---------------------------------------------------------------- hot path

    def report(
        self, *, step: int | None = None, epoch: int | None = None, metrics: Mapping | None = None
    ) -> None:
        """A progress event: the training loop reached ``step`` (and/or ``epoch``) with these
        ``metrics`` (copied, so the caller may reuse the dict). Non-blocking."""
        if self._closed:
            self._dropped += 1
            return
        if metrics:
            metrics = metrics.copy() if type(metrics) is dict else dict(metrics)
        q = self._q
        # A flat tuple, no per-call dict: the event is built on the reporter's thread.
        q.append((self._clock(), "progress", step, epoch, metrics))
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
        bad = _IDENTITY_KEYS.intersection(fields)
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

    def artifact(self, path: str | os.PathLike[str]) -> ArtifactRecord:
        """Record that the file at ``path`` was produced (path, size and sha256, computed now
        on the caller's thread). Only the event: shipping the file is the artifact sink's job.
        """
        p = Path(path)
        digest = hashlib.sha256()
        size = 0
        with p.open("rb") as f:
            while chunk := f.read(1024 * 1024):
                digest.update(chunk)
                size += len(chunk)
        rec = ArtifactRecord(path=os.fspath(path), bytes=size, sha256=digest.hexdigest())
        self._put("artifact", {"path": rec.path, "bytes": rec.bytes, "sha256": rec.sha256})
        return rec

    def forward(self, event: Mapping) -> None:
        """Queue an event built elsewhere (a parsed ``TETHER`` line): its ``kind`` and kind
        fields are kept, and its ``time`` when numeric; run, trial, worker (and stage, except
        for ``stage`` events) are this reporter's. Non-blocking."""
        kind = event.get("kind", "progress")
        if kind not in EVENT_KINDS:
            raise ReporterConfigError(f"forward(): unknown event kind {kind!r}")
        t = event.get("time")
        if not isinstance(t, (int, float)) or isinstance(t, bool) or not math.isfinite(t):
            t = self._clock()
        fields = {k: v for k, v in event.items() if k not in _NOT_FORWARDED}
        if kind == "stage" and "stage" in event:
            fields["stage"] = event["stage"]
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
            return not self._q and self._pending is None
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
        left += len(self._pending.events) if self._pending else 0
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
        pending = self._pending
        return ReporterStats(
            worker=self.worker,
            mode=self.mode,
            queued=sum(1 for i in list(self._q) if not isinstance(i, threading.Event)),
            pending=len(pending.events) if pending else 0,
            sent_events=self._sent_events,
            sent_batches=self._sent_batches,
            last_seq=self._last_seq,
            failed_attempts=self._failed_attempts,
            dropped=self._dropped,
            invalid=self._invalid,
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
                self._trim()
                stopping = self._stopping
                if stopping or self._urgent or now >= next_flush:
                    self._urgent = False
                    self._drain(full_only=False)
                    next_flush = mono() + self.flush_interval_s
                else:
                    self._drain(full_only=True)
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
            fields = {"host": socket.gethostname(), "pid": os.getpid(), "rss_mb": None}
            fields["gpus"] = None
            fields["probe_error"] = repr(exc)
        if self._last_step is not None:
            fields.setdefault("progress_step", self._last_step)
        return fields

    def _trim(self) -> None:
        """Bound the queue while the receiver is unreachable or far behind: past
        ``max_queued`` the oldest log events go; past twice that, the oldest progress, metric
        and heartbeat events too. Stage, alert and artifact events and flush markers stay, in
        order (only this thread takes from the left of the queue)."""
        q = self._q
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
        self._dropped += dropped
        self._unreported_drops += dropped

    def _drain(self, *, full_only: bool) -> None:
        """Send the pending batch, then batches from the queue: all of it, or only full ones."""
        while True:
            if self._pending is None:
                if full_only and len(self._q) < self.max_batch:
                    return
                batch = self._take()
                if batch is None:
                    return
                self._pending = batch
            batch = self._pending
            if batch.events and not self._send(batch):
                return  # still pending; retried at the next flush
            self._pending = None
            for marker in batch.markers:
                marker.set()

    def _take(self) -> _Batch | None:
        """The next batch: up to max_batch events, ending early after a flush marker."""
        q = self._q
        events: list[dict] = []
        markers: list[threading.Event] = []
        run, trial, stage, worker = self.run, self.trial, self.stage_name, self.worker
        while len(events) < self.max_batch:
            try:
                item = q.popleft()
            except IndexError:
                break
            if isinstance(item, threading.Event):
                markers.append(item)
                break
            if len(item) == 5:  # report(): (time, "progress", step, epoch, metrics)
                t, kind, step, epoch, metrics = item
                fields = {"step": step, "epoch": epoch, "metrics": metrics or {}}
            else:
                t, kind, fields = item
            ev = {"time": t, "run": run, "trial": trial, "stage": stage, "worker": worker}
            ev["kind"] = kind
            events.append(self._checked(ev, fields))
        if self._unreported_drops and len(events) < self.max_batch:
            n, self._unreported_drops = self._unreported_drops, 0
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
        return _Batch(number, events, markers)

    def _checked(self, common: dict, fields: dict) -> dict:
        """The event ``common`` + ``fields`` when it follows the schema (cluster.events); else
        a coerced copy that does; else an alert saying what was wrong (a receiver rejects a
        batch with a bad event, which would then be resent forever). Never raises."""
        try:
            ev = {**common, **_fields_safe(fields)}
            if not _fast_valid(ev):
                ev = validate_event(_coerced(ev))
        except Exception as exc:  # EventError, or anything odd in a forwarded event
            self._invalid += 1
            return {
                **common,
                "kind": "alert",
                "level": "warning",
                "code": "reporter:bad_event",
                "message": f"dropped an event that breaks the schema: {exc}",
            }
        if ev["kind"] == "progress" and ev["step"] is not None:
            self._last_step = ev["step"]  # heartbeats carry it as progress_step
        return ev

    def _send(self, batch: _Batch) -> bool:
        delay = self.retry_backoff_s
        for attempt in range(1, self.max_send_attempts + 1):
            try:
                seq = self.transport.send(
                    reporter=self.worker, batch=batch.number, events=batch.events
                )
            except Exception as exc:
                self._failed_attempts += 1
                if not self._failing:
                    self._failing = True
                    print(
                        f"tether reporter {self.worker}: sending batch {batch.number} to "
                        f"{self.mode} failed ({exc!r}); retrying, nothing is dropped",
                        file=sys.stderr,
                    )
                if attempt == self.max_send_attempts or self._abandon.wait(delay):
                    return False
                delay = min(delay * 2, 5.0)
                continue
            self._failing = False
            if seq is not None:
                self._last_seq = seq
            self._sent_events += len(batch.events)
            self._sent_batches += 1
            return True
        return False


@atexit.register
def _close_live_reporters() -> None:
    for r in list(_LIVE):
        with contextlib.suppress(Exception):
            r.close(timeout=10.0)


# --------------------------------------------------------------------------- factory


def get_reporter(
    *,
    run_id: str | None = None,
    trial: str | None = None,
    stage: str | None = None,
    events_path: str | os.PathLike[str] | None = None,
    heartbeat_s: float = 30,
) -> Reporter:
    """A new reporter for this process, sending where it can.

    ``run_id``, ``trial`` and ``stage`` default to the env vars TETHER_RUN_ID, TETHER_TRIAL
    and TETHER_STAGE. Then, in order:

    * TETHER_REPORT_TO=stdout (inside a shell-command stage): ``TETHER {json}`` lines on stdout;
    * Ray initialised in this process and a monitor actor ``run:<run_id>`` exists: that actor;
    * otherwise: JSON lines in ``events_path`` (default TETHER_EVENTS_PATH, else
      ``./tether-events.jsonl``). Ray is never imported or initialised here for this.
    """
    env = os.environ
    run_id = run_id or env.get(ENV_RUN_ID) or None
    trial = trial or env.get(ENV_TRIAL) or None
    stage = stage or env.get(ENV_STAGE) or None
    common = {"run_id": run_id, "trial": trial, "stage": stage, "heartbeat_s": heartbeat_s}
    if env.get(ENV_REPORT_TO, "").lower() == "stdout" and events_path is None:
        return Reporter(transport=StdoutTransport(stream=_report_stream(env)), **common)
    ray = sys.modules.get("ray")  # imported by every Ray worker; a plain script may lack it
    if run_id and ray is not None and ray.is_initialized():
        try:
            transport: Transport = MonitorTransport.for_run(run_id=run_id)
        except ValueError:
            print(
                f"tether: no monitor actor {monitor_name(run_id=run_id)!r} in namespace "
                f"{MONITOR_NAMESPACE!r}; reporting to a local events file instead",
                file=sys.stderr,
            )
        else:
            return Reporter(transport=transport, **common)
    path = events_path or env.get(ENV_EVENTS_PATH) or DEFAULT_EVENTS_PATH
    return Reporter(transport=JsonlTransport(path=path), **common)


def _report_stream(env: Mapping[str, str]) -> Any:
    """The TETHER_REPORT_FD pipe when this process has it open, else None (stdout)."""
    try:
        fd = int(env.get(ENV_REPORT_FD, ""))
        os.fstat(fd)
    except (ValueError, OSError):
        return None
    return open(fd, "w", encoding="utf-8", closefd=False)  # lives as long as the reporter


_DEFAULT: Reporter | None = None
_DEFAULT_LOCK = threading.Lock()


def default_reporter() -> Reporter:
    """The process-global reporter the module-level functions use: the one given to
    :func:`set_default_reporter`, else one made by :func:`get_reporter` on first use (again
    after it was closed, or in a forked child)."""
    global _DEFAULT
    r = _DEFAULT
    if r is not None and not r._closed and r.pid == os.getpid():
        return r
    with _DEFAULT_LOCK:
        r = _DEFAULT
        if r is None or r._closed or r.pid != os.getpid():
            r = _DEFAULT = get_reporter()
        return r


def set_default_reporter(reporter: Reporter | None) -> Reporter | None:
    """Make ``reporter`` the process-global default (e.g. a stage task's own reporter, so the
    user code it calls can use ``cluster.reporter.report(...)``); returns the previous one."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        previous, _DEFAULT = _DEFAULT, reporter
    return previous


def close_default_reporter(*, timeout: float | None = 30.0) -> bool:
    """Close the process-global default reporter, if one was made; True when all was sent."""
    r = set_default_reporter(None)
    return r.close(timeout=timeout) if r is not None else True


def report(
    *, step: int | None = None, epoch: int | None = None, metrics: Mapping | None = None
) -> None:
    """:meth:`Reporter.report` on the default reporter."""
    default_reporter().report(step=step, epoch=epoch, metrics=metrics)


def metric(name: str, value: float, *, step: int | None = None, epoch: int | None = None) -> None:
    """:meth:`Reporter.metric` on the default reporter."""
    default_reporter().metric(name, value, step=step, epoch=epoch)


def stage(name: str, status: str, **fields: Any) -> None:
    """:meth:`Reporter.stage` on the default reporter."""
    default_reporter().stage(name, status, **fields)


def alert(message: str, *, level: str = "warning", code: str = "user") -> None:
    """:meth:`Reporter.alert` on the default reporter."""
    default_reporter().alert(message, level=level, code=code)


def artifact(path: str | os.PathLike[str]) -> ArtifactRecord:
    """:meth:`Reporter.artifact` on the default reporter."""
    return default_reporter().artifact(path)


def log(line: str, *, stream: str = "stdout") -> None:
    """:meth:`Reporter.log` on the default reporter."""
    default_reporter().log(line, stream=stream)


def flush(timeout: float | None = None) -> bool:
    """:meth:`Reporter.flush` on the default reporter."""
    return default_reporter().flush(timeout)


# --------------------------------------------------------------------------- command stages


@dataclass
class _StreamState:
    last_lines: collections.deque = field(
        default_factory=lambda: collections.deque(maxlen=LAST_LINES)
    )
    forwarded: int = 0
    log_lines: int = 0
    bad_lines: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    echo: bool = False


def run_command_stage(
    *,
    command: str,
    cwd: str | os.PathLike[str],
    env: Mapping[str, str] | None = None,
    reporter: Reporter,
    timeout_s: float | None = None,
    echo: bool = False,
) -> CommandOutcome:
    """Run a shell-command stage (``bash -c command`` in ``cwd``) and report what it prints.

    ``env`` is added to this process's environment, with TETHER_RUN_ID/TRIAL/STAGE from
    ``reporter`` and TETHER_REPORT_TO=stdout, so ``cluster.reporter.get_reporter()`` in the
    command prints TETHER lines to a pipe of their own (TETHER_REPORT_FD), so they never mix
    with what the program prints (and PYTHONUNBUFFERED=1 unless ``env`` says otherwise).
    Each such line, and each stdout line ``TETHER {json}``, is forwarded as an event (kind
    defaults to progress); a malformed one becomes a log event plus a warning alert. Every
    other line of stdout and stderr becomes a log event. The last 50 plain lines come back
    for error reports. After ``timeout_s`` the command's whole process group is terminated
    (then killed) and the outcome says ``timed_out`` with exit code 124. ``echo`` also
    prints the plain lines on this process's real stdout/stderr (in a Ray task: the job
    log).
    """
    if timeout_s is not None and not timeout_s > 0:
        raise ReporterConfigError(f"timeout_s={timeout_s!r}: must be > 0 (or None)")
    full_env = dict(os.environ)
    full_env.setdefault("PYTHONUNBUFFERED", "1")
    full_env.update(env or {})
    full_env[ENV_REPORT_TO] = "stdout"
    for key, value in ((ENV_RUN_ID, reporter.run_id), (ENV_TRIAL, reporter.trial)):
        if value:
            full_env[key] = value
    if reporter.stage_name:
        full_env[ENV_STAGE] = reporter.stage_name
    events_r, events_w = os.pipe()  # the child's reporters write TETHER lines here
    full_env[ENV_REPORT_FD] = str(events_w)
    try:
        proc = subprocess.Popen(
            ["bash", "-c", command],
            cwd=os.fspath(cwd),
            env=full_env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            pass_fds=(events_w,),
            start_new_session=True,  # its own process group: a timeout kills all of it
        )
    except BaseException:
        os.close(events_r)
        raise
    finally:
        os.close(events_w)
    state = _StreamState(echo=echo)
    events_pipe = os.fdopen(events_r, "rb")
    readers = [
        threading.Thread(target=_pump, args=(proc.stdout, "stdout", reporter, state), daemon=True),
        threading.Thread(target=_pump, args=(proc.stderr, "stderr", reporter, state), daemon=True),
        threading.Thread(target=_pump, args=(events_pipe, "stdout", reporter, state), daemon=True),
    ]
    for t in readers:
        t.start()
    timed_out = False
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc)
    except BaseException:
        _kill_group(proc)
        raise
    for t in readers:
        t.join(timeout=5.0)
    if any(t.is_alive() for t in readers):  # something it started still holds the pipes
        _kill_group(proc)
        for t in readers:
            t.join(timeout=5.0)
    if state.bad_lines > _MAX_BAD_LINE_ALERTS:
        reporter.alert(
            f"{state.bad_lines - _MAX_BAD_LINE_ALERTS} more malformed TETHER lines "
            "(kept as log events)",
            level="warning",
            code="reporter:bad_tether_line",
        )
    rc = proc.returncode
    exit_code = COMMAND_TIMEOUT_EXIT_CODE if timed_out else (rc if rc >= 0 else 128 - rc)
    if timed_out:
        reporter.alert(
            f"command timed out after {timeout_s:g}s and was killed: {command}",
            level="critical",
            code="stage:timeout",
        )
    with state.lock:
        last = list(state.last_lines)
    return CommandOutcome(
        exit_code=exit_code,
        last_lines=last,
        events_forwarded=state.forwarded,
        timed_out=timed_out,
        log_lines=state.log_lines,
        bad_lines=state.bad_lines,
    )


def _pump(pipe: Any, stream: str, reporter: Reporter, state: _StreamState) -> None:
    """Read one pipe line by line (binary, decoded leniently) until EOF."""
    with pipe:
        for raw in iter(lambda: pipe.readline(_MAX_LINE_BYTES), b""):
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            if stream == "stdout":
                try:
                    event = parse_tether_line(line)
                except TetherLineError as exc:
                    with state.lock:
                        state.bad_lines += 1
                        n_bad = state.bad_lines
                        state.last_lines.append(line)
                    reporter.log(line, stream=stream)
                    if n_bad <= _MAX_BAD_LINE_ALERTS:
                        reporter.alert(
                            f"malformed TETHER line on stdout: {exc} -- {line[:200]}",
                            level="warning",
                            code="reporter:bad_tether_line",
                        )
                    continue
                if event is not None:
                    reporter.forward(event)
                    with state.lock:
                        state.forwarded += 1
                    continue
            reporter.log(line, stream=stream)
            if state.echo:  # the real stream, not a tee that would log the line twice
                out = sys.__stdout__ if stream == "stdout" else sys.__stderr__
                with contextlib.suppress(Exception):
                    out.write(line + "\n")
                    out.flush()
            with state.lock:
                state.log_lines += 1
                state.last_lines.append(line)


def _kill_group(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL it if the leader is still there."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=_KILL_GRACE_S)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
