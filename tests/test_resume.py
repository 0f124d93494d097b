"""`tether resume` end to end: a run whose stage fails on its first try is resumed as a new Ray
job of the same run (`tether-<run>.r<N>`) in the same worktree on the same branch, runs only
its failed and unfinished stages, and ends SUCCEEDED; `tether status/logs/stop/runs` address
the run's newest job. On the real local Ray cluster, with the embedded local profile and over
the real sshd; real git on both sides."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path

import pytest
from conftest import git, write_local_profile
from ray.job_submission import JobStatus, JobSubmissionClient

from tether.client.cli import main as tether
from tether.client.errors import TetherError
from tether.client.jobs import JobsClient

PLANTED = "sk-ant-PLANTED-" + uuid.uuid4().hex  # a secret that must never leak

# One try per call; what each try does is decided by how many came before it (counted in a
# folder outside the repository, so the worktree's files are not what changes).
GATE_SH = """#!/bin/bash
dir=$1
n=$(( $(cat "$dir/tries" 2>/dev/null || echo 0) + 1 ))
echo "$n" > "$dir/tries"
if [ -n "$ANTHROPIC_API_KEY" ]; then echo yes > "$dir/key.$n"; fi
case $n in
  1) echo "try 1 fails"; exit 3 ;;
  2) for i in $(seq 1 240); do echo "tick $i"; sleep 0.5; done ;;
  *) echo "try $n passes" ;;
