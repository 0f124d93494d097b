"""Run branches with real git and a real sshd: snapshots leave the user's index and work tree
alone, names are checked before anything runs, and a branch goes laptop -> head worktree ->
stage commit -> laptop over SSH and over the local remote."""

from __future__ import annotations

import os
import pwd
import subprocess
import time
from pathlib import Path

import pytest
from conftest import git

from tether.client.branches import (
    BranchError,
    BranchExistsError,
    BranchInfo,
    GitError,
    GitHostKeyError,
    Snapshot,
    WorktreeInfo,
    snapshot,
    validate_branch,
)
from tether.client.errors import HostKeyError, TetherError
from tether.client.headrepo import HeadRepo, ssh_git_env
from tether.client.remote import LocalRemote, SSHRemote

BAD_NAMES = [
    "run;rm -rf ~",
    "tether/$(id)",
    "tether/`id`",
    "has space",
    "tab\there",
    "line\nbreak",
    "a..b",
    "-x",
    "--force",
    "a|b",
    "a&b",
    "x>y",
    "quote'd",
    'dq"x',
    "",
    "HEAD",
    "a/.hidden",
    "x.lock",
    "@{-1}",
    "a//b",
    "/abs",
    "trail/",
    "dot.",
    "star*",
    "ti~1",
    "x" * 201,
]
GOOD_NAMES = ["tether/extractors/20240101-120000-ab12", "main", "feature/x_y-1.2", "a"]


class NoCallRemote:
    """A boundary that must never be reached: records and fails on any call."""

    name = "must-not-be-called"

    def __init__(self) -> None:
        self.calls: list[str] = []

    def run(self, command: str, *, timeout=None, check=True):
        self.calls.append(command)
        raise AssertionError(f"remote called: {command}")

    def close(self) -> None:
        pass


# --------------------------------------------------------------------------- helpers


def _files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and ".git" not in p.relative_to(root).parts
    }


def _user_state(repo: Path) -> dict[str, object]:
    """Everything a snapshot must leave alone."""
    return {
        "status": git("status", "--porcelain=v1", "-z", "--untracked-files=all", cwd=repo),
        "cached": git("diff", "--cached", "--binary", cwd=repo),
        "unstaged": git("diff", "--binary", cwd=repo),
        "index": (repo / ".git" / "index").read_bytes(),
        "head": git("symbolic-ref", "-q", "HEAD", cwd=repo),
        "files": _files(repo),
    }


def _tree(repo: Path, rev: str) -> set[str]:
    return set(git("ls-tree", "-r", "--name-only", "-z", rev, cwd=repo).split("\0")) - {""}


def _make_dirty(repo: Path) -> None:
    """Second commit with a binary file and .gitignore, then every kind of local change."""
    (repo / ".gitignore").write_text("*.pt\n")
    (repo / "data.bin").write_bytes(bytes(range(256)) * 4)
    git("add", ".gitignore", "data.bin", cwd=repo)
    git("commit", "-q", "-m", "data and ignores", cwd=repo)
    (repo / "train.py").write_text("print('training, changed')\n")  # modified, unstaged
    (repo / "data.bin").write_bytes(b"\x00\xff" * 300 + b"\x01")  # binary, modified
    (repo / "README.md").unlink()  # deleted, unstaged
    (repo / "src").mkdir()
    (repo / "src" / "new module.py").write_text("X = 1\n")  # new, staged
    git("add", "src/new module.py", cwd=repo)
    (repo / "notes.txt").write_text("untracked notes\n")  # untracked
    (repo / "model.pt").write_bytes(b"\x00" * 64)  # ignored


TRACKED = {".gitignore", "data.bin", "train.py", "src/new module.py"}


def _checkout(repo: Path, rev: str, dest: Path) -> Path:
    git("clone", "-q", "--no-checkout", "--shared", str(repo), str(dest), cwd=repo.parent)
    git("checkout", "-q", "--detach", rev, cwd=dest)
    return dest


def _assert_same_files(laptop: Path, other: Path, names: set[str]) -> None:
    got = _files(other)
    assert set(got) == names
    want = _files(laptop)
    for name in names:
        assert got[name] == want[name], name


# --------------------------------------------------------------------------- names


@pytest.mark.parametrize("name", BAD_NAMES)
def test_validate_branch_refuses_unsafe_names(name):
    with pytest.raises(BranchError) as err:
        validate_branch(name)
    assert err.value.hint


@pytest.mark.parametrize("name", GOOD_NAMES)
def test_validate_branch_accepts_ordinary_names(name):
    assert validate_branch(name) == name


