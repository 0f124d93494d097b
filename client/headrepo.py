"""The run repository on the head node: a bare repository reached through the profile's
command channel for its shell and through the laptop's git (over OpenSSH, host keys checked)
for pushes and fetches. It makes sure the repository exists, receives a run branch, gives the
run a worktree, lists run branches and worktrees, fetches a branch back and removes a worktree.

Every command sent to the head's shell is built with ``shlex.quote`` on every argument; branch
names are checked (``branches.validate_branch``) before anything runs. The laptop side (the
snapshot onto a run branch) is ``client/branches.py``.
"""

from __future__ import annotations

import os
import shlex
import subprocess
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from .branches import (
    _SSH_ALIAS,
    BranchError,
    BranchInfo,
    GitError,
    GitHostKeyError,
    WorktreeInfo,
    _git,
    _local_branch,
    _out,
    validate_branch,
)
from .remote import Remote


def ssh_git_env(*, ssh_config: str | None, host_key_checking: bool = True) -> dict[str, str]:
    """``GIT_SSH_COMMAND`` for git on the laptop talking to the head through an SSH alias.

    Host keys are checked by OpenSSH against the config's known_hosts; with
    ``host_key_checking=False`` a NEW host key is recorded (``accept-new``), a changed one is
    still refused. No agent forwarding, no prompts."""
    argv = ["ssh"]
    if ssh_config:
        argv += ["-F", str(Path(ssh_config).expanduser())]
    argv += [
        "-o", f"StrictHostKeyChecking={'yes' if host_key_checking else 'accept-new'}",
        "-o", "ForwardAgent=no",
        "-o", "BatchMode=yes",
        "-o", "ConnectTimeout=15",
        "-o", "ServerAliveInterval=15",
    ]  # fmt: skip
    return {"GIT_SSH_COMMAND": shlex.join(argv), "GIT_SSH_VARIANT": "ssh"}


def _q(*args: str) -> str:
    return " ".join(shlex.quote(a) for a in args)


def _sh(script: str) -> str:
    """Run a script with if/$(...) in POSIX sh, whatever the login shell on the head is."""
    return "sh -c " + shlex.quote(script)


def _remote_home(remote: Remote) -> str:
    home = remote.run('printf %s "$HOME"', timeout=30).stdout.strip()
    if not home.startswith("/"):
        raise BranchError(
            f"cannot tell the home directory on {remote.name} (got {home!r})",
            hint="give the head repository as an absolute path in tether.toml",
        )
    return home


def _expand(path: str, home: str | None) -> str:
    if path == "~" or path.startswith("~/"):
        if home is None:
            raise BranchError(
                f"{path!r} needs the head's home directory to expand",
                hint="build the HeadRepo with HeadRepo.for_remote, or give an absolute path",
            )
        path = home + path[1:]
    if not path.startswith("/"):
        raise BranchError(
            f"{path!r} is not an absolute path on the head",
            hint="use an absolute path or one under ~/ (e.g. ~/tether/runs/<run-id>)",
        )
    return str(PurePosixPath(os.path.normpath(path)))


