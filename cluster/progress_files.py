"""The run directory's readable views of the events: ``PROGRESS.txt`` (milestones: stage
starts and ends, epochs, alerts, errors) and ``HEARTBEAT.txt`` (one row per worker: health,
host, pid, ages of its last beat and progress, RSS, step). The run monitor rewrites them
(atomically) from its state; they are views, ``events.jsonl`` is the record."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING

from tether.ml.atomic import write_bytes_atomic
from tether.ml.numfmt import metric_value

if TYPE_CHECKING:
    from .health import HealthRules
    from .monitor_state import MonitorState, WorkerState

log = logging.getLogger(__name__)

PROGRESS_FILE = "PROGRESS.txt"
HEARTBEAT_FILE = "HEARTBEAT.txt"

_HEARTBEAT_COLUMNS = (
    "worker",
    "health",
    "host",
    "pid",
    "beat_age_s",
    "progress_age_s",
    "rss_mb",
    "step",
    "trial",
    "stage",
)


def progress_text(*, run_id: str, lines: Iterable[str]) -> str:
    head = f"# run {run_id}: stage starts and ends, epochs, alerts, errors\n"
    return head + "".join(line + "\n" for line in lines)


def progress_line(*, time: float, trial: str | None, stage: str | None, text: str) -> str:
    """One PROGRESS.txt line: ``2026-11-22 10:15:00  [trial/stage] text``."""
    scope = "/".join(x for x in (trial, stage) if x)
    scope = f"[{scope}] " if scope else ""
    return f"{stamp(time)}  {scope}{text}"


def worker_row(w: WorkerState, now: float) -> dict:
    """A worker as the monitor's ``summary()`` shows it."""
    return {
        "worker": w.worker,
        "health": w.health.value,
        "host": w.host,
        "pid": w.pid,
        "trial": w.trial,
        "stage": w.stage,
        "rss_mb": w.rss_mb,
        "gpus": w.gpus,
        "progress_step": w.progress_step,
        "last_beat_age_s": max(0.0, now - w.last_beat),
        "last_progress_age_s": max(0.0, now - w.last_progress),
    }


def heartbeat_text(
    *,
    run_id: str,
    status: str,
    now: float,
    heartbeat_s: float,
    stall_timeout_s: float,
    workers: Iterable[WorkerState],
) -> str:
    lines = [
        f"# run {run_id} ({status}) at {stamp(now)} UTC: heartbeat every "
        f"{heartbeat_s:g} s, dead after {2 * heartbeat_s:g} s without one, "
        f"stalled after {stall_timeout_s:g} s without progress",
    ]
    rows = [_HEARTBEAT_COLUMNS]
    for w in workers:
        r = worker_row(w, now)
        rows.append(
            (
                w.worker,
                r["health"],
                w.host or "-",
                str(w.pid or "-"),
                age(r["last_beat_age_s"]),
                age(r["last_progress_age_s"]),
                metric_value(w.rss_mb) if w.rss_mb is not None else "-",
                str(w.progress_step if w.progress_step is not None else "-"),
                w.trial or "-",
                w.stage or "-",
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(_HEARTBEAT_COLUMNS))]
    lines += ["  ".join(c.ljust(n) for c, n in zip(r, widths, strict=True)).rstrip() for r in rows]
    if len(rows) == 1:
        lines.append("(no worker has reported yet)")
    return "\n".join(lines) + "\n"


def stamp(t: float) -> str:
    try:
        return datetime.fromtimestamp(t, tz=timezone.utc).strftime("%Y-%m-%d %H:%M:%S")
    except (OverflowError, OSError, ValueError):
        return f"t={t:.0f}"


def age(seconds: float) -> str:
    return f"{seconds:.1f}" if seconds < 100 else f"{seconds:.0f}"


class ProgressFiles:
    """Rewrites a run directory's PROGRESS.txt when it has new lines, and HEARTBEAT.txt when
    forced, after a new PROGRESS line (it may be a health change), or at most every
    ``heartbeat_every_s`` otherwise. A failed rewrite is logged, never raised: the events are
    safe, these files are a view of them."""

    def __init__(self, *, run_dir: Path, run_id: str, heartbeat_every_s: float = 1.0) -> None:
        self.run_dir, self.run_id = Path(run_dir), run_id
        self.heartbeat_every_s = heartbeat_every_s
        self._progress_written = -1
        self._heartbeat_written_at = -math.inf

    def write(self, state: MonitorState, *, now: float, rules: HealthRules, force: bool) -> None:
        if not self.run_dir.is_dir():  # removed (`tether prune`): never create it again
            return
        try:
            if len(state.progress_lines) != self._progress_written:
                text = progress_text(run_id=self.run_id, lines=state.progress_lines)
                write_bytes_atomic(self.run_dir / PROGRESS_FILE, text.encode())
                self._progress_written = len(state.progress_lines)
                force = True
            if force or time.monotonic() - self._heartbeat_written_at >= self.heartbeat_every_s:
                text = heartbeat_text(
                    run_id=self.run_id, status=state.status.value, now=now,
                    heartbeat_s=rules.heartbeat_s, stall_timeout_s=rules.stall_timeout_s,
                    workers=state.workers.values(),
                )  # fmt: skip
                write_bytes_atomic(self.run_dir / HEARTBEAT_FILE, text.encode())
                self._heartbeat_written_at = time.monotonic()
        except OSError as exc:
            log.warning("run %s: could not rewrite PROGRESS/HEARTBEAT: %s", self.run_id, exc)