esac
"""


def _wait(dashboard: str, job_id: str, timeout: float = 240) -> str:
    client = JobSubmissionClient(dashboard)
    deadline = time.monotonic() + timeout
    while not (status := client.get_job_status(job_id)).is_terminal():
        assert time.monotonic() < deadline, client.get_job_logs(job_id)[-3000:]
        time.sleep(0.5)
    return status


def _json_out(capsys, argv: list[str]):
    capsys.readouterr()
    code = tether(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def _refused(capsys, argv: list[str]) -> str:
    """The command fails with one `error:` line (and a hint), exit 2, no traceback."""
    capsys.readouterr()
    assert tether(argv) == 2, argv
    err = capsys.readouterr().err
    assert "Traceback" not in err, err
    assert [ln for ln in err.splitlines() if ln.startswith("error:")] == [err.splitlines()[0]]
    assert "hint:" in err, err
    return " ".join(err.split())  # rich may wrap a long line


def _events(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


@pytest.fixture
def local_repo(git_repo, ray_cluster, tmp_path, monkeypatch) -> Path:
    """The laptop repo with the embedded local profile on the test cluster."""
    repo = git_repo.path
    write_local_profile(repo, ray_cluster)
    monkeypatch.chdir(repo)
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    return repo


def _commit_spec(repo: Path, name: str, text: str) -> None:
    (repo / f"{name}.toml").write_text(text)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", f"{name} spec", cwd=repo)


def test_resume_reruns_only_the_failed_and_unfinished_stages_on_the_same_branch(
    local_repo, ray_cluster, tmp_path, capsys
):
    repo, url = local_repo, ray_cluster.dashboard_url
    marker = tmp_path / "outside" / "flaky.marker"
    marker.parent.mkdir()
    _commit_spec(
        repo,
        "flaky",
        'name = "flaky"\n[[stages]]\nname = "setup"\n'
        f'[[stages]]\nname = "flaky"\ncommand = \'test -f {marker} || '
        f"{{ touch {marker}; echo first try fails; exit 3; }}'\n"
        '[[stages]]\nname = "after"\ncommand = "echo after"\n',
    )
    sub = _json_out(capsys, ["submit", "flaky.toml", "--json"])
    run_id, branch, wt = sub["run_id"], sub["branch"], Path(sub["worktree"])
    run_dir = wt / "results" / run_id
    assert _wait(url, sub["job_id"]) == JobStatus.FAILED
    state = json.loads((run_dir / "run_state.json").read_text())
    statuses = {n: s["status"] for n, s in state["stages"].items()}
    assert statuses == {"setup": "finished", "flaky": "failed", "after": "pending"}
    setup_commit = state["stages"]["setup"]["commit"]
    before = git("log", "--format=%H %s", f"main..{branch}", cwd=repo).splitlines()
    assert len(before) == 1 and before[0].split()[0] == setup_commit  # clean repo: no snapshot
    # The laptop's spec changes after the submit: the resume must run the one it started with.
    _commit_spec(repo, "flaky", 'name = "flaky"\n[[stages]]\nname = "other"\n')

    res = _json_out(capsys, ["resume", run_id, "--json"])
    assert res["job_id"] == f"tether-{run_id}.r1" and res["attempt"] == 1
    assert res["previous_job_id"] == sub["job_id"] and res["previous_status"] == "FAILED"
    assert res["rerun"] == ["flaky", "after"] and res["kept"] == {"setup": setup_commit}
    assert res["worktree"] == sub["worktree"] and res["branch"] == branch
    assert _wait(url, res["job_id"]) == JobStatus.SUCCEEDED

    # Only the failed and unfinished stages ran; the finished one kept its commit.
    state = json.loads((run_dir / "run_state.json").read_text())
    assert state["status"] == "succeeded"
    assert {n: s["status"] for n, s in state["stages"].items()} == dict.fromkeys(
        ("setup", "flaky", "after"), "finished"
    )
    assert state["stages"]["setup"]["commit"] == setup_commit
    after = git("log", "--format=%H %s", f"main..{branch}", cwd=repo).splitlines()
    assert after[2:] == before  # the setup commit untouched, one commit per stage
    assert [ln.split(" ", 2)[1] for ln in after[:2]] == ["after:", "flaky:"]
    assert after[0].split()[0] == state["stages"]["after"]["commit"]
    events = _events(run_dir)
    skipped = [e["stage"] for e in events if e.get("code") == "stage:skipped"]
    assert skipped == ["setup"]
    seqs = [e["seq"] for e in events]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))  # one stream, no gaps
    assert events[-1]["run_status"] == "succeeded"

    # The resume is a second Ray job of the same run; the first keeps its record.
    ray = JobSubmissionClient(url)
    assert ray.get_job_status(sub["job_id"]) == JobStatus.FAILED
    info = ray.get_job_info(res["job_id"])
    assert info.metadata["tether_run"] == run_id and info.metadata["tether_attempt"] == "1"
    assert info.metadata["branch"] == branch and info.metadata["resumed_from"] == sub["job_id"]
    first = ray.get_job_info(sub["job_id"]).entrypoint
    assert info.entrypoint == first + " --resume"

    # The run verbs address the newest job; `tether runs` has one row for the run.
    status = _json_out(capsys, ["status", run_id, "--json"])
    assert status["submission_id"] == res["job_id"] and status["status"] == "SUCCEEDED"
    assert status["attempt"] == 1
    runs = [r for r in _json_out(capsys, ["runs", "--json"]) if r["run_id"] == run_id]
    assert [(r["submission_id"], r["attempt"]) for r in runs] == [(res["job_id"], 1)]
    capsys.readouterr()
    assert tether(["runs"]) == 0
    rows = [ln for ln in capsys.readouterr().out.splitlines() if run_id in ln]
    assert len(rows) == 1 and "SUCCEEDED (resume 1)" in rows[0], rows
    capsys.readouterr()
    assert tether(["logs", run_id]) == 0
    log = capsys.readouterr().out
    assert "stages setup, flaky, after (resuming)" in log and f"run {run_id} succeeded" in log
    capsys.readouterr()
    assert tether(["stop", run_id]) == 0
    assert f"run {run_id} already ended" in capsys.readouterr().out

    # The local run record keeps what submit wrote and adds the resume (the head's copy too).
    record = json.loads((repo / "results" / run_id / "run.json").read_text())
    assert record["job_id"] == sub["job_id"] and record["commit"] == sub["commit"]
    assert [(r["attempt"], r["job_id"], r["rerun"]) for r in record["resumes"]] == [
        (1, res["job_id"], ["flaky", "after"])
    ]
    assert json.loads((run_dir / "run.json").read_text())["resumes"] == record["resumes"]

    # Nothing left to resume.
    err = _refused(capsys, ["resume", run_id])
    assert f"run {run_id} succeeded: nothing to resume" in err


@pytest.fixture
def ssh_repo(git_repo, sshd, ray_cluster, tmp_path, monkeypatch) -> Path:
    """The laptop repo with a `head` profile that reaches this machine over the sshd fixture
    (head repo and run worktrees under tmp_path)."""
    repo = git_repo.path
    port = ray_cluster.dashboard_url.rsplit(":", 1)[1]
    (repo / "tether.toml").write_text(
        f"""
