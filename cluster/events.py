"""The one event schema: every reporter, the run monitor, the TUI and the reports share it.

Ray-free and torch-free: the laptop imports it to read and check events without a cluster.
One module on purpose (a little over 400 lines): every kind, field, check, coercion and
actor name of the event path is in this one place.

An event is a plain JSON-able dict (one line of ``events.jsonl``). Every event carries the
common fields ``time`` (epoch seconds), ``run``, ``trial``, ``stage``, ``worker`` and
``kind``; the monitor adds ``seq`` (per run, 1, 2, 3, ... with no gaps), ``src`` and
``batch`` (who pushed it, for idempotent retries) and marks the last line of each durable
write with ``batch_end``. Kind-specific fields:

========== ===========================================================================
heartbeat  host, pid, rss_mb, gpus (list of dicts or None), progress_step (optional);
           the last one of a process that ended: ``ended: true`` and exit_code (optional)
progress   step, epoch (1-based), metrics (dict name -> number); epoch_end (optional)
metric     name, value, step, epoch
stage      status (started|finished|failed), error (optional), last_log_lines (optional);
           a start may say attempt (1 first, 2 the first retry, ...),
           resumed_from_epoch (the epoch of the checkpoint it resumed from), epochs (the
           built-in training's planned epochs) and gpu_ids (a compare trial's, from Ray);
           the run's own end is a stage event with ``terminal: true`` and ``run_status``
alert      level (info|warning|critical), code, message; health alerts add ``health``,
           training-curve alerts add ``epoch``, a stage commit (``git:committed``) ``commit``
artifact   path, bytes, sha256
log        stream, line
sync       ok; then files, transferred, bytes, unchanged, skipped, refused, deleted,
           duration_s, or error when the pull failed (``tether pull``'s record of a pull)
========== ===========================================================================

Non-finite metric values (NaN, inf) are kept: they are written as Python's ``json`` does
(``NaN``, ``Infinity``), since a NaN loss is exactly what a divergence alert needs to see.

The run's actors are named here too: the monitor ``run:<run-id>``, the artifact sink
``sink:<run-id>`` and the head checkpoint store ``ckpt:<run-id>``, all in namespace
:data:`NAMESPACE`.
"""

from __future__ import annotations

import contextlib
import enum
import json
import math
import os
import re
import time as _time
from collections.abc import Mapping
from enum import Enum
from typing import Any

from .errors import ClusterRuntimeError

NAMESPACE = "tether"  # the Ray namespace of every actor of a run


def monitor_name(*, run_id: str) -> str:
    """Name of the run monitor actor of ``run_id`` (in namespace :data:`NAMESPACE`)."""
    return f"run:{run_id}"


HEAD_ACTOR_KINDS = ("sink", "ckpt")  # the artifact sink, the head checkpoint store


def head_actor_name(*, kind: str, run_id: str) -> str:
    """Name of the run's head-pinned file actor: ``sink:<run-id>`` or ``ckpt:<run-id>``."""
    if kind not in HEAD_ACTOR_KINDS:
        raise ValueError(f"head actor kind {kind!r}: use one of {HEAD_ACTOR_KINDS}")
    return f"{kind}:{run_id}"


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
    SYNC = "sync"


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


EVENT_KINDS = frozenset(k.value for k in Kind)
COMMON_FIELDS = ("time", "run", "trial", "stage", "worker", "kind")
# Added by the monitor when it stores an event.
STORED_FIELDS = ("seq", "src", "batch")
# Keys every event carries; a reporter stamps them, its callers cannot override them.
IDENTITY_KEYS = frozenset({"seq", *COMMON_FIELDS})
# What a receiver adds when it stores an event: never taken from an event passed on.
RECEIVER_KEYS = frozenset({*STORED_FIELDS, "batch_end"})

_SHA256 = re.compile(r"[0-9a-f]{64}")
_SHA1 = re.compile(r"[0-9a-f]{40}")


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


def _count(v: Any) -> bool:
    return _int(v) and v >= 0


def _bool(v: Any) -> bool:
    return isinstance(v, bool)


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


def _check_heartbeat(e: dict) -> None:
    _need(e, "worker", "the id of the worker that beats", lambda v: _str(v) and bool(v))
    _need(e, "host", "a host name", _str)
    _need(e, "pid", "a process id", _int)
    _need(e, "rss_mb", "resident memory in MiB", _opt_number)
    _need(e, "gpus", "a list of per-GPU dicts, or null without a GPU", _opt_list)
    _maybe(e, "progress_step", "an integer step", _int)
    _maybe(e, "ended", "a boolean", _bool)
    _maybe(e, "exit_code", "the process's exit status", _int)


