"""The one event schema: every reporter, the run monitor, the TUI and the reports share it.

An event is a plain JSON-able dict (one line of ``events.jsonl``). Every event carries the
common fields ``time`` (epoch seconds), ``run``, ``trial``, ``stage``, ``worker`` and
``kind``; the monitor adds ``seq`` (per run, 1, 2, 3, ... with no gaps), ``src`` and
``batch`` (who pushed it, for idempotent retries) and marks the last line of each durable
write with ``batch_end``. Kind-specific fields:

========== ===========================================================================
heartbeat  host, pid, rss_mb, gpus (list of dicts or None), progress_step (optional)
progress   step, epoch (1-based), metrics (dict name -> number); epoch_end (optional)
metric     name, value, step, epoch
stage      status (started|finished|failed), error (optional), last_log_lines (optional);
           the run's own end is a stage event with ``terminal: true`` and ``run_status``
alert      level (info|warning|critical), code, message; health alerts add ``health``,
           training-curve alerts add ``epoch``
artifact   path, bytes, sha256
log        stream, line
========== ===========================================================================

Non-finite metric values (NaN, inf) are kept: they are written as Python's ``json`` does
(``NaN``, ``Infinity``), since a NaN loss is exactly what a divergence alert needs to see.
"""

from __future__ import annotations

import json
import math
import re
import time as _time
from enum import Enum
from typing import Any

from .errors import ClusterRuntimeError


class EventError(ClusterRuntimeError):
    """An event does not follow the schema; the message names the field and the fix."""


class Kind(str, Enum):
    HEARTBEAT = "heartbeat"
    PROGRESS = "progress"
    METRIC = "metric"
    STAGE = "stage"
    ALERT = "alert"
    ARTIFACT = "artifact"
    LOG = "log"


class StageStatus(str, Enum):
    STARTED = "started"
    FINISHED = "finished"
    FAILED = "failed"

    def is_terminal(self) -> bool:
        return self is not StageStatus.STARTED


