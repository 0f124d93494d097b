"""The stage pipeline: a spec's stages, in order, each a Ray task; a commit after each.

The driver (the job's entrypoint, on the head node) starts the run's monitor, then for each
stage submits one Ray task with the stage's resources (``num_cpus``, ``num_gpus``,
``memory_mb``), ``max_retries`` (Ray retries a task whose worker or node died) and
``retry_exceptions`` (also retry application errors; off by default), and waits for it at
most ``timeout_s`` (then cancels it). The task (``cluster.stage_task``) reports through its
own reporter (heartbeat, progress, ``stage`` events, log lines), writes its files into a local
folder and ships them to ``<run_dir>/<stage>/`` through the run's artifact sink: tasks never
write into the head's run directory themselves.

After a stage succeeds the driver commits ``<run_dir>/<stage>/`` on the run branch in the
worktree (one committer; checkpoints and oversized files never staged) with a conventional
message, pushes when the branch has an upstream (a failed push is an alert, retried after the
next stage), and records the stage with its commit in ``<run_dir>/run_state.json``. A stage
that fails ends the run ``failed``: earlier commits stay, the failed stage's partial files are
in the run directory, the error and last log lines are in the events and ``PROGRESS.txt``.
``run_pipeline(..., resume=True)`` re-runs only the stages not finished.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from pydantic import BaseModel, Field

from tether.ml.atomic import write_json_atomic

from .artifacts import release_sinks
from .compare_stage import run_compare
from .driver_events import DriverEvents, task_error
from .errors import ClusterRuntimeError
from .gitstage import StageCommitError, StageCommitter
from .monitor import start_monitor
from .spec import ExperimentSpec, StageSpec
from .stage_task import remote_stage_task

STATE_FILE = "run_state.json"
COMMAND_GRACE_S = 15.0  # a command stage stops itself at timeout_s; the driver waits this longer


class PipelineError(ClusterRuntimeError):
    """The pipeline cannot start or resume as asked; the message says what to change."""


# --------------------------------------------------------------------------- run state


class StageRecord(BaseModel):
    name: str
    status: str = "pending"  # pending, finished, failed
    commit: str | None = None
    summary: str = ""
    error: str | None = None
    started: float | None = None
    ended: float | None = None
    node: str | None = None


class RunState(BaseModel):
    """``<run_dir>/run_state.json``: which stages are done, with their commits."""

    run_id: str
    spec_sha256: str
    branch: str | None
    status: str = "running"  # running, succeeded, failed
    error: str | None = None
    stages: dict[str, StageRecord] = Field(default_factory=dict)


def spec_digest(spec: ExperimentSpec) -> str:
    return hashlib.sha256(spec.model_dump_json().encode()).hexdigest()


def read_state(run_dir: Path) -> RunState | None:
    path = Path(run_dir) / STATE_FILE
    if not path.exists():
        return None
    try:
        return RunState.model_validate_json(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise PipelineError(
            f"{path} is damaged ({str(exc).splitlines()[0]}): restore it from the run branch's "
            "history or start a new run"
        ) from None


def _save_state(run_dir: Path, state: RunState) -> None:
    write_json_atomic(Path(run_dir) / STATE_FILE, state.model_dump())


# --------------------------------------------------------------------------- the driver


@dataclass(frozen=True)
class PipelineResult:
    status: str  # succeeded or failed
    state: RunState
    error: str | None = None


def run_pipeline(
    *,
    run_id: str,
    spec: ExperimentSpec,
    run_dir: Path,
    worktree: Path,
    checkpoint_dir: Path,
    commit: bool = True,
    resume: bool = False,
    heartbeat_s: float = 30.0,
    stall_timeout_s: float = 300.0,
    secrets: Mapping[str, str] | None = None,
) -> PipelineResult:
    """Run ``spec``'s stages for run ``run_id`` (connected to Ray already).

    ``run_dir`` (on this, the head node) receives every stage's files, ``events.jsonl`` and
    ``run_state.json``; with ``commit`` it must lie inside ``worktree``, which must have the
    run branch checked out. ``resume`` skips the stages ``run_state.json`` lists as finished.
    ``secrets`` (e.g. ANTHROPIC_API_KEY) are set in each stage task's environment while its
    body runs: passed as a task argument, never in runtime_env, events or files.
    Raises :class:`PipelineError` when it cannot start; a failing stage is a ``failed``
    result, not an exception."""
    run_dir, worktree = Path(run_dir).resolve(), Path(worktree).resolve()
    checkpoint_dir = Path(checkpoint_dir).resolve()
    branch = spec.run_branch(run_id)
    committer = _committer(worktree=worktree, run_dir=run_dir, branch=branch) if commit else None
    state = _initial_state(run_id=run_id, spec=spec, run_dir=run_dir, branch=branch, resume=resume)
    monitor = start_monitor(
        run_id=run_id,
        run_dir=run_dir,
        heartbeat_s=heartbeat_s,
        stall_timeout_s=stall_timeout_s,
        targets=spec.targets,
        milestones=spec.milestones,
    )
    if resume:
        ray.get(monitor.reopen.remote())
    driver = DriverEvents(monitor, run_id)
    state.status, state.error = "running", None
    _save_state(run_dir, state)
    job = {
        "run_id": run_id,
        "run_dir": str(run_dir),
        "worktree": str(worktree),
        "checkpoint_root": str(checkpoint_dir),
        "spec": spec.model_dump(),
        "heartbeat_s": heartbeat_s,
        "branch": branch,
        "secrets": dict(secrets or {}),
    }
    try:
        return _drive(
            spec=spec, state=state, job=job, run_dir=run_dir, monitor=monitor, driver=driver,
            committer=committer,
        )  # fmt: skip
    finally:
        release_sinks(run_id=run_id)


def _drive(
    *, spec: ExperimentSpec, state: RunState, job: dict, run_dir: Path, monitor,
    driver: DriverEvents, committer: StageCommitter | None,
) -> PipelineResult:  # fmt: skip
    push_owed = False
    for stage in spec.stages:
        rec = state.stages[stage.name]
        if rec.status == "finished":
            driver.alert(
                f"{stage.name} already finished (commit {str(rec.commit)[:10]}): skipped",
                code="stage:skipped",
                stage=stage.name,
            )
            continue
        rec.status, rec.started, rec.ended, rec.error = "running", time.time(), None, None
        _save_state(run_dir, state)
        if stage.builtin and stage.name == "compare":  # trials fanned out, committed by trial
            out = run_compare(
                stage=stage, spec=spec, job=job, run_dir=run_dir, monitor=monitor,
                driver=driver, committer=committer,
            )  # fmt: skip
            rec.ended, rec.summary, rec.commit = time.time(), out.summary, out.commit or rec.commit
            if committer is not None and (out.commit or push_owed):
                push_owed = not _push(committer, driver)
            if not out.ok:
                return _failed(
                    state=state, rec=rec, error=out.error,
                    run_error=f"stage {stage.name} failed: {out.error}", run_dir=run_dir,
                    monitor=monitor,
                )  # fmt: skip
            rec.status = "finished"
            _save_state(run_dir, state)
            continue
        ok, result, error = _run_stage(stage=stage, job=job, monitor=monitor, driver=driver)
        rec.ended = time.time()
        if not ok:
            if push_owed and committer is not None:
                _push(committer, driver)  # the earlier stages' commits still go upstream
            return _failed(
                state=state, rec=rec, error=error, run_error=f"stage {stage.name} failed: {error}",
                run_dir=run_dir, monitor=monitor,
            )  # fmt: skip
        rec.summary, rec.node = result["summary"], result["node"]
        if committer is not None:
            try:
                rec.commit = driver.commit(
                    committer, stage=stage.name, summary=rec.summary, paths=[run_dir / stage.name]
                )
            except StageCommitError as exc:
                return _failed(
                    state=state, rec=rec, error=str(exc), run_error=f"stage {stage.name}: {exc}",
                    run_dir=run_dir, monitor=monitor,
                )  # fmt: skip
            push_owed = not _push(committer, driver)
        rec.status = "finished"
        _save_state(run_dir, state)
    if push_owed and committer is not None:
        _push(committer, driver)
    state.status = "succeeded"
    _save_state(run_dir, state)
    ray.get(monitor.finish.remote(status="succeeded"))
    return PipelineResult(status="succeeded", state=state)


def _failed(
    *, state: RunState, rec: StageRecord, error: str, run_error: str, run_dir: Path, monitor
) -> PipelineResult:
    """Record the stage and the run as failed, end the run in the monitor."""
    rec.status, rec.error = "failed", error
    state.status, state.error = "failed", run_error
    _save_state(run_dir, state)
    ray.get(monitor.finish.remote(status="failed", error=run_error))
    return PipelineResult(status="failed", state=state, error=run_error)


def _committer(*, worktree: Path, run_dir: Path, branch: str) -> StageCommitter:
    if worktree not in run_dir.parents:
        raise PipelineError(
            f"the run directory {run_dir} is not inside the worktree {worktree}, so its files "
            "cannot be committed: put it under the worktree (default results/<run-id>), or "
            "turn stage commits off (--no-commit)"
        )
    try:
        return StageCommitter(worktree=worktree, branch=branch)
    except StageCommitError as exc:
        raise PipelineError(
            f"{exc}: run in the run's worktree (`git worktree add -b {branch} PATH`), set the "
            "spec's branch, or turn stage commits off (--no-commit)"
        ) from None


def _initial_state(
    *, run_id: str, spec: ExperimentSpec, run_dir: Path, branch: str, resume: bool
) -> RunState:
    digest = spec_digest(spec)
    old = read_state(run_dir)
    if resume:
        if old is None:
            raise PipelineError(
                f"nothing to resume: {run_dir / STATE_FILE} does not exist (start the run "
                "without --resume)"
            )
        if old.run_id != run_id or old.spec_sha256 != digest:
            raise PipelineError(
                f"{run_dir / STATE_FILE} belongs to run {old.run_id} with another spec "
                f"(sha256 {old.spec_sha256[:12]}, this one {digest[:12]}): resume with the "
                "same run id and spec, or start a new run"
            )
        for s in spec.stages:
            old.stages.setdefault(s.name, StageRecord(name=s.name))
        return old
    if old is not None:
        raise PipelineError(
            f"{run_dir} already holds run {old.run_id} ({old.status}): pass --resume to "
            "continue it, or use a new run id"
        )
    return RunState(
        run_id=run_id,
        spec_sha256=digest,
        branch=branch,
        stages={s.name: StageRecord(name=s.name) for s in spec.stages},
    )


def _run_stage(
    *, stage: StageSpec, job: dict, monitor, driver: DriverEvents
) -> tuple[bool, dict | None, str | None]:
    options: dict[str, Any] = {
        "num_cpus": stage.num_cpus,
        "num_gpus": stage.num_gpus,
        "max_retries": stage.max_retries,
        "retry_exceptions": stage.retry_exceptions,
        "name": f"tether:{job['run_id']}:{stage.name}",
    }
    if stage.memory_mb:
        options["memory"] = stage.memory_mb * 1024 * 1024
    since = ray.get(monitor.last_seq.remote())
    driver.alert(
        f"{stage.name} submitted (num_cpus={stage.num_cpus:g}, num_gpus={stage.num_gpus:g}, "
        f"max_retries={stage.max_retries})",
        code="stage:submitted",
        stage=stage.name,
    )
    ref = remote_stage_task.options(**options).remote({**job, "stage": stage.model_dump()})
    wait_s = None
    if stage.timeout_s is not None:
        wait_s = stage.timeout_s + (COMMAND_GRACE_S if stage.command or stage.name == "test" else 0)
    ready, _ = ray.wait([ref], timeout=wait_s)
    if not ready:
        ray.cancel(ref, force=True)
        error = f"timed out after {stage.timeout_s:g}s and was cancelled"
        driver.fail_for_task(stage=stage.name, since=since, error=error)
        return False, None, error
    try:
        return True, ray.get(ref), None
    except ray.exceptions.RayError as exc:  # the stage's error, or its worker died
        error, _ = task_error(exc, max_retries=stage.max_retries)
        driver.fail_for_task(stage=stage.name, since=since, error=error)
        return False, None, error


def _push(committer: StageCommitter, driver: DriverEvents) -> bool:
    res = committer.push()
    if not res.ok:
        driver.alert(
            f"{res.message}; tether pushes again after the next stage",
            level="warning",
            code="git:push_failed",
        )
    return res.ok