def _check_progress(e: dict) -> None:
    _need(e, "step", "an integer step or null", _opt_int)
    _need(e, "epoch", "an integer epoch (1-based) or null", _opt_int)
    _need(e, "metrics", "a dict of metric name -> number", _metrics)
    _maybe(e, "epoch_end", "a boolean", _bool)


def _check_metric(e: dict) -> None:
    _need(e, "name", "a metric name", lambda v: _str(v) and bool(v))
    _need(e, "value", "a number or null", _opt_number)
    _need(e, "step", "an integer step or null", _opt_int)
    _need(e, "epoch", "an integer epoch or null", _opt_int)


def _check_stage(e: dict) -> None:
    _enum_value(e, "status", StageStatus)
    _maybe(e, "error", "an error message", _str)
    _maybe(e, "last_log_lines", "a list of strings", _str_list)
    _maybe(e, "attempt", "the attempt number (1 is the first)", lambda v: _int(v) and v >= 1)
    _maybe(e, "resumed_from_epoch", "the checkpoint's epoch", _count)


def _check_alert(e: dict) -> None:
    _enum_value(e, "level", AlertLevel)
    _need(e, "code", "a short stable code, e.g. health:stalled", lambda v: _str(v) and bool(v))
    _need(e, "message", "a message", _str)
    _maybe(e, "commit", "a commit id (40 hex digits)", lambda v: _str(v) and _SHA1.fullmatch(v))


def _check_artifact(e: dict) -> None:
    _need(e, "path", "a path relative to the run directory", lambda v: _str(v) and bool(v))
    _need(e, "bytes", "a size in bytes", _count)
    _need(e, "sha256", "64 lowercase hex digits", lambda v: _str(v) and _SHA256.fullmatch(v))


def _check_log(e: dict) -> None:
    _need(e, "stream", "the stream name, e.g. stdout", _str)
    _need(e, "line", "the text of the line", _str)


def _check_sync(e: dict) -> None:
    _need(e, "ok", "whether the pull succeeded (a boolean)", _bool)
    if not e["ok"]:
        _need(e, "error", "what went wrong", _str)
        return
    for key in ("files", "bytes", "unchanged"):
        _need(e, key, "a count (an integer >= 0)", _count)
    _need(e, "transferred", "a list of the paths pulled", _str_list)
    for key in ("skipped", "refused"):
        _need(e, key, "a list of [path, reason] pairs", lambda v: isinstance(v, list))
    _need(e, "deleted", "a list of the paths deleted", _str_list)
    _need(e, "duration_s", "seconds (a number)", _is_number)
    if "sent_bytes" in e:  # what crossed the channel (a grown file's tail only)
        _need(e, "sent_bytes", "a count (an integer >= 0)", _count)
    if "appended" in e:
        _need(e, "appended", "a list of the paths extended by their tail", _str_list)


_KIND_CHECKS = {
    Kind.HEARTBEAT: _check_heartbeat,
    Kind.PROGRESS: _check_progress,
    Kind.METRIC: _check_metric,
    Kind.STAGE: _check_stage,
    Kind.ALERT: _check_alert,
    Kind.ARTIFACT: _check_artifact,
    Kind.LOG: _check_log,
    Kind.SYNC: _check_sync,
}


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
    _KIND_CHECKS[Kind(e["kind"])](e)
    try:
        json.dumps(e)
    except (TypeError, ValueError) as exc:
        raise EventError(f"{_where(e)} is not JSON-able: {exc}") from None
    return e


def _is_opt_int(v: Any) -> bool:
    return v is None or type(v) is int


def _is_opt_number(v: Any) -> bool:
    return v is None or type(v) is float or type(v) is int


def surely_valid(ev: dict) -> bool:
    """True when ``ev`` (built by a reporter: common fields checked when it was made, values
    made JSON-safe) surely follows the schema. The frequent kinds (progress, log, metric) are
    checked here, in a fraction of :func:`validate_event`'s time; False means: ask it."""
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


# --------------------------------------------------------------------------- JSON values

_PLAIN = (str, int, float, bool, type(None))


def json_safe(value: Any) -> Any:
    """``value`` made of JSON types only: numpy/torch scalars become numbers (``.item()``),
    tuples and sets lists, enums their value, paths strings, anything else its ``str``."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [json_safe(v) for v in value]
    if isinstance(value, enum.Enum):
        return json_safe(value.value)
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


def json_safe_fields(fields: dict) -> dict:
    """:func:`json_safe` applied in place to the values of a flat dict (the hot path's)."""
    for k, v in fields.items():
        if type(v) not in _PLAIN:
            fields[k] = json_safe(v)
    return fields


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


def coerced(ev: dict) -> dict:
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


def dumps(event: Mapping) -> str:
    """One line of ``events.jsonl`` (no newline): compact, keys in the event's order; a value
    JSON cannot hold is written as :func:`json_safe` makes it (a number, a list, a string)."""
    return json.dumps(event, separators=(",", ":"), default=json_safe)
