"""The git fixtures are real repositories; the bare head repo is reachable over the sshd."""

from __future__ import annotations

from conftest import git


def test_laptop_repo_has_a_commit_on_main(git_repo):
    assert git("rev-parse", "--abbrev-ref", "HEAD", cwd=git_repo.path) == "main"
    assert git("log", "--format=%s", cwd=git_repo.path) == "initial commit"
    assert len(git_repo.head) == 40


def test_push_a_branch_to_the_head_repo_over_ssh(git_repo, head_repo, sshd):
    git("checkout", "-q", "-b", "tether/demo/run-1", cwd=git_repo.path)
    (git_repo.path / "notes.md").write_text("stage output\n")
    git("add", "notes.md", cwd=git_repo.path)
    git("commit", "-q", "-m", "train: demo", cwd=git_repo.path)
    tip = git("rev-parse", "HEAD", cwd=git_repo.path)
    git(
        "push",
        "-q",
        f"{sshd.host_alias}:{head_repo}",
        "tether/demo/run-1",
        cwd=git_repo.path,
        env={"GIT_SSH_COMMAND": sshd.ssh_command()},
    )
    assert git("rev-parse", "refs/heads/tether/demo/run-1", cwd=head_repo) == tip
    assert git("log", "--format=%s", "tether/demo/run-1", cwd=head_repo).splitlines() == [
        "train: demo",
        "initial commit",
    ]
    assert git("rev-parse", "--is-bare-repository", cwd=head_repo) == "true"
