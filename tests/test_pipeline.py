"""The stage pipeline on a real local Ray cluster, in a real git worktree on a run branch:
one commit per stage, failures that keep what was done, resume, stall and death detection,
timeouts."""

from __future__ import annotations

import json
import shlex
import sys
import textwrap
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest
import ray
from conftest import git

from tether.cluster.monitor import stop_monitor
from tether.cluster.pipeline import PipelineError, read_state, run_pipeline
from tether.cluster.spec import parse_spec

# Each test's user code lives in a module of its own name: Ray workers are shared by tests.
USER_CODE = """
import os, signal, sys, time
from pathlib import Path

def prep(ctx):
    (ctx.out_dir / "prepared.json").write_text('{"rows": 3}')
    (ctx.out_dir / "weights.pt").write_bytes(b"not for git")
    print("prepared 3 rows")
    return "3 rows"

def explode(ctx):
    counter = ctx.worktree / "explode-calls.txt"
    n = int(counter.read_text()) if counter.exists() else 0
    counter.write_text(str(n + 1))
    (ctx.out_dir / "partial.json").write_text('{"steps_done": 7}')
    print("step 7: loss=nan")
    if not (ctx.worktree / "fixed.flag").exists():
        raise ValueError("loss exploded at step 7")
    return "recovered"

def stall(ctx):
    ctx.reporter.report(step=1, metrics={"loss": 1.0})
    ctx.reporter.flush(timeout=10)
    time.sleep(7)  # alive (heartbeats) but no progress
    ctx.reporter.report(step=2, metrics={"loss": 0.9})
    return "woke up"

def die(ctx):
    for i in range(3):
        print(f"die line {i}")
    time.sleep(1.5)  # the reporter's flushes carry the lines out
    os.kill(os.getpid(), signal.SIGKILL)

def sleepy():
    time.sleep(60)

def die_once(ctx):
    marker = ctx.worktree / "die-once.txt"
    print("flaky attempt starts")
    if not marker.exists():
        marker.write_text(str(os.getpid()))
        ctx.reporter.flush(timeout=10)
        os.kill(os.getpid(), signal.SIGKILL)
    return "survived"
"""


@dataclass
class Run:
    run_id: str
    worktree: Path
    run_dir: Path
    ckpt: Path
    module: str
    branch: str

    def spec(self, body: str, name: str = "exp"):
        text = f'name = "{name}"\n' + textwrap.dedent(body).replace("MOD", self.module)
        return parse_spec(text)

    def log(self) -> list[str]:
        out = git("log", "--format=%s", f"main..{self.branch}", cwd=self.worktree)
        return list(reversed(out.splitlines())) if out else []

    def events(self) -> list[dict]:
        lines = (self.run_dir / "events.jsonl").read_text().splitlines()
        return [json.loads(x) for x in lines if x.strip()]


@pytest.fixture
def run(git_repo, tmp_path):
    module = f"tp_{uuid.uuid4().hex[:8]}"
    (git_repo.path / f"{module}.py").write_text(USER_CODE)
    (git_repo.path / "tests").mkdir()
    (git_repo.path / "tests" / f"test_{module}.py").write_text(
        "def test_adds():\n    assert 1 + 1 == 2\n"
    )
    git("add", "-A", cwd=git_repo.path)
    git("commit", "-q", "-m", "user code", cwd=git_repo.path)
    run_id = f"r-{uuid.uuid4().hex[:8]}"
    branch = f"tether/exp/{run_id}"
    wt = tmp_path / "wt"
    git("worktree", "add", "-q", "-b", branch, str(wt), "main", cwd=git_repo.path)
    r = Run(run_id, wt, wt / "results" / run_id, tmp_path / "ckpt", module, branch)
    yield r
    if ray.is_initialized():
        stop_monitor(run_id=r.run_id)


def _go(r: Run, spec, **kw):
    return run_pipeline(
        run_id=r.run_id,
        spec=spec,
        run_dir=r.run_dir,
        worktree=r.worktree,
        checkpoint_dir=r.ckpt,
        heartbeat_s=kw.pop("heartbeat_s", 1),
        **kw,
    )


FULL = """
targets = ["accuracy>0.3"]
[train]
epochs = 2
batch_size = 16
extractor = { name = "i3d", size = "tiny" }
track = { train_size = 48, val_size = 16, test_size = 16 }
[[stages]]
name = "setup"
[[stages]]
name = "test"
[[stages]]
name = "prep"
run = "MOD:prep"
[[stages]]
name = "export"
command = 'echo "TETHER {\\"kind\\": \\"metric\\", \\"name\\": \\"exported\\", \\"value\\": 1, \\"step\\": null, \\"epoch\\": null}"; echo done > "$TETHER_OUT_DIR/export.txt"'
[[stages]]
name = "train"
[[stages]]
name = "evaluate"
[[stages]]
name = "visualize"
[[stages]]
name = "analyze"
[[stages]]
name = "report"
"""


