"""The reporter: what every task, and the user's own training code, calls to say what it does.

    from tether.cluster.reporter import get_reporter

    with get_reporter() as r:                     # run/trial/stage from TETHER_* env vars
        for step in range(n):
            r.report(step=step, metrics={"loss": loss})   # non-blocking: one deque append

or, through the process-wide default reporter, ``tether.cluster.reporter.report(...)``.

This module is the reporter's public face: :func:`get_reporter` (which transport), the
process-wide default reporter and its module-level functions. The pieces live in modules of
their own: the batching reporter (``cluster.batch_reporter``, its thread
``cluster.batching``), the transports (``cluster.transports``), the heartbeat probe
(``cluster.probe``), command stages and their ``TETHER`` line protocol
(``cluster.command_stage``), the event schema (``cluster.events``).
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Mapping
from typing import Any

from .batch_reporter import ArtifactRecord, Reporter, ReporterConfigError, ReporterStats
from .command_stage import ENV_REPORT_FD, ENV_REPORT_TO, ENV_RUN_ID, ENV_STAGE, ENV_TRIAL
from .events import NAMESPACE, monitor_name
from .transports import JsonlTransport, MonitorTransport, StdoutTransport, Transport

__all__ = [
    "DEFAULT_EVENTS_PATH",
    "ENV_EVENTS_PATH",
    "ArtifactRecord",
    "Reporter",
    "ReporterConfigError",
    "ReporterStats",
    "alert",
    "artifact",
    "close_default_reporter",
    "default_reporter",
    "flush",
    "get_reporter",
    "log",
    "metric",
    "report",
    "set_default_reporter",
    "stage",
]

DEFAULT_EVENTS_PATH = "tether-events.jsonl"
ENV_EVENTS_PATH = "TETHER_EVENTS_PATH"


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
                f"{NAMESPACE!r}; reporting to a local events file instead",
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


# --------------------------------------------------------------------------- the default

_DEFAULT: Reporter | None = None
_DEFAULT_LOCK = threading.Lock()


def default_reporter() -> Reporter:
    """The process-global reporter the module-level functions use: the one given to
    :func:`set_default_reporter`, else one made by :func:`get_reporter` on first use (again
    after it was closed, or in a forked child)."""
    global _DEFAULT
    r = _DEFAULT
    if r is not None and not r.closed and r.pid == os.getpid():
        return r
    with _DEFAULT_LOCK:
        r = _DEFAULT
        if r is None or r.closed or r.pid != os.getpid():
            r = _DEFAULT = get_reporter()
        return r


def set_default_reporter(reporter: Reporter | None) -> Reporter | None:
    """Make ``reporter`` the process-global default (e.g. a stage task's own reporter, so the
    user code it calls can use ``tether.cluster.reporter.report(...)``); returns the previous
    one."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        previous, _DEFAULT = _DEFAULT, reporter
    return previous


def close_default_reporter(*, timeout: float | None = 30.0) -> bool:
    """Close the process-global default reporter, if one was made; True when all was sent."""
    r = set_default_reporter(None)
    return r.close(timeout=timeout) if r is not None else True


def report(
    *,
    step: int | None = None,
    epoch: int | None = None,
    metrics: Mapping | None = None,
    epoch_end: bool = False,
) -> None:
    """:meth:`Reporter.report` on the default reporter."""
    default_reporter().report(step=step, epoch=epoch, metrics=metrics, epoch_end=epoch_end)


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