@pytest.mark.parametrize("name", ["run;id", "tether/$(id)", "has space", "a..b", "-x"])
def test_bad_names_are_refused_before_anything_runs(git_repo, head_repo, name):
    before = git("for-each-ref", cwd=git_repo.path)
    state = _user_state(git_repo.path)
    remote = NoCallRemote()
    head = HeadRepo(remote=remote, repo_path="/nonexistent/head.git", git_url=str(head_repo))
    with pytest.raises(BranchError):
        snapshot(repo=git_repo.path, branch=name, message="m")
    with pytest.raises(BranchError):
        head.push(repo=git_repo.path, branch=name)
    with pytest.raises(BranchError):
        head.add_worktree(branch=name, path="/nonexistent/wt")
    with pytest.raises(BranchError):
        head.fetch(repo=git_repo.path, branch=name)
    assert remote.calls == []
    assert git("for-each-ref", cwd=git_repo.path) == before
    assert git("for-each-ref", cwd=head_repo) == ""
    assert _user_state(git_repo.path) == state


def test_ssh_alias_and_relative_paths_are_refused_before_anything_runs():
    remote = NoCallRemote()
    for alias in ("-oProxyCommand=touch /tmp/x", "a b", "host:1", "x;id"):
        with pytest.raises(BranchError):
            HeadRepo.for_remote(remote=remote, repo_path="/r.git", ssh_alias=alias, ssh_config=None)
    with pytest.raises(BranchError):
        HeadRepo(remote=remote, repo_path="relative/r.git", git_url="x")
    head = HeadRepo(remote=remote, repo_path="/r.git", git_url="x")
    with pytest.raises(BranchError):
        head.add_worktree(branch="tether/ok", path="runs/relative")
    assert remote.calls == []


def test_ssh_git_env_checks_host_keys_and_forwards_nothing(tmp_path):
    cfg = tmp_path / "my config"
    env = ssh_git_env(ssh_config=str(cfg))
    cmd = env["GIT_SSH_COMMAND"]
    assert cmd.startswith(f"ssh -F '{cfg}' ")
    for opt in ("StrictHostKeyChecking=yes", "ForwardAgent=no", "BatchMode=yes"):
        assert f"-o {opt}" in cmd
    assert (
        "StrictHostKeyChecking=accept-new"
        in ssh_git_env(ssh_config=None, host_key_checking=False)["GIT_SSH_COMMAND"]
    )


# --------------------------------------------------------------------------- snapshot


@pytest.mark.parametrize("include_untracked", [False, True])
def test_snapshot_of_a_dirty_repo_leaves_index_and_work_tree_alone(
    git_repo, tmp_path, include_untracked
):
    repo = git_repo.path
    _make_dirty(repo)
    base = git("rev-parse", "HEAD", cwd=repo)
    before = _user_state(repo)

    snap = snapshot(
        repo=repo,
        branch="tether/exp/r1",
        include_untracked=include_untracked,
        message="tether: snapshot for run r1",
    )

    assert _user_state(repo) == before
    assert isinstance(snap, Snapshot)
    assert (snap.branch, snap.base, snap.dirty) == ("tether/exp/r1", base, True)
    assert snap.commit != base
    assert git("rev-parse", "refs/heads/tether/exp/r1", cwd=repo) == snap.commit
    assert git("rev-parse", f"{snap.commit}^", cwd=repo) == base
    assert git("log", "-1", "--format=%s", snap.commit, cwd=repo) == "tether: snapshot for run r1"
    included = TRACKED | ({"notes.txt"} if include_untracked else set())
    assert _tree(repo, snap.commit) == included  # README.md deleted, model.pt ignored
    assert sorted(snap.files_changed) == sorted(
        {"README.md", "data.bin", "train.py", "src/new module.py"} | (included - TRACKED)
    )
    assert (
        snap.diff
        == subprocess.run(
            ["git", "diff", "--binary", base, snap.commit], cwd=repo, capture_output=True
        ).stdout
    )
    assert b"GIT binary patch" in snap.diff

    # The commit checked out elsewhere is byte-identical to the laptop's working state ...
    _assert_same_files(repo, _checkout(repo, snap.commit, tmp_path / "at-commit"), included)
    # ... and so is the base with the diff applied.
    applied = _checkout(repo, base, tmp_path / "applied")
    subprocess.run(["git", "apply", "--binary", "-"], cwd=applied, input=snap.diff, check=True)
    _assert_same_files(repo, applied, included)