def test_a_full_run_commits_each_stage_once_and_never_a_checkpoint(ray_driver, run):
    spec = run.spec(FULL)
    result = _go(run, spec)
    assert result.status == "succeeded", result.error
    names = [s.name for s in spec.stages]
    log = run.log()
    assert [m.split(":")[0] for m in log] == [
        "chore", "test", "prep", "export", "train", "eval", "viz", "analysis", "docs",
    ]  # fmt: skip
    assert log[1] == "test: 1 passed, 0 failed, 0 errors, 0 skipped"
    assert log[2] == "prep: 3 rows"
    assert log[4].startswith("train: extractor=i3d 2 epochs, val_acc=")
    assert log[-1] == "docs: final report"
    # run_state.json records each stage with the commit git has for it.
    state = read_state(run.run_dir)
    shas = git("log", "--format=%H", f"main..{run.branch}", cwd=run.worktree).split()[::-1]
    assert [state.stages[n].commit for n in names] == shas
    assert state.status == "succeeded"
    # Each commit is in the events too (the TUI's stage strip shows them).
    committed = [e for e in run.events() if e["kind"] == "alert" and e["code"] == "git:committed"]
    assert [(e["stage"], e["commit"]) for e in committed] == list(zip(names, shas, strict=True))
    assert committed[1]["message"] == f"committed {shas[1][:10]} " + log[1]
    # Every commit holds only its own stage's folder; no checkpoint anywhere on the branch.
    rel = f"results/{run.run_id}"
    for name, sha in zip(names, shas, strict=True):
        files = git("diff-tree", "--no-commit-id", "--name-only", "-r", sha, cwd=run.worktree)
        assert files and all(f.startswith(f"{rel}/{name}/") for f in files.split())
    tracked = git("ls-tree", "-r", "--name-only", run.branch, cwd=run.worktree).split()
    assert not [f for f in tracked if f.endswith((".pt", ".ckpt", ".pth"))]
    assert not (run.run_dir / "prep" / "weights.pt").exists()  # checkpoints are not shipped
    assert (run.ckpt / "train" / "checkpoint.pt").exists()  # the head's checkpoint store
    for f in ("train/training_results.json", "evaluate/evaluation.json",
              "visualize/training_curves.png", "analyze/diagnosis.json",
              "report/report.md", "report/report.html", "setup/environment.json",
              "test/tests.json", "export/export.txt"):  # fmt: skip
        assert (run.run_dir / f).is_file(), f
    assert json.loads((run.run_dir / "test/tests.json").read_text())["passed"] == 1
    evaluation = json.loads((run.run_dir / "evaluate/evaluation.json").read_text())
    assert evaluation["targets"][0]["target"] == "accuracy>0.3"
    # Events: every stage started and finished, in order; TETHER lines became events.
    events = run.events()
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(1, len(seqs) + 1))
    done = [e["stage"] for e in events if e["kind"] == "stage" and e["status"] == "finished"]
    assert done[: len(names)] == names
    assert any(e["kind"] == "metric" and e["name"] == "exported" for e in events)
    assert any(e["kind"] == "log" and e["line"] == "prepared 3 rows" for e in events)
    arts = {e["path"] for e in events if e["kind"] == "artifact"}
    assert "train/training_results.json" in arts
    assert events[-1].get("terminal") and events[-1]["run_status"] == "succeeded"
    assert "run succeeded" in (run.run_dir / "PROGRESS.txt").read_text()


FAILING = """
[[stages]]
name = "setup"
[[stages]]
name = "prep"
run = "MOD:prep"
[[stages]]
name = "explode"
run = "MOD:explode"
max_retries = 2
[[stages]]
name = "after"
command = "echo after"
"""


