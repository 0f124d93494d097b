"""What the job's driver (the pipeline, the compare stage) says in the run's events itself:
alerts, and the failure of a task that could not report it (killed, cancelled, its retries
used up). Pushed straight to the run monitor, so the driver has no heartbeat to go stale."""

from __future__ import annotations

import uuid
from typing import Any

import ray

from .events import make_event
from .stage_task import LAST_LINES


class DriverEvents:
    """Events the driver itself adds, under a worker id of its own."""

    def __init__(self, monitor, run_id: str) -> None:
        self.monitor, self.run_id = monitor, run_id
        self.src = f"driver-{uuid.uuid4().hex[:8]}"
        self.batch = 0

    def push(self, kind: str, **fields: Any) -> None:
        self.batch += 1
        event = make_event(kind=kind, run=self.run_id, **fields)
        ray.get(self.monitor.push.remote(reporter=self.src, batch=self.batch, events=[event]))

    def alert(
        self, message: str, *, level: str = "info", code: str, stage: str | None = None,
        trial: str | None = None, **fields: Any,
    ) -> None:  # fmt: skip
        self.push(
            "alert", level=level, code=code, message=message, stage=stage, trial=trial, **fields
        )

    def commit(self, committer, *, stage: str, summary: str, paths) -> str | None:
        """Commit ``paths`` for ``stage`` (``StageCommitter.commit_stage``) and say so in a
        ``git:committed`` alert with the commit id (what the TUI's stage strip shows).
        Returns the commit, None when nothing changed; raises ``StageCommitError``."""
        from .gitstage import stage_message

        commit = committer.commit_stage(stage=stage, summary=summary, paths=paths)
        if commit is not None:
            self.alert(
                f"committed {commit[:10]} {stage_message(stage, summary)}", code="git:committed",
                stage=stage, commit=commit,
            )  # fmt: skip
        return commit

    def fail_for_task(
        self, *, stage: str, since: int, error: str, trial: str | None = None
    ) -> list[str]:
        """When the task could not say it failed (killed, cancelled), say it for it: a
        ``failed`` stage event under the task's worker id, with its last log lines from the
        events since ``since``. Returns those lines (none when the task reported its own
        failure)."""
        summary = ray.get(self.monitor.summary.remote())
        row = next(
            (s for s in summary["stages"] if s["stage"] == stage and s["trial"] == trial), None
        )
        if row is not None and row["status"] == "failed":
            return []  # the task reported its own failure (its error carries the lines)
        lines: list[str] = []
        seq = since
        while True:
            page = ray.get(self.monitor.events.remote(since_seq=seq, limit=5000))
            if not page:
                break
            seq = page[-1]["seq"]
            lines.extend(
                e["line"]
                for e in page
                if e["kind"] == "log" and e["stage"] == stage and e.get("trial") == trial
            )
            lines = lines[-LAST_LINES:]
        self.push(
            "stage",
            stage=stage,
            trial=trial,
            worker=row["worker"] if row else None,
            status="failed",
            error=error,
            last_log_lines=lines,
        )
        return lines


def task_error(exc: BaseException, *, max_retries: int) -> tuple[str, list[str]]:
    """What a task's ``ray.get`` raised, as (error, last output lines): the stage's own
    error, the application exception, or its worker's death once the retries are used up."""
    from .stages import StageError

    if isinstance(exc, ray.exceptions.RayTaskError):
        cause = exc.cause if exc.cause is not None else exc
        if isinstance(cause, StageError):
            return str(cause), list(cause.last_lines)
        return f"{type(cause).__name__}: {cause}", []
    first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"the task's worker died and its {max_retries} retries are used up "
        f"({type(exc).__name__}: {first})"
    ), []