default_profile = "head"
[profiles.head]
kind = "ssh"
host = "{sshd.host_alias}"
ssh_config = "{sshd.ssh_config}"
repo_path = "{tmp_path}/head/tether.git"
runs_path = "{tmp_path}/head/runs"
python = "{sys.executable}"
dashboard_port = {port}
[heartbeat]
interval_s = 1
stall_timeout_s = 60
"""
    )
    monkeypatch.chdir(repo)
    monkeypatch.setenv("COLUMNS", "200")
    return repo


def test_over_ssh_a_running_resume_is_refused_stopped_and_resumed_again_with_its_secrets(
    ssh_repo, ray_cluster, tmp_path, capsys, monkeypatch
):
    repo, url = ssh_repo, ray_cluster.dashboard_url
    tries = tmp_path / "tries"
    tries.mkdir()
    (repo / "gate.sh").write_text(GATE_SH)
    _commit_spec(
        repo,
        "gate",
        f'name = "gate"\n[[stages]]\nname = "gate"\ncommand = "bash gate.sh {tries}"\n',
    )
    monkeypatch.setenv("ANTHROPIC_API_KEY", PLANTED)
    sub = _json_out(capsys, ["submit", "gate.toml", "--json"])
    run_id = sub["run_id"]
    assert _wait(url, sub["job_id"]) == JobStatus.FAILED

    capsys.readouterr()
    assert tether(["resume", run_id]) == 0
    out = " ".join(capsys.readouterr().out.split())
    r1 = f"tether-{run_id}.r1"
    assert "running again: gate" in out
    assert f"resumed run {run_id} as Ray job {r1} (resume 1, branch {sub['branch']})" in out
    assert f"follow it: tether logs {run_id} -f" in out
    ray = JobSubmissionClient(url)
    deadline = time.monotonic() + 120
    while "tick 2" not in ray.get_job_logs(r1):
        assert ray.get_job_status(r1) in (JobStatus.PENDING, JobStatus.RUNNING), ray.get_job_logs(
            r1
        )
        assert time.monotonic() < deadline, ray.get_job_logs(r1)
        time.sleep(0.5)

    # While the resume runs: resume is refused; status and logs are the resume's job.
    err = _refused(capsys, ["resume", run_id])
    assert f"run {run_id} is still RUNNING: stop it first (`tether stop {run_id}`)" in err
    status = _json_out(capsys, ["status", run_id, "--json"])
    assert (status["submission_id"], status["status"], status["attempt"]) == (r1, "RUNNING", 1)
    capsys.readouterr()
    assert tether(["logs", run_id]) == 0
    log = capsys.readouterr().out
    assert "tick 2" in log and "(resuming)" in log
    # stop stops the newest job; the first keeps its FAILED.
    capsys.readouterr()
    assert tether(["stop", run_id]) == 0
    assert f"stopping run {run_id}" in capsys.readouterr().out
    assert _wait(url, r1, timeout=60) == JobStatus.STOPPED
    assert ray.get_job_status(sub["job_id"]) == JobStatus.FAILED

    # A stopped run resumes too: the third job runs the unfinished stage and succeeds.
    res = _json_out(capsys, ["resume", run_id, "--json"])
    assert res["job_id"] == f"tether-{run_id}.r2" and res["attempt"] == 2
    assert res["previous_job_id"] == r1 and res["previous_status"] == "STOPPED"
    assert res["rerun"] == ["gate"]
    assert _wait(url, res["job_id"]) == JobStatus.SUCCEEDED
    assert (tries / "tries").read_text().strip() == "3"
    # The secret reached every try (the file is written again for each resume), is gone from
    # the head, and is in no job's entrypoint, metadata or log.
    assert sorted(p.name for p in tries.glob("key.*")) == ["key.1", "key.2", "key.3"]
    assert not list((tmp_path / "head" / "runs" / ".secrets").glob("*.env"))
    for job in (sub["job_id"], r1, res["job_id"]):
        info = ray.get_job_info(job)
        assert PLANTED not in json.dumps([info.entrypoint, info.metadata], default=str)
        assert PLANTED not in ray.get_job_logs(job)
    assert "--secrets-file" in ray.get_job_info(res["job_id"]).entrypoint
    runs = [r for r in _json_out(capsys, ["runs", "--json"]) if r["run_id"] == run_id]
    assert [(r["submission_id"], r["status"]) for r in runs] == [(res["job_id"], "SUCCEEDED")]
    record = json.loads((repo / "results" / run_id / "run.json").read_text())
    assert record["job_id"] == sub["job_id"]
    assert [r["job_id"] for r in record["resumes"]] == [r1, res["job_id"]]
    err = _refused(capsys, ["resume", run_id])
    assert "nothing to resume" in err


def test_resume_refuses_unknown_foreign_and_pruned_runs_with_one_clear_line(
    local_repo, ray_cluster, capsys
):
    repo, url = local_repo, ray_cluster.dashboard_url
    err = _refused(capsys, ["resume", "nope-123"])
    assert "no run nope-123 (Ray job tether-nope-123) on the cluster at" in err
    err = _refused(capsys, ["resume", "../etc"])
    assert "'../etc' is not a run id" in err
    err = _refused(capsys, ["status", "nope-123"])
    assert "no run nope-123" in err

    # A run's job that tether submit did not write cannot be resumed.
    foreign = f"foreign-{uuid.uuid4().hex[:8]}"
    JobsClient(address=url).submit(entrypoint="false", run_id=foreign, metadata={})
    assert _wait(url, f"tether-{foreign}") == JobStatus.FAILED
    err = _refused(capsys, ["resume", foreign])
    assert f"run {foreign} (Ray job tether-{foreign}) was not started by `tether submit`" in err

    # Once `tether prune` removed a failed run's worktree there is nothing to resume in.
    _commit_spec(repo, "broken", 'name = "broken"\n[[stages]]\nname = "boom"\ncommand = "exit 3"\n')
    sub = _json_out(capsys, ["submit", "broken.toml", "--json"])
    assert _wait(url, sub["job_id"]) == JobStatus.FAILED
    pruned = _json_out(capsys, ["prune", "--json"])
    assert sub["run_id"] in [p["run_id"] for p in pruned]
    err = _refused(capsys, ["resume", sub["run_id"]])
    assert f"the worktree of run {sub['run_id']}" in err and "is gone" in err
    with pytest.raises(RuntimeError, match="does not exist"):
        JobSubmissionClient(url).get_job_info(f"tether-{sub['run_id']}.r1")


def _wait_all(jobs: JobsClient, run_id: str) -> list:
    deadline = time.monotonic() + 60
    while True:
        records = jobs.attempts(run_id=run_id)
        if all(r.is_terminal() for r in records):
            return records
        assert time.monotonic() < deadline, records
        time.sleep(0.2)


def test_the_jobs_client_addresses_a_runs_newest_job_and_refuses_a_taken_resume(ray_cluster):
    jobs = JobsClient(address=ray_cluster.dashboard_url)
    run_id = f"att-{uuid.uuid4().hex[:8]}"
    for attempt in range(3):
        sid = jobs.submit(
            entrypoint=f"echo job {attempt}", run_id=run_id, metadata={"b": "x"}, attempt=attempt
        )
        assert sid == f"tether-{run_id}" + (f".r{attempt}" if attempt else "")
    records = _wait_all(jobs, run_id)
    assert [(r.submission_id, r.attempt) for r in records] == [
        (f"tether-{run_id}", 0), (f"tether-{run_id}.r1", 1), (f"tether-{run_id}.r2", 2),
    ]  # fmt: skip
    assert records[2].metadata == {"b": "x", "tether_run": run_id, "tether_attempt": "2"}
    assert jobs.status(run_id=run_id).submission_id == f"tether-{run_id}.r2"
    assert "job 2" in jobs.logs(run_id=run_id) and "job 1" not in jobs.logs(run_id=run_id)
    assert jobs.stop(run_id=run_id) is False  # the newest has ended
    listed = [(r.submission_id, r.attempt) for r in jobs.runs() if r.run_id == run_id]
    assert listed == [(f"tether-{run_id}.r2", 2)]
    with pytest.raises(TetherError, match=r"already has a job for resume 2") as info:
        jobs.submit(entrypoint="true", run_id=run_id, metadata={}, attempt=2)
    assert f"tether status {run_id}" in (info.value.hint or "")

    # A run whose own id looks like a resume of another is not taken for one.
    other = f"{run_id}.r3"
    jobs.submit(entrypoint="true", run_id=other, metadata={})
    assert [r.attempt for r in _wait_all(jobs, run_id)] == [0, 1, 2]
    assert [r.submission_id for r in jobs.attempts(run_id=other)] == [f"tether-{other}"]
    with pytest.raises(TetherError, match=r"already has a job for resume 3"):
        jobs.submit(entrypoint="true", run_id=run_id, metadata={}, attempt=3)

    for bad in ({"attempt": -1}, {"attempt": True}, {"metadata": {"tether_attempt": "5"}}):
        with pytest.raises(ValueError):
            jobs.submit(**{"entrypoint": "true", "run_id": run_id, "metadata": {}, **bad})