def test_a_failing_stage_fails_the_run_keeps_earlier_commits_and_resume_finishes(ray_driver, run):
    spec = run.spec(FAILING)
    result = _go(run, spec)
    assert result.status == "failed"
    assert "loss exploded at step 7" in result.error
    log = run.log()
    assert len(log) == 2 and log[0].startswith("chore: python ") and log[1] == "prep: 3 rows"
    # An application error is not retried (retry_exceptions is off): one call only.
    assert (run.worktree / "explode-calls.txt").read_text() == "1"
    # The failed stage's partial results are in the run directory.
    assert json.loads((run.run_dir / "explode/partial.json").read_text()) == {"steps_done": 7}
    state = read_state(run.run_dir)
    assert state.status == "failed"
    assert [state.stages[n].status for n in ("setup", "prep", "explode", "after")] == [
        "finished", "finished", "failed", "pending",
    ]  # fmt: skip
    failed = [e for e in run.events() if e["kind"] == "stage" and e["status"] == "failed"]
    assert failed[0]["stage"] == "explode"
    assert "ValueError: loss exploded at step 7" in failed[0]["error"]
    assert "step 7: loss=nan" in failed[0]["last_log_lines"]
    progress = (run.run_dir / "PROGRESS.txt").read_text()
    assert "explode FAILED" in progress and "loss exploded at step 7" in progress
    assert "run failed" in progress

    # Without --resume the run directory is refused; with it only the rest runs.
    with pytest.raises(PipelineError, match="pass --resume"):
        _go(run, spec)
    (run.worktree / "fixed.flag").write_text("")
    resumed = _go(run, spec, resume=True)
    assert resumed.status == "succeeded", resumed.error
    log = run.log()
    assert log[1:] == ["prep: 3 rows", "explode: recovered", "after: after stage"]
    assert (run.worktree / "explode-calls.txt").read_text() == "2"  # setup/prep not re-run
    events = run.events()
    skipped = {e["stage"] for e in events if e["kind"] == "alert" and e["code"] == "stage:skipped"}
    assert skipped == {"setup", "prep"}
    assert "run resumed" in (run.run_dir / "PROGRESS.txt").read_text()
    assert events[-1]["run_status"] == "succeeded"


def test_a_stalled_stage_is_flagged_and_a_killed_one_is_failed_with_its_last_lines(ray_driver, run):
    spec = run.spec(
        """
        [[stages]]
        name = "stall"
        run = "MOD:stall"
        [[stages]]
        name = "die"
        run = "MOD:die"
        max_retries = 0
        """
    )
    result = _go(run, spec, stall_timeout_s=2)
    assert result.status == "failed"
    assert "retries are used up" in result.error
    events = run.events()
    # Stalled: alive (heartbeats) but no progress; flagged within 2x the stall timeout.
    progress = [e for e in events if e["kind"] == "progress" and e["stage"] == "stall"]
    stalled = [e for e in events if e["kind"] == "alert" and e["code"] == "health:stalled"]
    assert stalled and stalled[0]["stage"] == "stall"
    assert stalled[0]["time"] - progress[0]["time"] <= 2 * 2
    assert run.log() == ["stall: woke up"]
    # Killed, no retries left: failed with the error and its last log lines.
    failed = [e for e in events if e["kind"] == "stage" and e["status"] == "failed"]
    assert failed[0]["stage"] == "die"
    assert "worker died" in failed[0]["error"]
    assert failed[0]["last_log_lines"][-3:] == ["die line 0", "die line 1", "die line 2"]
    summary = ray.get(ray.get_actor(f"run:{run.run_id}", namespace="tether").summary.remote())
    die_worker = failed[0]["worker"]
    assert die_worker and {w["worker"]: w["health"] for w in summary["workers"]}[die_worker] in (
        "dead",
        "failed",
    )
    assert "die FAILED" in (run.run_dir / "PROGRESS.txt").read_text()


def test_a_stage_retried_after_its_worker_died_says_so_and_the_dead_worker_is_marked(
    ray_driver, run
):
    spec = run.spec(
        """
        [[stages]]
        name = "flaky"
        run = "MOD:die_once"
        max_retries = 1
        """
    )
    # A heartbeat every 30 s: the run ends long before two intervals pass without one, so
    # only the retry can say that the first worker is dead.
    result = _go(run, spec, heartbeat_s=30, commit=False)
    assert result.status == "succeeded", result.error
    events = run.events()
    starts = [
        e for e in events
        if e["kind"] == "stage" and e["stage"] == "flaky" and e["status"] == "started"
    ]  # fmt: skip
    assert [e["attempt"] for e in starts] == [1, 2]
    first, second = starts[0]["worker"], starts[1]["worker"]
    assert first != second and starts[0]["pid"] == int((run.worktree / "die-once.txt").read_text())
    dead = [e for e in events if e["kind"] == "alert" and e["code"] == "health:dead"]
    assert [e["worker"] for e in dead] == [first]
    assert dead[0]["seq"] > starts[1]["seq"]  # the retry's start told the monitor
    assert f"flaky was retried on worker {second} (attempt 2)" in dead[0]["message"]
    summary = ray.get(ray.get_actor(f"run:{run.run_id}", namespace="tether").summary.remote())
    health = {w["worker"]: w["health"] for w in summary["workers"]}
    assert (health[first], health[second]) == ("dead", "finished")
    progress = (run.run_dir / "PROGRESS.txt").read_text()
    assert f"flaky started on {second} (attempt 2)" in progress


