"""One stage of a run, inside its Ray task: what the pipeline's driver submits.

The task gets a reporter of its own (to the run's monitor: heartbeat, progress, ``stage``
events with the task's attempt number, so a retry after the worker died is visible), tees
a function stage's stdout/stderr into ``log`` events, runs the stage's body in the run's
worktree with the run's secrets in its environment, writes ``stage.json``, and ships the
stage's folder through the run's artifact sink to ``<run_dir>/<stage>/`` on the head (an
``artifact`` event per file, with the digest the sink verified); a compare trial's go to
``<run_dir>/compare/trials/<trial>/``. A failed stage reports its
error and last output lines, ships its partial files, and raises :class:`StageError`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import ray

from tether.ml.atomic import write_json_atomic

from .artifacts import get_sink, ship_artifacts
from .attempts import task_attempt
from .batch_reporter import Reporter
from .capture import OutputLines, TeeLines
from .compare_spec import TrialSpec
from .compare_trial import run_trial
from .gitstage import CHECKPOINT_GLOBS
from .reporter import set_default_reporter
from .spec import ExperimentSpec, StageSpec
from .stages import StageContext, StageError, StageOutcome, body_for
from .transports import MonitorTransport

STAGE_FILE = "stage.json"  # <run_dir>/<stage>/stage.json: how the stage went
LAST_LINES = 30


def _stage_context(job: dict, scratch: Path, sink) -> StageContext:
    """The context of the stage ``job`` names (and of its trial, for a compare trial), with a
    reporter of its own (to the monitor)."""
    spec = ExperimentSpec.model_validate(job["spec"])
    stage = StageSpec.model_validate(job["stage"])
    trial = TrialSpec.from_dict(job["trial"]) if job.get("trial") else None
    run_id = job["run_id"]
    reporter = Reporter(
        transport=MonitorTransport.for_run(run_id=run_id),
        run_id=run_id,
        trial=trial.name if trial else None,
        stage=stage.name,
        heartbeat_s=job["heartbeat_s"],
    )
    out_dir = scratch / "out"
    out_dir.mkdir()
    worktree = Path(job["worktree"])
    if not worktree.is_dir():  # a node without the head's disk: the job's own code package
        worktree = Path.cwd()
    return StageContext(
        run_id=run_id,
        stage=stage,
        spec=spec,
        out_dir=out_dir,
        worktree=worktree,
        reporter=reporter,
        checkpoint_root=Path(job["checkpoint_root"]),
        fetch=lambda rel: ray.get(sink.read.remote(rel)),
        branch=job.get("branch"),
        trial=trial,
    )


def stage_task(job: dict) -> dict:
    """One stage, or one trial of a compare stage (``job["trial"]``), inside a Ray worker.
    Returns the outcome; raises StageError on failure (after reporting it and shipping
    whatever files the stage wrote)."""
    sink = get_sink(run_id=job["run_id"], root=Path(job["run_dir"]))
    scratch = Path(tempfile.mkdtemp(prefix=f"tether-{job['stage']['name']}-"))
    ctx = _stage_context(job, scratch, sink)
    stage, reporter, worktree = ctx.stage, ctx.reporter, ctx.worktree
    previous = set_default_reporter(reporter)  # user code may call cluster.reporter.report()
    node = ray.get_runtime_context().get_node_id()
    printed = OutputLines(reporter, keep=LAST_LINES)
    saved = sys.stdout, sys.stderr
    sys.stdout = TeeLines(saved[0], printed, stream="stdout")
    sys.stderr = TeeLines(saved[1], printed, stream="stderr")
    cwd = os.getcwd()
    started = time.time()
    # On a retry (the worker died), attempt 2, 3...: the monitor marks the old worker dead.
    extra = {"gpu_ids": [str(g) for g in ray.get_gpu_ids()]} if ctx.trial else {}
    epochs = _planned_epochs(ctx)
    if epochs is not None:
        extra["epochs"] = epochs  # what a live view's ETA divides by
    reporter.stage(
        stage.name, "started", node=node, pid=os.getpid(), attempt=task_attempt(), **extra
    )
    secrets = job.get("secrets") or {}
    saved_env = {k: os.environ.get(k) for k in secrets}
    try:
        os.chdir(worktree)
        os.environ.update(secrets)
        try:
            outcome = (run_trial if ctx.trial else body_for(stage))(ctx)
        except BaseException as exc:
            lines = list(getattr(exc, "last_lines", None) or printed.last_lines())
            error = str(exc) if isinstance(exc, StageError) else f"{type(exc).__name__}: {exc}"
            _finish_files(ctx, sink, status="failed", started=started, error=error)
            reporter.stage(stage.name, "failed", error=error, last_log_lines=lines[-LAST_LINES:])
            reporter.close(timeout=30)
            raise StageError(error, last_lines=lines) from None
        shipped = _finish_files(ctx, sink, status="finished", started=started, outcome=outcome)
        reporter.stage(stage.name, "finished", summary=outcome.summary, files=len(shipped))
        reporter.close(timeout=30)
        return {
            "summary": outcome.summary,
            "data": outcome.data,
            "files": shipped,
            "node": node,
            "started": started,
            "seconds": time.time() - started,
            "attempt": task_attempt(),
        }
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        os.chdir(cwd)
        sys.stdout, sys.stderr = saved
        set_default_reporter(previous)
        shutil.rmtree(scratch, ignore_errors=True)


def _planned_epochs(ctx: StageContext) -> int | None:
    """The epochs the built-in training of this stage (or trial) plans, else None."""
    if ctx.trial is not None:
        epochs = ctx.trial.config.get("epochs")
        return epochs if isinstance(epochs, int) and ctx.spec.compare.run is None else None
    if ctx.stage.builtin and ctx.stage.name == "train":
        from tether.ml.train_config import TrainConfig

        return (TrainConfig.from_dict(ctx.spec.train) if ctx.spec.train else TrainConfig()).epochs
    return None


def _finish_files(
    ctx: StageContext,
    sink,
    *,
    status: str,
    started: float,
    outcome: StageOutcome | None = None,
    error: str | None = None,
) -> list[str]:
    """Write ``stage.json`` and ship the stage's folder; a failed stage ships its partial
    files too (a shipping error then must not hide the stage's own error)."""
    record = {
        "stage": ctx.stage.name,
        "status": status,
        "started": started,
        "ended": time.time(),
        "summary": outcome.summary if outcome else None,
        "data": outcome.data if outcome else None,
        "error": error,
    }
    write_json_atomic(ctx.out_dir / STAGE_FILE, record)
    try:
        res = ship_artifacts(
            sink=sink, root=ctx.out_dir, prefix=ctx.files_prefix, exclude=CHECKPOINT_GLOBS
        )
    except Exception:
        if status == "failed":
            return []
        raise
    for rel in res.sent:
        ctx.reporter.artifact(rel, digest=res.digests[rel])  # as the sink verified it
    return res.sent


# A fresh worker process per stage (and per trial): no imported user code, state or GPU
# memory carries over.
remote_stage_task = ray.remote(max_calls=1)(stage_task)