def test_a_clean_repo_snapshots_to_head_itself(git_repo):
    snap = snapshot(repo=git_repo.path, branch="tether/clean/r1", message="clean")
    assert snap.dirty is False
    assert snap.commit == snap.base == git_repo.head
    assert git("rev-parse", f"{snap.commit}^{{tree}}", cwd=git_repo.path) == git(
        "rev-parse", "HEAD^{tree}", cwd=git_repo.path
    )
    assert (snap.diff, snap.files_changed) == (b"", [])


def test_an_ignored_file_alone_is_not_dirty(git_repo):
    (git_repo.path / ".git" / "info" / "exclude").write_text("*.pt\n")
    (git_repo.path / "ckpt.pt").write_bytes(b"x")
    snap = snapshot(repo=git_repo.path, branch="tether/r", include_untracked=True, message="m")
    assert snap.dirty is False and snap.commit == git_repo.head


def test_a_racily_clean_same_size_edit_is_still_seen(git_repo):
    """An edit that keeps size, inode and mtime is caught only by git's racy-index check
    (entry mtime >= index mtime): the temporary index must keep the index's timestamp."""
    repo = git_repo.path
    git("config", "core.trustctime", "false", cwd=repo)
    target, index = repo / "train.py", repo / ".git" / "index"
    old = (int(time.time()) - 1000) * 1_000_000_000
    os.utime(target, ns=(old, old))
    git("update-index", "--refresh", cwd=repo)  # the entry now records the old mtime
    os.utime(index, ns=(old, old))  # as if the index was written in that same instant
    target.write_bytes(target.read_bytes().upper())  # same size, same inode
    os.utime(target, ns=(old, old))
    before = index.read_bytes()
    no_write = {"GIT_OPTIONAL_LOCKS": "0"}  # status must not rewrite the index
    assert git("status", "--porcelain", cwd=repo, env=no_write) == "M train.py"
    assert index.read_bytes() == before
    snap = snapshot(repo=repo, branch="tether/racy", message="m")
    assert snap.files_changed == ["train.py"]
    assert index.read_bytes() == before


def test_a_second_snapshot_to_the_same_branch_is_refused(git_repo):
    (git_repo.path / "train.py").write_text("v1\n")
    first = snapshot(repo=git_repo.path, branch="tether/exp/r1", message="first")
    (git_repo.path / "train.py").write_text("v2\n")
    with pytest.raises(BranchExistsError) as err:
        snapshot(repo=git_repo.path, branch="tether/exp/r1", message="second")
    assert "already exists" in err.value.message
    assert "pick another run id" in err.value.hint
    assert git("rev-parse", "tether/exp/r1", cwd=git_repo.path) == first.commit


def test_a_branch_blocked_by_an_existing_prefix_is_refused_with_a_hint(git_repo):
    snapshot(repo=git_repo.path, branch="tether/exp", message="m")
    with pytest.raises(GitError) as err:
        snapshot(repo=git_repo.path, branch="tether/exp/r1", message="m")
    assert "update-ref" in err.value.message
    assert "pick another run id" in err.value.hint


def test_detached_head_is_fine_and_the_subdirectory_does_not_matter(git_repo):
    repo = git_repo.path
    git("checkout", "-q", "--detach", cwd=repo)
    (repo / "sub").mkdir()
    (repo / "train.py").write_text("detached change\n")
    snap = snapshot(repo=repo / "sub", branch="tether/d", message="m")
    assert snap.base == git_repo.head and snap.dirty
    assert snap.files_changed == ["train.py"]


