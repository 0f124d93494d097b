"""`tether submit` and the run verbs end to end: a dirty laptop repo, the head reached over a
real sshd on 127.0.0.1, the run on the real local Ray cluster, real git on both sides."""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
from conftest import git, write_local_profile
from ray.job_submission import JobStatus, JobSubmissionClient

from tether.client.cli import main as tether

PLANTED = "sk-ant-PLANTED-" + uuid.uuid4().hex  # a secret that must never leak

USER_STAGE = """
import hashlib, os

def check_secret(ctx):
    key = os.environ.get("ANTHROPIC_API_KEY", "")
    digest = hashlib.sha256(key.encode()).hexdigest()
    (ctx.out_dir / "secret_digest.txt").write_text(digest)
    print("the key has", len(key), "characters")
    return "secret checked"
"""


@pytest.fixture
def laptop(git_repo, sshd, ray_cluster, tmp_path, monkeypatch):
    """The laptop repo with user code, a spec and a tether.toml whose `head` profile reaches
    this machine over the sshd fixture (head repo and run worktrees under tmp_path)."""
    repo = git_repo.path
    module = f"sub_{uuid.uuid4().hex[:8]}"
    (repo / f"{module}.py").write_text(USER_STAGE)
    (repo / "exp.toml").write_text(
        'name = "exp"\n'
        '[[stages]]\nname = "setup"\n'
        f'[[stages]]\nname = "secret"\nrun = "{module}:check_secret"\n'
    )
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
stall_timeout_s = 30
"""
    )
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "experiment", cwd=repo)
    monkeypatch.chdir(repo)
    monkeypatch.setenv("COLUMNS", "200")
    return repo


def _wait(dashboard: str, job_id: str, timeout: float = 240) -> str:
    client = JobSubmissionClient(dashboard)
    deadline = time.monotonic() + timeout
    while not (status := client.get_job_status(job_id)).is_terminal():
        assert time.monotonic() < deadline, client.get_job_logs(job_id)[-3000:]
        time.sleep(0.5)
    return status


def _json_out(capsys, argv: list[str]) -> object:
    capsys.readouterr()
    code = tether(argv)
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


def test_submit_a_dirty_repo_over_ssh_runs_the_job_and_fetch_brings_the_stage_commits(
    laptop, ray_cluster, sshd, tmp_path, capsys, monkeypatch
):
    repo = laptop
    # Dirty working state: a modified tracked file and a staged new file.
    (repo / "train.py").write_text("print('training, changed')\n")
    (repo / "new_feature.py").write_text("FEATURE = 1\n")
    git("add", "new_feature.py", cwd=repo)
    status_before = git("status", "--porcelain", cwd=repo)
    index_before = (repo / ".git" / "index").read_bytes()
    monkeypatch.setenv("ANTHROPIC_API_KEY", PLANTED)

    sub = _json_out(capsys, ["submit", "exp.toml", "--json"])
    run_id, branch = sub["run_id"], sub["branch"]
    assert branch == f"tether/exp/{run_id}" and sub["dirty"] is True
    assert _wait(ray_cluster.dashboard_url, sub["job_id"]) == JobStatus.SUCCEEDED

    # The laptop's index and work tree are untouched (results/<run-id>/ is tether's, ignored).
    assert git("status", "--porcelain", cwd=repo) == status_before
    assert (repo / ".git" / "index").read_bytes() == index_before
    # The worktree on the head holds exactly the laptop's working state.
    wt = Path(sub["worktree"])
    assert wt.parent == (tmp_path / "head" / "runs").resolve()
    for name in ("train.py", "new_feature.py", "exp.toml", "README.md"):
        assert (wt / name).read_bytes() == (repo / name).read_bytes(), name
    diff = (repo / "results" / run_id / "snapshot.diff").read_bytes()
    laptop_diff = subprocess.run(
        ["git", "diff", "--binary", "HEAD"], cwd=repo, capture_output=True, check=True
    ).stdout  # staged and unstaged changes against HEAD
    assert diff == laptop_diff
    assert b"training, changed" in diff and b"FEATURE = 1" in diff
    assert (wt / "results" / run_id / "snapshot.diff").read_bytes() == diff

    # The secret reached the stage (its digest matches) ...
    digest = (wt / "results" / run_id / "secret" / "secret_digest.txt").read_text()
    assert digest == hashlib.sha256(PLANTED.encode()).hexdigest()
    # ... and is nowhere else: job info (entrypoint, metadata, runtime_env), logs, events,
    # commits, results on both sides, the secrets file (deleted when the run ended).
    client = JobSubmissionClient(ray_cluster.dashboard_url)
    info = client.get_job_info(sub["job_id"])
    assert PLANTED not in json.dumps(
        {"e": info.entrypoint, "m": info.metadata, "r": info.runtime_env}, default=str
    )
    assert PLANTED not in client.get_job_logs(sub["job_id"])
    head_repo = tmp_path / "head" / "tether.git"
    assert PLANTED not in git("log", "-p", "--all", cwd=head_repo)
    for root in (wt, repo / "results"):
        for f in root.rglob("*"):
            if f.is_file() and ".git" not in f.parts:
                assert PLANTED.encode() not in f.read_bytes(), f
    assert not list((tmp_path / "head" / "runs" / ".secrets").glob("*.env"))

    # Ray's own CLI lists the run with its metadata: tether jobs are ordinary Ray jobs.
    ray_cli = Path(sys.executable).with_name("ray")
    listing = subprocess.run(
        [str(ray_cli), "job", "list", "--address", ray_cluster.dashboard_url],
        capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )  # fmt: skip
    assert listing.returncode == 0, listing.stderr
    assert sub["job_id"] in listing.stdout and branch in listing.stdout
    logs = subprocess.run(
        [str(ray_cli), "job", "logs", sub["job_id"], "--address", ray_cluster.dashboard_url],
        capture_output=True, text=True, timeout=120, env={**os.environ, "RAY_AUTH_MODE": "disabled"},
    )  # fmt: skip
    assert f"run {run_id} succeeded" in logs.stdout

    # `tether runs --json` and `tether branches --json` see it; `tether fetch` brings the
    # stage commits into the laptop repo.
    runs = _json_out(capsys, ["runs", "--json"])
    mine = [r for r in runs if r["run_id"] == run_id]
    assert mine and mine[0]["status"] == "SUCCEEDED" and mine[0]["metadata"]["dirty"] == "true"
    branches = _json_out(capsys, ["branches", "--json"])
    assert branch in [b["name"] for b in branches]
    fetched = _json_out(capsys, ["fetch", run_id, "--json"])
    log = git("log", "--format=%s", f"main..{fetched['branch']}", cwd=repo).splitlines()
    assert log[0] == "secret: secret checked" and log[1].startswith("chore: python")
    assert log[2] == f"tether: snapshot for run {run_id} (exp)"
    # `tether pull` brings the run's results over SSH, byte-identical.
    pulled = _json_out(capsys, ["pull", run_id, "--json"])
    assert pulled["files"] >= 5 and not pulled["refused"]
    head_run = wt / "results" / run_id
    for rel in ("secret/secret_digest.txt", "setup/environment.json", "events.jsonl"):
        assert (repo / "results" / run_id / rel).read_bytes() == (head_run / rel).read_bytes()
    # prune removes the finished run's worktree; the branch stays.
    pruned = _json_out(capsys, ["prune", "--json"])
    assert [p["run_id"] for p in pruned] == [run_id] and not wt.exists()
    assert branch in [b["name"] for b in _json_out(capsys, ["branches", "--json"])]


def test_bad_input_is_refused_before_anything_changes(laptop, sshd, tmp_path, capsys):
    repo = laptop
    refs_before = git("for-each-ref", cwd=repo)
    head_dir = tmp_path / "head"
    cases = [
        (["submit", "exp.toml", "--branch", "x;rm -rf ~"], "not a safe branch name"),
        (["submit", "exp.toml", "--branch", "a..b"], "not a safe branch name"),
        (["submit", "missing.toml"], "missing.toml"),
        (["submit", "exp.toml", "--profile", "nope"], "no profile named 'nope'"),
    ]
    (repo / "bad.toml").write_text('name = "exp"\n[[stages]]\nname = "trian"\n')
    cases.append((["submit", "bad.toml"], "bad.toml:3: stages[0].name: stage 'trian'"))
    for argv, expected in cases:
        capsys.readouterr()
        assert tether(argv) == 2, argv
        err = capsys.readouterr().err
        assert expected in err and "Traceback" not in err, (argv, err)
    assert git("for-each-ref", cwd=repo) == refs_before  # no snapshot branch left behind
    assert not head_dir.exists()  # nothing was created on the head


def test_an_unknown_host_key_is_refused_and_trust_new_host_records_it(
    laptop, sshd, tmp_path, capsys
):
    repo = laptop
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    config = tmp_path / "ssh_config_unknown"
    config.write_text(sshd.ssh_config.read_text().replace(str(sshd.known_hosts), str(empty)))
    toml = (repo / "tether.toml").read_text().replace(str(sshd.ssh_config), str(config))
    (repo / "tether.toml").write_text(toml)
    capsys.readouterr()
    assert tether(["submit", "exp.toml"]) == 2
    err = capsys.readouterr().err
    assert "not in known_hosts" in err and "--trust-new-host" in err
    assert not (tmp_path / "head").exists() and empty.read_text() == ""
    assert git("branch", "--list", "tether/*", cwd=repo) == ""
    capsys.readouterr()
    assert tether(["branches", "--trust-new-host", "--json"]) == 0
    assert sshd.host_public_key.split()[1] in empty.read_text()
    assert tether(["branches", "--json"]) == 0  # now known: no flag needed


def test_logs_follow_survives_a_killed_ssh_connection_without_losing_or_repeating_lines(
    laptop, sshd, ray_cluster
):
    from tether.client.config import load_config
    from tether.client.jobs import JobsClient
    from tether.client.runverbs import head_for, show_logs

    run_id = f"logs-{uuid.uuid4().hex[:8]}"
    code = "import time\nfor i in range(60):\n    print(f'line {i:03d}', flush=True)\n    time.sleep(0.2)\n"
    JobsClient(address=ray_cluster.dashboard_url).submit(
        entrypoint=f"{sys.executable} -c {shlex.quote(code)}", run_id=run_id, metadata={}
    )
    config, _ = load_config(cwd=laptop)
    seen: list[str] = []
    killed: list[int] = []
    stamps: list[tuple[float, str]] = []

    def on_text(text: str) -> None:
        seen.append(text)
        stamps.append((time.monotonic(), text))

    def kill_ssh_once() -> None:
        while not any("line 010" in s for s in seen):
            time.sleep(0.05)
        for child in psutil.Process(sshd.pid).children(recursive=True):
            killed.append(child.pid)
            child.kill()
        stamps.append((time.monotonic(), "<killed>"))

    killer = threading.Thread(target=kill_ssh_once, daemon=True)
    killer.start()
    with head_for(config=config, profile_name=None, cwd=laptop) as head:
        status = show_logs(head, run_id, follow=True, on_text=on_text)
    killer.join(timeout=30)
    assert killed, f"the SSH connection was never cut: {stamps}"
    # Lines kept arriving after the cut: the follow went on through a new connection.
    cut = next(i for i, (_, t) in enumerate(stamps) if t == "<killed>")
    assert any("line 059" in t for _, t in stamps[cut + 1 :]), stamps
    assert status == "SUCCEEDED"
    lines = [ln for ln in "".join(seen).splitlines() if ln.startswith("line ")]
    assert lines == [f"line {i:03d}" for i in range(60)]


def test_the_embedded_local_profile_submits_stops_and_shows_a_run(
    git_repo, ray_cluster, capsys, monkeypatch
):
    """No SSH: the laptop repo is the head repo, worktrees go to .tether/runs/."""
    repo = git_repo.path
    write_local_profile(repo, ray_cluster)
    (repo / "slow.toml").write_text(
        'name = "slow"\n[[stages]]\nname = "nap"\n'
        "command = 'for i in $(seq 1 120); do echo tick $i; sleep 0.5; done'\n"
    )
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "slow spec", cwd=repo)
    monkeypatch.chdir(repo)
    monkeypatch.setenv("COLUMNS", "200")
    sub = _json_out(capsys, ["submit", "slow.toml", "--json"])
    assert Path(sub["worktree"]).parent == (repo / ".tether" / "runs").resolve()
    assert git("rev-parse", sub["branch"], cwd=repo) == sub["commit"]  # the branch is local
    client = JobSubmissionClient(ray_cluster.dashboard_url)
    deadline = time.monotonic() + 120
    while "tick 2" not in client.get_job_logs(sub["job_id"]):
        assert time.monotonic() < deadline, client.get_job_logs(sub["job_id"])
        time.sleep(0.5)
    capsys.readouterr()
    assert tether(["stop", sub["run_id"]]) == 0
    assert f"stopping run {sub['run_id']}" in capsys.readouterr().out
    assert _wait(ray_cluster.dashboard_url, sub["job_id"], timeout=60) == JobStatus.STOPPED
    assert tether(["logs", sub["run_id"]]) == 0
    assert "Running entrypoint for job" in capsys.readouterr().out
    assert tether(["runs"]) == 0
    table = capsys.readouterr().out
    assert sub["run_id"] in table and "STOPPED" in table
    fetched = _json_out(capsys, ["fetch", sub["run_id"], "--json"])
    assert fetched["branch"] == sub["branch"]
    pruned = _json_out(capsys, ["prune", "--json"])
    assert [p["run_id"] for p in pruned] == [sub["run_id"]]
    assert not Path(sub["worktree"]).exists()
    assert git("status", "--porcelain", cwd=repo) == ""