class HeadRepo:
    """The repository on the head node (bare), reached through a ``Remote`` for its shell
    and through ``git_url`` for the laptop's git (``alias:/abs/path`` over SSH, or a path)."""

    def __init__(
        self,
        *,
        remote: Remote,
        repo_path: str,
        git_url: str,
        git_env: dict[str, str] | None = None,
    ) -> None:
        self.remote = remote
        self.repo_path = _expand(repo_path, None)
        self.git_url = git_url
        self.git_env = dict(git_env or {})
        self._home: str | None = None

    @classmethod
    def for_remote(
        cls,
        *,
        remote: Remote,
        repo_path: str,
        ssh_alias: str | None,
        ssh_config: str | None,
        host_key_checking: bool = True,
    ) -> HeadRepo:
        """``repo_path`` may start with ``~/`` (the head's home); ``ssh_alias=None`` means the
        head is this machine (``LocalRemote``) and the laptop's git uses the path directly."""
        if ssh_alias is not None and (
            not _SSH_ALIAS.fullmatch(ssh_alias) or ssh_alias.startswith("-")
        ):
            raise BranchError(
                f"{ssh_alias!r} is not a usable SSH host alias",
                hint="name a Host from your SSH config (letters, digits, '.', '_', '-')",
            )
        home = None
        if repo_path == "~" or repo_path.startswith("~/"):
            home = _remote_home(remote)
        path = _expand(repo_path, home)
        if ssh_alias is None:
            head = cls(remote=remote, repo_path=path, git_url=path)
        else:
            env = ssh_git_env(ssh_config=ssh_config, host_key_checking=host_key_checking)
            head = cls(remote=remote, repo_path=path, git_url=f"{ssh_alias}:{path}", git_env=env)
        head._home = home
        return head

    # ------------------------------------------------------------------ helpers

    def _run(self, command: str, *, what: str, hint: str | None = None, timeout: float = 300):
        res = self.remote.run(command, timeout=timeout, check=False)
        if res.exit_code != 0:
            raise GitError(
                command=command,
                exit_code=res.exit_code,
                output=res.stdout + res.stderr,
                host=self.remote.name,
                what=what,
                hint=hint,
            )
        return res

    def _git_cmd(self, *args: str) -> str:
        return _q("git", "-C", self.repo_path, *args)

    def _path(self, path: str) -> str:
        if (path == "~" or path.startswith("~/")) and self._home is None:
            self._home = _remote_home(self.remote)
        return _expand(path, self._home)

    def _laptop_git(
        self, *args: str, repo: Path, what: str, timeout: float | None, rejected: str
    ) -> subprocess.CompletedProcess[bytes]:
        res = _git(*args, repo=repo, env=self.git_env, check=False, timeout=timeout)
        if res.returncode == 0:
            return res
        output = (res.stdout + res.stderr).decode(errors="replace")
        kind = GitError
        hint = f"check `tether doctor`; the head repository is {self.git_url}"
        if "Host key verification failed" in output or "REMOTE HOST IDENTIFICATION" in output:
            kind = GitHostKeyError
            hint = (
                "the head's SSH host key is not in known_hosts (or changed): verify its "
                f"fingerprint and run `ssh {self.git_url.split(':', 1)[0]}` once, or pass "
                "--trust-new-host"
            )
        elif "does not appear to be a git repository" in output:
            hint = "create it first (HeadRepo.ensure, done by `tether submit`)"
        elif "[rejected]" in output or "non-fast-forward" in output:
            hint = rejected
        raise kind(
            command=shlex.join(["git", "-C", str(repo), *args]),
            exit_code=res.returncode,
            output=output,
            what=what,
            hint=hint,
        )

    # ------------------------------------------------------------------ operations

    def exists(self) -> bool:
        """Whether the head repository is there (before the first submit it is not)."""
        res = self.remote.run(
            _q("git", "-C", self.repo_path, "rev-parse", "--git-dir"), timeout=60, check=False
        )
        return res.exit_code == 0

    def ensure(self) -> bool:
        """Create the bare repository on first use; True when it was created now. Refuses a
        path that exists and is not a bare repository."""
        p = shlex.quote(self.repo_path)
        script = (
            f'if [ "$(git --git-dir={p} rev-parse --is-bare-repository 2>/dev/null)" = true ];'
            " then echo exists;"
            f' elif [ -e {p} ] && [ -n "$(ls -A {p} 2>&1)" ];'
            f" then echo {p} exists and is not a bare git repository >&2; exit 3;"
            f" else mkdir -p {p} && git init --bare -q {p} && echo created; fi"
        )
        res = self._run(
            _sh(script),
            what=f"cannot create the head repository {self.repo_path}",
            hint="choose another repo path in tether.toml, or move that directory away",
        )
        return res.stdout.strip() == "created"

    def push(self, *, repo: Path, branch: str, timeout: float | None = 600) -> str:
        """Push the laptop's ``branch`` to the head (never forced); returns its commit."""
        validate_branch(branch)
        commit = _local_branch(Path(repo), branch)
        if commit is None:
            raise BranchError(
                f"there is no branch {branch} in {repo} to push",
                hint="snapshot first (tether submit does), or check the branch name",
            )
        ref = f"refs/heads/{branch}"
        self._laptop_git(
            "push", self.git_url, f"{ref}:{ref}",
            repo=Path(repo), what=f"pushing {branch} to {self.git_url}", timeout=timeout,
            rejected=f"the head already has a different {branch}: pick another run id/branch",
        )  # fmt: skip
        return commit

    def add_worktree(self, *, branch: str, path: str) -> str:
        """Check ``branch`` out in a new worktree at ``path`` on the head (absolute or ``~/``);
        returns its absolute physical path (as ``worktrees()`` lists it). An existing path is
        refused."""
        validate_branch(branch)
        path = self._path(path)
        p = shlex.quote(path)
        script = (
            f"if [ -e {p} ] || [ -L {p} ]; then echo {p} already exists >&2; exit 3; fi; "
            + self._git_cmd("worktree", "add", "-q", path, branch)
            + f" && cd {p} && pwd -P"  # git records the physical path; report the same
        )
        res = self._run(
            _sh(script),
            what=f"cannot create the worktree for {branch} at {path}",
            hint="pick another run id (the path exists), or push the branch first "
            "(an 'invalid reference' means the head does not have it)",
        )
        return res.stdout.strip().splitlines()[-1]

    def branches(self, *, prefix: str = "tether/") -> list[BranchInfo]:
        """The head's branches whose name starts with ``prefix``, newest commit first."""
        fmt = "%(refname)%00%(objectname)%00%(committerdate:unix)%00%(subject)"
        res = self._run(
            self._git_cmd(
                "for-each-ref", "--sort=-committerdate", f"--format={fmt}", "refs/heads/"
            ),
            what="cannot list the head's branches",
            hint="does the head repository exist? `tether submit` creates it",
        )
        out = []
        for line in res.stdout.splitlines():
            parts = line.split("\0")
            if len(parts) != 4:
                continue
            ref, commit, date, subject = parts
            name = ref.removeprefix("refs/heads/")
            if name.startswith(prefix):
                when = datetime.fromtimestamp(int(date or 0), tz=timezone.utc)
                out.append(BranchInfo(name=name, commit=commit, subject=subject, date=when))
        return out

    def worktrees(self) -> list[WorktreeInfo]:
        """The head repository's worktrees (the bare repository itself left out)."""
        res = self._run(
            self._git_cmd("worktree", "list", "--porcelain"),
            what="cannot list the head's worktrees",
        )
        out = []
        for block in res.stdout.strip().split("\n\n"):
            fields: dict[str, str] = {}
            for line in block.splitlines():
                key, _, value = line.partition(" ")
                fields[key] = value
            if "worktree" not in fields or "bare" in fields:
                continue
            branch = fields.get("branch")
            out.append(
                WorktreeInfo(
                    path=fields["worktree"],
                    branch=branch.removeprefix("refs/heads/") if branch else None,
                    commit=fields.get("HEAD") or None,
                )
            )
        return out

    def fetch(
        self, *, repo: Path, branch: str, force: bool = False, timeout: float | None = 600
    ) -> str:
        """Fetch the head's ``branch`` into the laptop's branch of the same name; returns its
        commit. Refuses while the laptop has that branch checked out; without ``force`` only
        fast-forwards, so local commits on the run branch are never dropped."""
        validate_branch(branch)
        repo = Path(repo)
        listing = _out(_git("worktree", "list", "--porcelain", repo=repo))
        ref = f"refs/heads/{branch}"
        for line in listing.splitlines():
            if line == f"branch {ref}":
                raise BranchError(
                    f"{branch} is checked out on the laptop; fetching would change files "
                    "under your feet",
                    hint=f"switch to another branch (git switch -), then fetch {branch} again",
                )
        spec = f"{'+' if force else ''}{ref}:{ref}"
        self._laptop_git(
            "fetch", "--no-tags", self.git_url, spec,
            repo=repo, what=f"fetching {branch} from {self.git_url}", timeout=timeout,
            rejected=f"your laptop's {branch} has commits the head's does not: keep them under "
            f"another name (git branch -m {branch} {branch}-local) or fetch with force=True",
        )  # fmt: skip
        return _out(_git("rev-parse", ref, repo=repo))

    def remove_worktree(self, *, path: str) -> None:
        """Remove the worktree at ``path`` (uncommitted files in it are lost) and prune the
        head repository's records of worktrees that no longer exist."""
        path = self._path(path)
        p = shlex.quote(path)
        script = (
            f"if [ -e {p} ]; then {self._git_cmd('worktree', 'remove', '--force', path)}; fi"
            f" && {self._git_cmd('worktree', 'prune')}"
        )
        self._run(
            _sh(script),
            what=f"cannot remove the worktree {path}",
            hint="is it a worktree of this repository? `git worktree list` on the head shows "
            "them; a locked one needs `git worktree unlock` first",
        )