class AlertLevel(str, Enum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class Health(str, Enum):
    """Health of one worker: alive and progressing, alive but stuck, gone, or done."""

    OK = "ok"
    STALLED = "stalled"
    DEAD = "dead"
    FINISHED = "finished"
    FAILED = "failed"

    def is_terminal(self) -> bool:
        return self in (Health.FINISHED, Health.FAILED)


class RunStatus(str, Enum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"

    def is_terminal(self) -> bool:
        return self is not RunStatus.RUNNING


COMMON_FIELDS = ("time", "run", "trial", "stage", "worker", "kind")
# Added by the monitor when it stores an event.
STORED_FIELDS = ("seq", "src", "batch")

_SHA256 = re.compile(r"[0-9a-f]{64}")


def make_event(
    *,
    kind: Kind | str,
    run: str,
    trial: str | None = None,
    stage: str | None = None,
    worker: str | None = None,
    time: float | None = None,
    **fields: Any,
) -> dict:
    """Build and validate one event; ``time`` defaults to now (epoch seconds)."""
    event = {
        "time": _time.time() if time is None else time,
        "run": run,
        "trial": trial,
        "stage": stage,
        "worker": worker,
        "kind": kind,
        **fields,
    }
    return validate_event(event)


# --------------------------------------------------------------------------- validation


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _need(d: dict, key: str, what: str, ok) -> None:
    if key not in d:
        raise EventError(f"{_where(d)}: missing field {key!r} ({what})")
    if not ok(d[key]):
        raise EventError(f"{_where(d)}: field {key!r} is {d[key]!r}; expected {what}")


def _maybe(d: dict, key: str, what: str, ok) -> None:
    if d.get(key) is not None and not ok(d[key]):
        raise EventError(f"{_where(d)}: field {key!r} is {d[key]!r}; expected {what} or null")


def _where(d: dict) -> str:
    kind = d.get("kind")
    kind = kind.value if isinstance(kind, Enum) else kind
    seq = f" seq {d['seq']}" if "seq" in d else ""
    return f"{kind or 'event'} event{seq}"


def _str(v: Any) -> bool:
    return isinstance(v, str)


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _opt_int(v: Any) -> bool:
    return v is None or _int(v)


def _opt_number(v: Any) -> bool:
    return v is None or _is_number(v)


def _opt_list(v: Any) -> bool:
    return v is None or isinstance(v, list)


def _str_list(v: Any) -> bool:
    return isinstance(v, list) and all(map(_str, v))


def _metrics(v: Any) -> bool:
    return isinstance(v, dict) and all(_str(k) and _opt_number(x) for k, x in v.items())


def _enum_value(d: dict, key: str, enum: type[Enum]) -> None:
    value = d.get(key)
    if isinstance(value, enum):
        d[key] = value.value
        return
    allowed = [m.value for m in enum]
    if value not in allowed:
        raise EventError(f"{_where(d)}: field {key!r} is {value!r}; expected one of {allowed}")


def validate_event(d: dict) -> dict:
    """Check ``d`` against the schema and return a normalised copy (enums as strings, the
    optional common fields present). Raises :class:`EventError` naming the bad field."""
    if not isinstance(d, dict):
        raise EventError(f"an event is a dict, not {type(d).__name__}: {d!r:.200}")
    e = dict(d)
    for key in ("trial", "stage", "worker"):
        e.setdefault(key, None)
    _enum_value(e, "kind", Kind)
    _need(
        e, "time", "epoch seconds (a finite number)", lambda v: _is_number(v) and math.isfinite(v)
    )
    _need(e, "run", "the run id (a non-empty string)", lambda v: _str(v) and bool(v))
    for key in ("trial", "stage", "worker"):
        _maybe(e, key, "a string", _str)
    if "seq" in e:
        _need(e, "seq", "an integer >= 1", lambda v: _int(v) and v >= 1)
    kind = Kind(e["kind"])
    if kind is Kind.HEARTBEAT:
        _need(e, "worker", "the id of the worker that beats", lambda v: _str(v) and bool(v))
        _need(e, "host", "a host name", _str)
        _need(e, "pid", "a process id", _int)
        _need(e, "rss_mb", "resident memory in MiB", _opt_number)
        _need(e, "gpus", "a list of per-GPU dicts, or null without a GPU", _opt_list)
        _maybe(e, "progress_step", "an integer step", _int)
    elif kind is Kind.PROGRESS:
        _need(e, "step", "an integer step or null", _opt_int)
        _need(e, "epoch", "an integer epoch (1-based) or null", _opt_int)
        _need(e, "metrics", "a dict of metric name -> number", _metrics)
        _maybe(e, "epoch_end", "a boolean", lambda v: isinstance(v, bool))
    elif kind is Kind.METRIC:
        _need(e, "name", "a metric name", lambda v: _str(v) and bool(v))
        _need(e, "value", "a number or null", _opt_number)
        _need(e, "step", "an integer step or null", _opt_int)
        _need(e, "epoch", "an integer epoch or null", _opt_int)
    elif kind is Kind.STAGE:
        _enum_value(e, "status", StageStatus)
        _maybe(e, "error", "an error message", _str)
        _maybe(e, "last_log_lines", "a list of strings", _str_list)
    elif kind is Kind.ALERT:
        _enum_value(e, "level", AlertLevel)
        _need(e, "code", "a short stable code, e.g. health:stalled", lambda v: _str(v) and bool(v))
        _need(e, "message", "a message", _str)
    elif kind is Kind.ARTIFACT:
        _need(e, "path", "a path relative to the run directory", lambda v: _str(v) and bool(v))
        _need(e, "bytes", "a size in bytes", lambda v: _int(v) and v >= 0)
        _need(e, "sha256", "64 lowercase hex digits", lambda v: _str(v) and _SHA256.fullmatch(v))
    elif kind is Kind.LOG:
        _need(e, "stream", "the stream name, e.g. stdout", _str)
        _need(e, "line", "the text of the line", _str)
    try:
        json.dumps(e)
    except (TypeError, ValueError) as exc:
        raise EventError(f"{_where(e)} is not JSON-able: {exc}") from None
    return e


def dumps(event: dict) -> str:
    """One line of ``events.jsonl`` (no newline): compact, keys in schema order."""
    return json.dumps(event, separators=(",", ":"))
