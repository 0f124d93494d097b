"""Run branches: snapshot the laptop's working state onto a new branch, push it to the head
node's repository, give the run a worktree there, and fetch its stage commits back.

The snapshot never touches the user's index or work tree: it is built in a temporary index
(a copy of the user's, so staged new files are kept; ``GIT_INDEX_FILE``), and the branch is
created by compare-and-swap (``git update-ref refs/heads/B NEW ""``), so an existing branch is
never moved. Every command sent to the head's shell is built with ``shlex.quote`` on every
argument, and branch names are validated before anything runs, locally or remotely.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from tether.cluster.spec import is_safe_branch_name

from .errors import HostKeyError, TetherError
from .localstate import STATE_DIR

_BRANCH_MAX = 200
_SSH_ALIAS = re.compile(r"[A-Za-z0-9_.@%+=-]+")
_TAIL = 10
# Inherited variables that would point our git calls at another repository or index.
_GIT_REPO_VARS = ("GIT_DIR", "GIT_WORK_TREE", "GIT_INDEX_FILE", "GIT_PREFIX", "GIT_COMMON_DIR")


class BranchError(TetherError):
    """A run branch could not be made, validated, pushed or fetched."""


class BranchExistsError(BranchError):
    """The branch already exists; snapshots never move an existing branch."""


class GitError(BranchError):
    """A git command (on the laptop or the head) exited non-zero; carries what ran and how."""

    def __init__(
        self,
        *,
        command: str,
        exit_code: int,
        output: str,
        host: str = "laptop",
        what: str | None = None,
        hint: str | None = None,
    ) -> None:
        last = _tail(output)
        message = f"{what or 'git failed'}: command on {host} exited {exit_code}: {command}"
        if last:
            message += "\n  last output:\n" + "\n".join("    " + ln for ln in last.splitlines())
        super().__init__(message, hint=hint)
        self.command = command
        self.exit_code = exit_code
        self.output = output
        self.host = host


class GitHostKeyError(GitError, HostKeyError):
    """git's ssh refused the head: its host key is unknown or changed."""


@dataclass(frozen=True)
class Snapshot:
    branch: str
    commit: str  # the branch tip; equals ``base`` when the working state was clean
    base: str  # HEAD's commit when the snapshot was taken
    dirty: bool  # the working state differed from HEAD
    diff: bytes = field(repr=False)  # `git diff --binary base commit`; applies on base
    files_changed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class BranchInfo:
    name: str  # without refs/heads/
    commit: str
    subject: str
    date: datetime  # committer date, UTC


@dataclass(frozen=True)
class WorktreeInfo:
    path: str
    branch: str | None  # None when detached
    commit: str | None  # None for a worktree on an unborn branch


# --------------------------------------------------------------------------- names


def validate_branch(name: str) -> str:
    """Return ``name`` when it is a branch name git accepts and no shell can misread; raise
    ``BranchError`` otherwise. Runs only a local ``git check-ref-format``, nothing remote."""
    if not isinstance(name, str) or not name:
        raise BranchError("the branch name is empty", hint="name it like tether/<spec>/<run-id>")
    if len(name) > _BRANCH_MAX:
        raise BranchError(
            f"branch name is {len(name)} characters long (at most {_BRANCH_MAX})",
            hint="use a shorter spec name or run id",
        )
    if not is_safe_branch_name(name):  # the one rule (cluster.spec), then git's own check
        raise BranchError(
            f"{name!r} is not a safe branch name",
            hint="use letters, digits, '.', '_', '-' and '/' (no '..', spaces, shell "
            "characters, or a leading '-'), e.g. tether/extractors/run-1",
        )
    res = subprocess.run(
        ["git", "check-ref-format", "--branch", name],
        capture_output=True,
        text=True,
        cwd=tempfile.gettempdir(),  # outside any repo: no @{-N} lookups
        env=_git_env(),
    )
    if res.returncode != 0 or name == "HEAD":
        raise BranchError(
            f"git refuses {name!r} as a branch name: {_tail(res.stderr, 1) or 'reserved'}",
            hint="see `git check-ref-format --help`; e.g. no component may start with '.' "
            "or end with '.lock'",
        )
    return name


# --------------------------------------------------------------------------- laptop git


def _git_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in _GIT_REPO_VARS}
    env["GIT_TERMINAL_PROMPT"] = "0"
    env.update(extra or {})
    return env


