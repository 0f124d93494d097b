"""What the run verbs after submit do: ``runs``, ``logs``, ``stop``, ``branches``, ``fetch``,
``prune``. Each opens the profile's head, does one thing, and returns plain records that
``runviews`` renders as a table or as ``--json``."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path

from .branches import BranchInfo, local_branch, validate_branch
from .config import TetherConfig
from .errors import RemoteError, TetherError
from .head import Head, open_head
from .jobs import JobRecord, JobsClient
from .repo import repo_root


@contextlib.contextmanager
def head_for(
    *, config: TetherConfig, profile_name: str | None, cwd: Path, trust_new_host: bool = False
):
    head = open_head(
        config=config,
        profile_name=profile_name,
        laptop_repo=repo_root(cwd),
        trust_new_host=trust_new_host,
    )
    try:
        yield head
    finally:
        head.close()


def list_runs(head: Head) -> list[JobRecord]:
    with head.jobs() as jobs:
        return sorted(jobs.runs(), key=lambda r: r.start_time or 0)


def run_status(head: Head, run_id: str) -> JobRecord:
    with head.jobs() as jobs:
        return jobs.status(run_id=run_id)


def stop_run(head: Head, run_id: str) -> bool:
    with head.jobs() as jobs:
        return jobs.stop(run_id=run_id)


def show_logs(head: Head, run_id: str, *, follow: bool, on_text: Callable[[str], None]) -> str:
    """Print the job log; with ``follow`` keep printing until the job ends. A dropped SSH
    connection is re-opened (new tunnel, new client) and the log resumes where it was."""
    if not follow:
        with head.jobs() as jobs:
            text = jobs.logs(run_id=run_id)
            on_text(text)
            return jobs.status(run_id=run_id).status
    current: list[contextlib.ExitStack] = [contextlib.ExitStack()]

    def connect() -> JobsClient:
        current[0].close()
        current[0] = contextlib.ExitStack()
        if not head.is_local:
            with contextlib.suppress(RemoteError):
                head.remote.reconnect()
        return current[0].enter_context(head.jobs())

    try:
        client = connect()
        return client.follow_logs(run_id=run_id, on_text=on_text, reconnect=connect)
    finally:
        current[0].close()


def list_branches(head: Head) -> list[BranchInfo]:
    """The run branches on the head; none before the first submit created its repository."""
    return head.repo.branches() if head.repo.exists() else []


def run_branch(head: Head, run_id: str) -> str:
    """The run's branch on the head: from the job's metadata, else by name."""
    with contextlib.suppress(TetherError), head.jobs() as jobs:
        branch = jobs.status(run_id=run_id).metadata.get("branch")
        if branch:
            return validate_branch(branch)
    matches = [b.name for b in list_branches(head) if b.name.rsplit("/", 1)[-1] == run_id]
    if len(matches) != 1:
        raise TetherError(
            f"no run {run_id!r} on {head.remote.name}"
            if not matches
            else f"run id {run_id!r} matches several branches: {', '.join(matches)}",
            hint="`tether runs` lists the runs, `tether branches` their branches",
        )
    return matches[0]


def fetch_run(head: Head, run_id: str) -> tuple[str, str]:
    """Bring the run branch (with its stage commits) into the laptop repo; (branch, commit)."""
    branch = run_branch(head, run_id)
    if head.is_local:  # the laptop repo is the head repo: the branch is already here
        commit = local_branch(repo=head.laptop_repo, branch=branch)
        if commit is None:
            raise TetherError(f"branch {branch} is not in {head.laptop_repo}")
        return branch, commit
    return branch, head.repo.fetch(repo=head.laptop_repo, branch=branch)


def prune_runs(head: Head, *, dry_run: bool = False) -> list[dict]:
    """Remove the head worktrees of runs whose job has ended (or that have no job); the
    branches and their commits stay. Returns what was (or would be) removed."""
    prefix = head.runs_path.rstrip("/") + "/"
    if not head.repo.exists():
        return []
    with head.jobs() as jobs:
        status = {r.run_id: r for r in jobs.runs()}
    out = []
    for wt in head.repo.worktrees():
        if not wt.path.startswith(prefix):
            continue
        run_id = wt.path[len(prefix) :]
        rec = status.get(run_id)
        if rec is not None and not rec.is_terminal():
            continue
        if not dry_run:
            head.repo.remove_worktree(path=wt.path)
        out.append(
            {
                "run_id": run_id,
                "path": wt.path,
                "branch": wt.branch,
                "job_status": rec.status if rec else None,
            }
        )
    return out
