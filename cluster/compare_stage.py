"""The compare stage, driven from the job's driver: one Ray task per trial, results gathered
as trials finish, the comparison rewritten and committed after each.

Every trial (extractor x seed, ``cluster.compare_spec``) is one ``stage_task`` with the trial
in its job, submitted at once with ``num_gpus=gpus_per_trial`` and ``num_cpus=
cpus_per_trial``: Ray places them, and queues what does not fit (no scheduler of ours, no
CUDA_VISIBLE_DEVICES of ours). ``max_retries`` of the stage is each trial's: a trial whose
worker or node died is retried by Ray and resumes from its checkpoint.

As trials end (those that end together, in one go) the driver writes
``<run_dir>/compare/trials/<trial>/trial.json`` (its record: metrics or error and last log
lines, device, GPU ids, node, attempt), rewrites the
comparison report (``tether.ml.comparison_report``) in ``<run_dir>/compare/`` and commits it
(``compare: 5/12 trials, best i3d 0.981 +- 0.004``), so a partial comparison is visible and
pulled early. A trial that fails is recorded with its error; the others go on. The stage
fails when any trial failed, after the report has them all; resuming the run
(``--resume``) re-runs only the trials not finished.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import ray

from tether.ml.atomic import write_json_atomic
from tether.ml.comparison_report import (
    TRIAL_FILE,
    Provenance,
    TrialRecord,
    read_trial,
    write_comparison,
)

from .driver_events import DriverEvents, task_error
from .gitstage import StageCommitError, StageCommitter
from .spec import ExperimentSpec, StageSpec
from .stage_task import remote_stage_task

TRIALS_DIR = "trials"


@dataclass(frozen=True)
class CompareOutcome:
    ok: bool
    summary: str
    commit: str | None
    error: str | None
    records: dict[str, TrialRecord]


def run_compare(
    *,
    stage: StageSpec,
    spec: ExperimentSpec,
    job: dict,
    run_dir: Path,
    monitor,
    driver: DriverEvents,
    committer: StageCommitter | None,
) -> CompareOutcome:
    """Run the trials of ``spec.compare`` that are not finished yet (all, on a first run)."""
    compare = spec.compare
    assert compare is not None
    out_dir = run_dir / stage.name
    trials = compare.trials(train=spec.train)
    records: dict[str, TrialRecord] = {}
    for t in trials:
        old = _read_old(out_dir / TRIALS_DIR / t.name / TRIAL_FILE)
        if old is not None and old.status == "finished" and old.config_hash == t.config_hash:
            records[t.name] = old
        else:
            records[t.name] = TrialRecord(
                trial=t.name, extractor=t.extractor, seed=t.seed, overrides=t.overrides,
                config_hash=t.config_hash, gpus=compare.gpus_per_trial,
            )  # fmt: skip
    todo = [t for t in trials if records[t.name].status != "finished"]
    kept = len(trials) - len(todo)
    if kept:
        driver.alert(
            f"compare: {kept} of {len(trials)} trials already finished: only "
            f"{', '.join(t.name for t in todo) or 'none'} run",
            code="compare:resumed",
            stage=stage.name,
        )
    since = ray.get(monitor.last_seq.remote())
    options = {
        "num_cpus": compare.cpus_per_trial,
        "num_gpus": compare.gpus_per_trial,
        "max_retries": stage.max_retries,
        "retry_exceptions": stage.retry_exceptions,
    }
    if stage.memory_mb:
        options["memory"] = stage.memory_mb * 1024 * 1024
    pending = {}
    for t in todo:
        ref = remote_stage_task.options(
            **options, name=f"tether:{job['run_id']}:{stage.name}:{t.name}"
        ).remote({**job, "stage": stage.model_dump(), "trial": t.to_dict()})
        pending[ref] = t
    driver.alert(
        f"compare: {len(todo)} trials submitted (num_gpus={compare.gpus_per_trial:g}, "
        f"num_cpus={compare.cpus_per_trial:g} each; Ray queues what does not fit)",
        code="stage:submitted",
        stage=stage.name,
    )
    gpus = ray.cluster_resources().get("GPU", 0)
    if todo and gpus < compare.gpus_per_trial:
        driver.alert(
            f"compare: each trial asks for {compare.gpus_per_trial:g} GPU and the cluster has "
            f"{gpus:g} now: the trials wait until a node with GPUs joins (Ray's autoscaler); "
            "on the embedded cluster set num_gpus in the local profile (logical GPUs)",
            level="warning",
            code="compare:no_gpu",
            stage=stage.name,
        )
    provenance = _provenance(job=job, run_dir=run_dir)
    report = _Report(
        records=records, compare=compare, provenance=provenance, out_dir=out_dir,
        committer=committer, driver=driver, stage=stage.name,
    )  # fmt: skip
    commit = report.write()  # every trial listed from the start, as pending
    deadline = None if stage.timeout_s is None else time.monotonic() + stage.timeout_s
    while pending:
        wait_s = None if deadline is None else max(0.0, deadline - time.monotonic())
        ready, _ = ray.wait(list(pending), num_returns=1, timeout=wait_s)
        if not ready:
            for ref, t in pending.items():
                ray.cancel(ref, force=True)
                error = f"timed out: the compare stage's timeout_s={stage.timeout_s:g} passed"
                lines = driver.fail_for_task(
                    stage=stage.name, since=since, error=error, trial=t.name
                )
                records[t.name] = _failed(records[t.name], error=error, lines=lines)
                report.record(t.name)
            pending.clear()
            commit = report.write() or commit
            break
        if len(pending) > 1:  # the others that ended meanwhile: one report for them all
            more, _ = ray.wait([r for r in pending if r != ready[0]], num_returns=len(pending) - 1,
                               timeout=0)  # fmt: skip
            ready += more
        for ref in ready:
            t = pending.pop(ref)
            try:
                result = ray.get(ref)
            except ray.exceptions.RayError as exc:
                error, lines = task_error(exc, max_retries=stage.max_retries)
                lines = lines or driver.fail_for_task(
                    stage=stage.name, since=since, error=error, trial=t.name
                )
                records[t.name] = _failed(records[t.name], error=error, lines=lines)
            else:
                records[t.name] = _finished(records[t.name], result)
            report.record(t.name)
        commit = report.write() or commit
    failed = [r for r in records.values() if r.status == "failed"]
    summary = report.comparison.summary_line
    print(report.comparison.text, flush=True)
    if failed:
        names = "; ".join(f"{r.trial}: {r.error}" for r in failed[:3])
        error = f"{len(failed)} of {len(records)} trials failed ({names})"
        return CompareOutcome(
            ok=False, summary=summary, commit=commit, error=error, records=records
        )
    return CompareOutcome(ok=True, summary=summary, commit=commit, error=None, records=records)


class _Report:
    """The comparison in ``<run_dir>/compare/``, rewritten (and committed) after each trial."""

    def __init__(
        self, *, records, compare, provenance, out_dir: Path, committer, driver, stage: str
    ) -> None:
        self.records, self.compare, self.provenance = records, compare, provenance
        self.out_dir, self.committer, self.driver, self.stage = out_dir, committer, driver, stage
        self.comparison = None

    def record(self, name: str) -> None:
        """Write a trial's record (and say when it failed); ``write`` then makes the report."""
        rec = self.records[name]
        write_json_atomic(
            self.out_dir / TRIALS_DIR / name / TRIAL_FILE, rec.model_dump(mode="json")
        )
        if rec.status == "failed":
            self.driver.alert(
                f"trial {name} failed: {rec.error}", level="warning", code="compare:trial_failed",
                stage=self.stage, trial=name,
            )  # fmt: skip

    def write(self) -> str | None:
        self.comparison = write_comparison(
            records=list(self.records.values()),
            metric=self.compare.metric,
            mode=self.compare.mode,
            epoch=self.compare.epoch if self.compare.run is None else "trial",
            provenance=self.provenance,
            out_dir=self.out_dir,
            expected_trials=len(self.records),
        )
        if self.committer is None:
            return None
        try:
            return self.driver.commit(
                self.committer, stage=self.stage, summary=self.comparison.summary_line,
                paths=[self.out_dir],
            )  # fmt: skip
        except StageCommitError as exc:  # the branch moved: keep the files, say so
            self.driver.alert(
                f"the comparison could not be committed: {exc}", level="warning",
                code="git:commit_failed", stage=self.stage,
            )  # fmt: skip
            return None