def _tail(text: str, lines: int = _TAIL) -> str:
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _git(
    *args: str,
    repo: Path,
    env: dict[str, str] | None = None,
    check: bool = True,
    timeout: float | None = None,
    what: str | None = None,
    hint: str | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run ``git -C repo ARGS`` on the laptop; bytes out; ``GitError`` on a non-zero exit."""
    argv = ["git", "-C", str(repo), *args]
    try:
        res = subprocess.run(argv, capture_output=True, env=_git_env(env), timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        raise GitError(
            command=shlex.join(argv),
            exit_code=-1,
            output=(exc.stderr or b"").decode(errors="replace") + f"\ntimed out after {timeout}s",
            what=what,
            hint=hint or "check that the head is reachable (`tether doctor`), then retry",
        ) from None
    if check and res.returncode != 0:
        raise GitError(
            command=shlex.join(argv),
            exit_code=res.returncode,
            output=(res.stdout + res.stderr).decode(errors="replace"),
            what=what,
            hint=hint,
        )
    return res


def _out(res: subprocess.CompletedProcess[bytes]) -> str:
    return res.stdout.decode().strip()


def _work_tree(repo: Path) -> Path:
    res = _git("rev-parse", "--show-toplevel", repo=repo, check=False)
    if res.returncode != 0 or not _out(res):
        raise BranchError(
            f"{repo} is not inside a git work tree",
            hint="run tether from your experiment's repository (`git init` and commit first)",
        )
    return Path(_out(res))


def _head(repo: Path) -> str:
    res = _git("rev-parse", "--verify", "-q", "HEAD^{commit}", repo=repo, check=False)
    if res.returncode != 0:
        raise BranchError(
            f"{repo} has no commits yet: there is nothing to branch a run from",
            hint="commit your code once (`git add -A && git commit -m init`), then submit",
        )
    return _out(res)


def _local_branch(repo: Path, branch: str) -> str | None:
    res = _git(
        "rev-parse", "--verify", "-q", f"refs/heads/{branch}^{{commit}}", repo=repo, check=False
    )
    return _out(res) if res.returncode == 0 else None


def local_branch(*, repo: Path, branch: str) -> str | None:
    """The commit of the laptop's ``branch``, or None when it does not exist."""
    return _local_branch(Path(repo), validate_branch(branch))


def delete_branch(*, repo: Path, branch: str, commit: str) -> bool:
    """Delete the laptop's ``branch`` only while it still points at ``commit`` (a snapshot
    that never reached the head); False when it moved or is gone. Never touches a branch
    someone else changed."""
    validate_branch(branch)
    res = _git("update-ref", "-d", f"refs/heads/{branch}", commit, repo=Path(repo), check=False)
    return res.returncode == 0


def snapshot(*, repo: Path, branch: str, include_untracked: bool = False, message: str) -> Snapshot:
    """Put the laptop's working state (HEAD plus uncommitted changes to tracked files, staged
    or not; plus untracked, non-ignored files when ``include_untracked``) on a NEW branch.

    The user's index, work tree and current branch are left exactly as they were. When the
    working state equals HEAD the branch points at HEAD itself (no empty commit).
    """
    validate_branch(branch)
    if not message.strip():
        raise BranchError("the snapshot commit needs a message", hint="pass message=...")
    top = _work_tree(Path(repo))
    base = _head(top)
    existing = _local_branch(top, branch)
    if existing:
        raise _exists(branch, top, existing)

    index = top / _out(_git("rev-parse", "--git-path", "index", repo=top))  # may be absolute
    with tempfile.TemporaryDirectory(prefix="tether-snapshot-") as tmp:
        tmp_index = Path(tmp) / "index"
        env = {"GIT_INDEX_FILE": str(tmp_index)}
        if index.is_file():
            # A copy keeps what the user staged (new files included); copy2 keeps its mtime,
            # which git's racy-entry check needs to see same-size edits made in that instant.
            shutil.copy2(index, tmp_index)
        else:
            _git("read-tree", "HEAD", repo=top, env=env)
        _git(
            "add",
            "-A" if include_untracked else "-u",
            "--",
            ".",
            f":(exclude){STATE_DIR}",  # tether's own state, even where it was once tracked
            repo=top,
            env=env,
            what="staging the snapshot",
        )
        tree = _out(_git("write-tree", repo=top, env=env, what="writing the snapshot tree"))

    dirty = tree != _out(_git("rev-parse", f"{base}^{{tree}}", repo=top))
    commit = base
    if dirty:
        commit = _out(
            _git(
                "commit-tree", tree, "-p", base, "-m", message,
                repo=top,
                what="committing the snapshot",
                hint="set your identity: git config --global user.name/user.email",
            )
        )  # fmt: skip
    reflog = f"tether: {message.splitlines()[0]}"
    res = _git(
        "update-ref", "-m", reflog, f"refs/heads/{branch}", commit, "", repo=top, check=False
    )  # fmt: skip
    if res.returncode != 0:
        now = _local_branch(top, branch)
        if now:
            raise _exists(branch, top, now)
        raise GitError(
            command=f"git update-ref refs/heads/{branch} {commit} ''",
            exit_code=res.returncode,
            output=res.stderr.decode(errors="replace"),
            what=f"cannot create branch {branch}",
            hint="a branch whose name is a prefix of this one (or the reverse) may exist: "
            "pick another run id or branch",
        )
    diff = _git("diff-tree", "-p", "--binary", "--no-color", base, commit, repo=top).stdout
    names = _git("diff-tree", "-r", "-z", "--name-only", "--no-commit-id", base, commit, repo=top)
    files = [n.decode(errors="surrogateescape") for n in names.stdout.split(b"\0") if n]
    return Snapshot(
        branch=branch, commit=commit, base=base, dirty=dirty, diff=diff, files_changed=files
    )


def _exists(branch: str, repo: Path, commit: str) -> BranchExistsError:
    return BranchExistsError(
        f"branch {branch} already exists in {repo} (at {commit[:12]}); a snapshot never moves "
        "an existing branch",
        hint="pick another run id/branch, or delete the old one: git branch -D " + branch,
    )
