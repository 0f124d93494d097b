"""Stage commits on a real run branch: conventional messages, no checkpoints, CAS, push."""

from __future__ import annotations

import pytest
from conftest import git

from tether.cluster.gitstage import StageCommitError, StageCommitter, stage_message


@pytest.fixture
def run_worktree(git_repo, head_repo):
    """The laptop repo's main pushed to the head repo; a run branch checked out in a worktree
    of a clone, tracking the head repo (as the cluster side will have it)."""
    git("push", "-q", str(head_repo), "main", cwd=git_repo.path)
    clone = git_repo.path.parent / "head-clone"
    git("clone", "-q", str(head_repo), str(clone), cwd=git_repo.path.parent)
    git("branch", "tether/demo/run-1", "main", cwd=clone)
    wt = git_repo.path.parent / "wt"
    git("worktree", "add", "-q", str(wt), "tether/demo/run-1", cwd=clone)
    return wt


def test_one_commit_per_stage_with_conventional_messages_and_no_checkpoints(run_worktree):
    wt = run_worktree
    c = StageCommitter(worktree=wt, branch="tether/demo/run-1")
    out = wt / "results" / "i3d"
    out.mkdir(parents=True)
    (out / "training_results.json").write_text('{"ok": 1}\n')
    (out / "checkpoint.pt").write_bytes(b"\0" * 100)
    (out / "best_model.ckpt").write_bytes(b"\0" * 100)
    first = c.commit_stage(
        stage="train", summary="extractor=i3d 3 epochs, val_acc=0.912", paths=[wt / "results"]
    )
    (out / "report.md").write_text("# report\n")
    second = c.commit_stage(stage="report", summary="", paths=[wt / "results"])
    assert first and second
    log = git("log", "--format=%s", "tether/demo/run-1", cwd=wt).splitlines()
    assert log[:2] == ["docs: final report", "train: extractor=i3d 3 epochs, val_acc=0.912"]
    files = git("ls-tree", "-r", "--name-only", "tether/demo/run-1", cwd=wt).splitlines()
    assert "results/i3d/training_results.json" in files and "results/i3d/report.md" in files
    assert not [f for f in files if f.endswith((".pt", ".ckpt"))]
    # Nothing new: no empty commit.
    assert c.commit_stage(stage="evaluate", summary="x", paths=[wt / "results"]) is None


def test_a_branch_moved_by_someone_else_is_never_overwritten(run_worktree):
    wt = run_worktree
    c = StageCommitter(worktree=wt, branch="tether/demo/run-1")
    (wt / "a.json").write_text("{}\n")
    c.commit_stage(stage="train", summary="one", paths=[wt / "a.json"])
    # Another writer moves the branch behind the committer's back.
    before = git("rev-parse", "tether/demo/run-1", cwd=wt)
    other = git("commit-tree", "-p", before, "-m", "someone else", f"{before}^{{tree}}", cwd=wt)
    git("update-ref", "refs/heads/tether/demo/run-1", other, cwd=wt)
    (wt / "b.json").write_text("{}\n")
    with pytest.raises(StageCommitError, match="moved while committing"):
        c.commit_stage(stage="evaluate", summary="two", paths=[wt / "b.json"])
    assert git("rev-parse", "tether/demo/run-1", cwd=wt) == other  # not clobbered


def test_push_goes_upstream_and_a_failed_push_is_reported_not_raised(run_worktree, head_repo):
    wt = run_worktree
    git("push", "-q", "-u", "origin", "tether/demo/run-1", cwd=wt)
    c = StageCommitter(worktree=wt, branch="tether/demo/run-1")
    (wt / "m.json").write_text("{}\n")
    sha = c.commit_stage(stage="evaluate", summary="acc=0.9", paths=[wt / "m.json"])
    res = c.push()
    assert res.ok, res.message
    assert git("rev-parse", "refs/heads/tether/demo/run-1", cwd=head_repo) == sha
    git("remote", "set-url", "origin", str(wt.parent / "gone.git"), cwd=wt)
    (wt / "n.json").write_text("{}\n")
    c.commit_stage(stage="visualize", summary="plots", paths=[wt / "n.json"])
    res = c.push()
    assert not res.ok and "push to origin failed" in res.message


def test_messages_and_bad_worktrees():
    assert stage_message("evaluate", "acc=0.9") == "eval: acc=0.9"
    assert stage_message("visualize", "4 plots") == "viz: 4 plots"
    assert stage_message("analyze", "plateaued") == "analysis: plateaued"
    assert stage_message("report", "") == "docs: final report"
    with pytest.raises(StageCommitError, match="not a git worktree"):
        StageCommitter(worktree="/nonexistent/wt", branch="x")