def test_timeouts_and_red_tests_stop_the_run(ray_driver, run, git_repo):
    spec = run.spec(
        """
        [[stages]]
        name = "nap"
        run = "MOD:sleepy"
        timeout_s = 3
        """
    )
    result = _go(run, spec, commit=False)
    assert result.status == "failed"
    assert result.error == "stage nap failed: timed out after 3s and was cancelled"

    (run.worktree / "tests" / "test_red.py").write_text("def test_red():\n    assert 0\n")
    spec = run.spec('[[stages]]\nname = "test"\n', name="red")
    run.run_id += "-b"
    run.run_dir = run.run_dir.parent / run.run_id
    result = _go(run, spec, commit=False)
    assert result.status == "failed"
    assert "tests failed: 1 passed, 1 failed" in result.error
    assert "allow_failing_tests" in result.error
    stop_monitor(run_id=run.run_id)

    spec = run.spec('allow_failing_tests = true\n[[stages]]\nname = "test"\n', name="red")
    run.run_id += "-c"
    run.run_dir = run.run_dir.parent / run.run_id
    result = _go(run, spec, commit=False)
    assert result.status == "succeeded"
    assert any(e["kind"] == "alert" and e["code"] == "test:failed" for e in run.events())
    stop_monitor(run_id=run.run_id)


def test_commits_need_the_run_branch_checked_out(ray_driver, run, git_repo):
    spec = run.spec('[[stages]]\nname = "setup"\n')
    with pytest.raises(PipelineError, match="--no-commit"):
        run_pipeline(
            run_id=run.run_id, spec=spec, run_dir=git_repo.path / "results" / run.run_id,
            worktree=git_repo.path, checkpoint_dir=run.ckpt,
        )  # fmt: skip
    with pytest.raises(PipelineError, match="not inside the worktree"):
        run_pipeline(
            run_id=run.run_id, spec=spec, run_dir=run.worktree.parent / "elsewhere",
            worktree=run.worktree, checkpoint_dir=run.ckpt,
        )  # fmt: skip
    assert not (run.run_dir / "events.jsonl").exists()  # nothing started


def _job(ray_cluster, entrypoint: str) -> tuple[str, str]:
    from ray.job_submission import JobStatus, JobSubmissionClient

    client = JobSubmissionClient(ray_cluster.dashboard_url)
    job_id = client.submit_job(entrypoint=entrypoint)
    deadline = time.monotonic() + 240
    while not (status := client.get_job_status(job_id)).is_terminal():
        assert time.monotonic() < deadline, client.get_job_logs(job_id)[-3000:]
        time.sleep(0.5)
    return (
        "succeeded" if status == JobStatus.SUCCEEDED else "failed",
        client.get_job_logs(job_id),
    )


def test_the_entrypoint_runs_a_spec_as_an_ordinary_ray_job(ray_cluster, run):
    (run.worktree / "exp.toml").write_text(
        'name = "exp"\n[[stages]]\nname = "setup"\n'
        f'[[stages]]\nname = "prep"\nrun = "{run.module}:prep"\n'
    )
    cmd = (
        f"cd {shlex.quote(str(run.worktree))} && {shlex.quote(sys.executable)} -m "
        f"tether.cluster.entrypoint --run-id {run.run_id} --spec exp.toml --heartbeat-s 1"
    )
    status, logs = _job(ray_cluster, cmd)
    assert status == "succeeded", logs[-3000:]
    assert f"run {run.run_id} succeeded" in logs
    assert [m.split(":")[0] for m in run.log()] == ["chore", "prep"]
    assert (run.worktree / "results" / run.run_id / "prep" / "prepared.json").is_file()
    # A bad spec: one clear line, exit 2, nothing started.
    (run.worktree / "bad.toml").write_text('name = "exp"\n[[stages]]\nname = "tset"\n')
    bad = cmd.replace("exp.toml", "bad.toml").replace(run.run_id, f"{run.run_id}x")
    status, logs = _job(ray_cluster, bad)
    assert status == "failed"
    assert (
        "error: " in logs
        and "bad.toml:3: stages[0].name: stage 'tset'" in logs
        and "not built in" in logs
    )
    assert "Traceback" not in logs
    assert not (run.worktree / "results" / f"{run.run_id}x").exists()