def test_a_repo_without_commits_or_outside_git_is_refused(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(BranchError, match="not inside a git work tree"):
        snapshot(repo=empty, branch="tether/x", message="m")
    git("init", "-q", cwd=empty)
    (empty / "a.py").write_text("a\n")
    with pytest.raises(BranchError, match="no commits") as err:
        snapshot(repo=empty, branch="tether/x", message="m")
    assert "git commit" in err.value.hint


# --------------------------------------------------------------------------- head repository


def _round_trip(head: HeadRepo, laptop: Path, runs: Path) -> None:
    """ensure, push, worktree, list, stage commit on the head, fetch back, remove."""
    assert head.ensure() is True
    assert head.ensure() is False
    _make_dirty(laptop)
    branch = "tether/extractors/r1"
    state = _user_state(laptop)
    snap = snapshot(repo=laptop, branch=branch, include_untracked=True, message="run r1 snapshot")
    assert head.push(repo=laptop, branch=branch) == snap.commit
    assert head.push(repo=laptop, branch=branch) == snap.commit  # again: nothing to do

    wt = head.add_worktree(branch=branch, path=str(runs / "r1"))
    assert wt == str((runs / "r1").resolve())
    _assert_same_files(laptop, Path(wt), TRACKED | {"notes.txt"})
    with pytest.raises(GitError, match="already exists"):
        head.add_worktree(branch=branch, path=wt)

    (info,) = head.branches()
    assert isinstance(info, BranchInfo)
    assert (info.name, info.commit, info.subject) == (branch, snap.commit, "run r1 snapshot")
    assert abs(info.date.timestamp() - time.time()) < 300
    assert head.branches(prefix="other/") == []
    assert head.worktrees() == [WorktreeInfo(path=wt, branch=branch, commit=snap.commit)]

    # The driver's stage commit, made on the head inside the run's worktree.
    (Path(wt) / "results").mkdir()
    (Path(wt) / "results" / "metrics.json").write_text('{"val_acc": 0.912}\n')
    git("add", "results", cwd=Path(wt))
    git("commit", "-q", "-m", "train: extractor=magvit 20 epochs, val_acc=0.912", cwd=Path(wt))
    stage = git("rev-parse", "HEAD", cwd=Path(wt))

    assert head.fetch(repo=laptop, branch=branch) == stage
    assert git("rev-parse", branch, cwd=laptop) == stage
    assert git("log", "--format=%s", branch, cwd=laptop).splitlines()[:2] == [
        "train: extractor=magvit 20 epochs, val_acc=0.912",
        "run r1 snapshot",
    ]
    assert _user_state(laptop) == state

    head.remove_worktree(path=wt)
    assert not Path(wt).exists()
    assert head.worktrees() == []
    head.remove_worktree(path=wt)  # already gone: only prunes
    assert [b.commit for b in head.branches()] == [stage]  # the branch outlives its worktree


def test_head_repo_round_trip_over_ssh(sshd, git_repo, tmp_path):
    remote = SSHRemote(host=sshd.host_alias, ssh_config=sshd.ssh_config)
    try:
        head = HeadRepo.for_remote(
            remote=remote,
            repo_path=str(tmp_path / "head" / "tether.git"),
            ssh_alias=sshd.host_alias,
            ssh_config=str(sshd.ssh_config),
        )
        assert head.git_url == f"{sshd.host_alias}:{tmp_path / 'head' / 'tether.git'}"
        assert "StrictHostKeyChecking=yes" in head.git_env["GIT_SSH_COMMAND"]
        _round_trip(head, git_repo.path, tmp_path / "runs")
    finally:
        remote.close()


def test_head_repo_round_trip_with_the_local_remote(git_repo, tmp_path):
    path = str(tmp_path / "head" / "tether.git")
    head = HeadRepo.for_remote(
        remote=LocalRemote(), repo_path=path, ssh_alias=None, ssh_config=None
    )
    assert (head.git_url, head.git_env) == (path, {})
    _round_trip(head, git_repo.path, tmp_path / "runs")


def test_for_remote_expands_tilde_with_the_heads_home(sshd):
    remote = SSHRemote(host=sshd.host_alias, ssh_config=sshd.ssh_config)
    try:
        head = HeadRepo.for_remote(
            remote=remote, repo_path="~/tether/x.git", ssh_alias=sshd.host_alias, ssh_config=None
        )  # nothing is created: only $HOME is read
    finally:
        remote.close()
    home = pwd.getpwuid(os.getuid()).pw_dir.rstrip("/")
    assert head.repo_path == f"{home}/tether/x.git"
    assert head.git_url == f"{sshd.host_alias}:{home}/tether/x.git"
    assert "-F" not in head.git_env["GIT_SSH_COMMAND"].split()


def test_fetch_refuses_a_branch_checked_out_on_the_laptop_and_never_drops_local_commits(
    git_repo, tmp_path
):
    laptop = git_repo.path
    head = HeadRepo.for_remote(
        remote=LocalRemote(), repo_path=str(tmp_path / "h.git"), ssh_alias=None, ssh_config=None
    )
    head.ensure()
    (laptop / "train.py").write_text("v1\n")
    snapshot(repo=laptop, branch="tether/r", message="snap")
    head.push(repo=laptop, branch="tether/r")

    other = tmp_path / "laptop-wt"
    git("worktree", "add", "-q", str(other), "tether/r", cwd=laptop)
    with pytest.raises(BranchError, match="checked out on the laptop"):
        head.fetch(repo=laptop, branch="tether/r")
    git("worktree", "remove", str(other), cwd=laptop)

    # A local commit on the run branch the head does not have: a plain fetch refuses.
    local = git("commit-tree", "tether/r^{tree}", "-p", "tether/r", "-m", "local", cwd=laptop)
    git("update-ref", "refs/heads/tether/r", local, cwd=laptop)
    wt = Path(head.add_worktree(branch="tether/r", path=str(tmp_path / "wt")))
    git("commit", "-q", "--allow-empty", "-m", "stage", cwd=wt)
    with pytest.raises(GitError, match="fetching tether/r") as err:
        head.fetch(repo=laptop, branch="tether/r")
    assert "force=True" in err.value.hint
    assert git("rev-parse", "tether/r", cwd=laptop) == local
    assert head.fetch(repo=laptop, branch="tether/r", force=True) == git(
        "rev-parse", "HEAD", cwd=wt
    )


def test_push_to_a_missing_head_repo_says_to_create_it(git_repo, tmp_path):
    snapshot(repo=git_repo.path, branch="tether/r", message="m")
    head = HeadRepo(
        remote=LocalRemote(), repo_path=str(tmp_path / "no.git"), git_url=str(tmp_path / "no.git")
    )
    with pytest.raises(GitError) as err:
        head.push(repo=git_repo.path, branch="tether/r")
    assert "git -C" in err.value.message and "push" in err.value.message
    assert "exited 128" in err.value.message
    assert "ensure" in err.value.hint
    with pytest.raises(BranchError, match="no branch tether/none"):
        head.push(repo=git_repo.path, branch="tether/none")


def test_a_push_never_overwrites_a_different_branch_on_the_head(git_repo, tmp_path):
    laptop = git_repo.path
    head = HeadRepo.for_remote(
        remote=LocalRemote(), repo_path=str(tmp_path / "h.git"), ssh_alias=None, ssh_config=None
    )
    head.ensure()
    snapshot(repo=laptop, branch="tether/r", message="m")
    head.push(repo=laptop, branch="tether/r")
    other = git("commit-tree", "HEAD^{tree}", "-m", "unrelated", cwd=laptop)
    git("update-ref", "refs/heads/tether/r", other, cwd=laptop)
    with pytest.raises(GitError, match="rejected") as err:
        head.push(repo=laptop, branch="tether/r")
    assert "pick another run id" in err.value.hint
    assert [b.commit for b in head.branches()] == [git_repo.head]


def test_ensure_refuses_a_path_that_is_not_a_bare_repo(tmp_path):
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    head = HeadRepo(remote=LocalRemote(), repo_path=str(tmp_path / "busy"), git_url="unused")
    with pytest.raises(GitError, match="not a bare git repository") as err:
        head.ensure()
    assert "choose another repo path" in err.value.hint
    assert sorted(p.name for p in (tmp_path / "busy").iterdir()) == ["file.txt"]


def _config_with_known_hosts(sshd, tmp_path: Path, text: str) -> tuple[Path, Path]:
    known = tmp_path / "known_hosts_copy"
    known.write_text(text)
    cfg = tmp_path / "ssh_config_copy"
    cfg.write_text(sshd.ssh_config.read_text().replace(str(sshd.known_hosts), str(known)))
    return cfg, known


def test_a_push_to_a_head_with_an_unknown_host_key_fails_and_pushes_nothing(
    sshd, git_repo, tmp_path
):
    path = str(tmp_path / "head.git")
    remote = SSHRemote(host=sshd.host_alias, ssh_config=sshd.ssh_config)
    try:
        good = HeadRepo.for_remote(
            remote=remote,
            repo_path=path,
            ssh_alias=sshd.host_alias,
            ssh_config=str(sshd.ssh_config),
        )
        good.ensure()
        snapshot(repo=git_repo.path, branch="tether/r", message="m")
        cfg, known = _config_with_known_hosts(sshd, tmp_path, "")
        bad = HeadRepo(
            remote=remote,
            repo_path=path,
            git_url=good.git_url,
            git_env=ssh_git_env(ssh_config=str(cfg)),
        )
        with pytest.raises(GitHostKeyError) as err:
            bad.push(repo=git_repo.path, branch="tether/r")
        assert isinstance(err.value, HostKeyError) and isinstance(err.value, TetherError)
        assert "Host key verification failed" in err.value.message
        assert "known_hosts" in err.value.hint
        assert known.read_text() == ""
        assert good.branches() == []

        # Opting in records the new key, then the push goes through.
        trusting = HeadRepo(
            remote=remote,
            repo_path=path,
            git_url=good.git_url,
            git_env=ssh_git_env(ssh_config=str(cfg), host_key_checking=False),
        )
        assert trusting.push(repo=git_repo.path, branch="tether/r") == git_repo.head
        assert sshd.host_public_key in known.read_text()
        assert [b.name for b in good.branches()] == ["tether/r"]
    finally:
        remote.close()
