"""What tether creates in a user's repository (``.tether/``, ``results/<run-id>/``) is
git-ignored from the moment it exists: after a submit, a pull and a fetch on the embedded
local profile, ``git status`` is clean and ``git add -A`` stages nothing of tether's; the
user's tracked files are never edited; ``tether doctor`` names tether state that is tracked."""

from __future__ import annotations

import json
import time
from pathlib import Path

from conftest import git, write_local_profile
from ray.job_submission import JobStatus, JobSubmissionClient

from tether.client.cli import main as tether
from tether.client.doctor import Status, check_tracked_state
from tether.client.localstate import own_folder, run_results_dir


def _wait(dashboard: str, job_id: str) -> str:
    client = JobSubmissionClient(dashboard)
    deadline = time.monotonic() + 180
    while not (status := client.get_job_status(job_id)).is_terminal():
        assert time.monotonic() < deadline, client.get_job_logs(job_id)[-2000:]
        time.sleep(0.5)
    return status


def test_submit_pull_and_fetch_leave_git_status_clean_and_add_all_stages_nothing(
    git_repo, ray_cluster, capsys, monkeypatch
):
    repo = git_repo.path
    write_local_profile(repo, ray_cluster)
    # The user's own results folder with a tracked file of theirs, and their own .gitignore.
    (repo / "results").mkdir()
    (repo / "results" / "notes.md").write_text("my notes\n")
    (repo / ".gitignore").write_text("*.log\n")
    (repo / "exp.toml").write_text(
        'name = "exp"\ninclude_untracked = true\n[[stages]]\nname = "setup"\n'
    )
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "experiment", cwd=repo)
    tracked_before = git("ls-files", "-s", cwd=repo)
    monkeypatch.chdir(repo)

    capsys.readouterr()
    assert tether(["submit", "exp.toml", "--json"]) == 0
    sub = json.loads(capsys.readouterr().out)
    assert git("status", "--porcelain", "--ignored=no", cwd=repo) == ""  # from the start
    assert _wait(ray_cluster.dashboard_url, sub["job_id"]) == JobStatus.SUCCEEDED
    run_id = sub["run_id"]
    assert tether(["pull", run_id]) == 0
    assert tether(["fetch", run_id]) == 0
    assert (repo / "results" / run_id / "events.jsonl").is_file()  # pulled, really there
    assert (repo / ".tether" / "runs" / run_id / ".git").exists()  # the run's worktree

    assert git("status", "--porcelain", cwd=repo) == ""
    git("add", "-A", cwd=repo)
    assert git("diff", "--cached", "--name-only", cwd=repo) == ""
    assert git("ls-files", "-s", cwd=repo) == tracked_before  # nothing of the user's changed
    assert (repo / ".gitignore").read_text() == "*.log\n"
    assert "tether" not in (repo / ".git" / "info" / "exclude").read_text()
    ignored = git("status", "--porcelain", "--ignored", cwd=repo)
    assert f"!! results/{run_id}/" in ignored and "!! .tether/" in ignored, ignored

    # A second snapshot with include_untracked (git add -A on a temp index) carries nothing
    # of tether's either.
    (repo / "new_idea.py").write_text("IDEA = 1\n")
    capsys.readouterr()
    assert tether(["submit", "exp.toml", "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    files = git("show", "--name-only", "--format=", second["commit"], cwd=repo).split()
    assert files == ["new_idea.py"], files
    assert _wait(ray_cluster.dashboard_url, second["job_id"]) == JobStatus.SUCCEEDED
    assert git("status", "--porcelain", cwd=repo) == "?? new_idea.py"


def test_owned_folders_ignore_themselves_and_keep_an_existing_marker(tmp_path):
    git("init", "-q", "-b", "main", cwd=tmp_path)
    run = run_results_dir(repo=tmp_path, results_dir="results", run_id="r-1")
    (run / "a.json").write_text("{}")
    (run / "sub").mkdir()
    (run / "sub" / "b.png").write_bytes(b"x")
    assert git("status", "--porcelain", "--untracked-files=all", cwd=tmp_path) == ""
    marker = own_folder(tmp_path / ".tether") / ".gitignore"
    marker.write_text("*\n# edited\n")
    own_folder(tmp_path / ".tether")
    assert marker.read_text() == "*\n# edited\n"


def test_doctor_names_tether_state_that_git_tracks_and_says_how_to_untrack_it(
    git_repo, monkeypatch
):
    repo = git_repo.path
    (repo / "results").mkdir()
    (repo / "results" / "README.md").write_text("the user's own file\n")
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "readme", cwd=repo)
    ok = check_tracked_state(cwd=repo, results_dir="results")
    assert ok.status is Status.PASS, ok  # a file of the user's beside the run folders is theirs

    # What a plain `git add -A` did before tether ignored its state: a run folder and .tether/.
    for rel in ("results/r-1/report.md", ".tether/runs.json"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("x\n")
    git("add", "-f", "results/r-1/report.md", ".tether/runs.json", cwd=repo)
    git("commit", "-q", "-m", "oops", cwd=repo)
    bad = check_tracked_state(cwd=repo / "results", results_dir="results")
    assert bad.status is Status.FAIL
    assert "2 files" in bad.detail and "results/r-1" in bad.detail and ".tether" in bad.detail
    assert "git rm -r -q --cached -- .tether/runs.json results/r-1" in bad.fix

    monkeypatch.chdir(repo)
    assert tether(["doctor"]) == 1  # the CLI fails on it, with the table


def test_a_pull_log_lives_inside_the_run_folder(tmp_path):
    """The sync log of `tether pull` is inside results/<run-id>/, never beside the user's
    files in results/."""
    from tether.client.pullcmd import PullPlan, _event

    dest = tmp_path / "results" / "r-2"
    plan = PullPlan(run_id="r-2", remote_root="/x", dest=dest, events=dest / ".tether-sync.jsonl")
    _event(plan, {"ok": False, "error": "head unreachable"})
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["r-2"]
    assert (dest / ".gitignore").read_bytes().endswith(b"*\n")
    assert Path(dest / ".tether-sync.jsonl").read_text().count("\n") == 1