def _finished(rec: TrialRecord, result: dict) -> TrialRecord:
    data = result["data"]
    return rec.model_copy(
        update={
            "status": "finished",
            "error": None,
            "last_lines": [],
            "metrics": data["metrics"],
            "val_curves": data["val_curves"],
            "device": data.get("device"),
            "gpu_ids": data.get("gpu_ids", []),
            "host": data.get("host"),
            "node": result["node"],
            "attempts": result.get("attempt") or 1,
            "resumed_from_epoch": data.get("resumed_from_epoch"),
            "started": result["started"],
            "ended": result["started"] + result["seconds"],
        }
    )


def _failed(rec: TrialRecord, *, error: str, lines: list[str]) -> TrialRecord:
    return rec.model_copy(
        update={"status": "failed", "error": error, "last_lines": lines, "ended": time.time()}
    )


def _read_old(path: Path) -> TrialRecord | None:
    if not path.exists():
        return None
    try:
        return read_trial(path)
    except Exception:  # a damaged record: the trial runs again
        return None


def _provenance(*, job: dict, run_dir: Path) -> Provenance:
    """Run, spec, branch; commit and dirty flag from the run record ``tether submit`` wrote
    (``<run_dir>/run.json``), else the worktree's HEAD with the dirty flag unknown."""
    spec = job["spec"]["name"]
    commit, dirty = None, None
    try:
        record = json.loads((run_dir / "run.json").read_text(encoding="utf-8"))
        commit, dirty = record.get("commit"), record.get("dirty")
    except (OSError, ValueError):
        res = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=job["worktree"], capture_output=True, text=True,
            check=False,
        )  # fmt: skip
        commit = res.stdout.strip() or None if res.returncode == 0 else None
    return Provenance(
        run=job["run_id"], spec=spec, branch=job.get("branch"), commit=commit, dirty=dirty
    )
