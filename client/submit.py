"""``tether submit``: one run from a spec, end to end on the laptop side.

1. Validate the spec and the branch name (nothing remote happens on bad input).
2. Connect to the head (host key checked).
3. Snapshot the laptop repo onto the run branch (the user's index and work tree untouched);
   the snapshot's diff against HEAD and the run record go to ``results/<run-id>/``.
4. Push the branch to the head repository, add the run's worktree there, write the spec
   into it (``.tether/spec.toml``) and the secrets the run needs to a mode-600 file.
5. Submit an ordinary Ray job whose entrypoint is ``cd <worktree> && python -m
   tether.cluster.entrypoint ...``, with metadata: run id, branch, commit, spec name, dirty flag.

Secrets (``ANTHROPIC_API_KEY`` when set in the laptop's environment) only travel inside that
file: never in runtime_env, metadata, the entrypoint string, logs, events or commits.
"""

from __future__ import annotations

import json
import os
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tether.ml.atomic import write_bytes_atomic, write_json_atomic

from .branches import Snapshot, delete_branch, snapshot, validate_branch
from .config import TetherConfig
from .errors import ConfigError
from .head import Head, open_head
from .localstate import run_results_dir
from .repo import repo_root
from .runid import new_run_id

SECRET_NAMES = ("ANTHROPIC_API_KEY",)
SPEC_IN_WORKTREE = ".tether/spec.toml"


@dataclass(frozen=True)
class Submission:
    run_id: str
    branch: str
    commit: str
    base: str
    dirty: bool
    spec: str
    profile: str
    job_id: str
    worktree: str
    entrypoint: str
    submitted_at: float


def load_checked_spec(path: Path):
    """The spec, or ConfigError with the file:line message (cluster.spec is torch-free)."""
    from tether.cluster.spec import SpecError, load_spec

    try:
        return load_spec(path)
    except SpecError as exc:
        raise ConfigError(str(exc), hint="fix the spec; nothing was submitted") from None


def submit_run(
    *,
    spec_path: Path,
    config: TetherConfig,
    cwd: Path,
    profile_name: str | None = None,
    branch: str | None = None,
    trust_new_host: bool = False,
    run_id: str | None = None,
    secret_names: Sequence[str] = SECRET_NAMES,
    echo: Callable[[str], None] = print,
) -> Submission:
    """Submit ``spec_path`` as a new run; returns the submission record. Raises TetherError
    subclasses with what to fix; on an error before the push nothing remote has changed."""
    spec = load_checked_spec(spec_path)
    root = repo_root(cwd)
    run_id = run_id or new_run_id(spec.name)
    if branch is not None:
        spec = spec.model_copy(update={"branch": validate_branch(branch)})
    run_branch = validate_branch(spec.run_branch(run_id))
    config.profile(profile_name)  # an unknown profile fails here, before any connection
    head = open_head(
        config=config, profile_name=profile_name, laptop_repo=root, trust_new_host=trust_new_host
    )
    try:
        return _submit(
            head=head, spec=spec, spec_path=spec_path, root=root, run_id=run_id,
            branch=run_branch, config=config, secret_names=secret_names, echo=echo,
        )  # fmt: skip
    finally:
        head.close()


def _snapshot_onto_head(
    *, head: Head, spec, root: Path, run_id: str, branch: str, echo: Callable[[str], None]
) -> tuple[Snapshot, str]:
    """Snapshot the laptop onto the run branch, bring it to the head, add the run's worktree
    there; a failure before the push deletes the branch again (the laptop stays as it was)."""
    snap = snapshot(
        repo=root,
        branch=branch,
        include_untracked=spec.include_untracked,
        message=f"tether: snapshot for run {run_id} ({spec.name})",
    )
    echo(
        f"snapshot {snap.commit[:10]} on {branch}"
        + (f" (uncommitted changes in {len(snap.files_changed)} files)" if snap.dirty else "")
    )
    pushed = False
    try:
        if not head.is_local:  # locally the laptop repo is the head repo: nothing to push
            head.repo.ensure()
            head.repo.push(repo=root, branch=branch)
        pushed = True
        worktree = head.repo.add_worktree(branch=branch, path=head.worktree(run_id))
    except BaseException:
        if not pushed:  # nothing reached the head: leave the laptop as it was
            delete_branch(repo=root, branch=branch, commit=snap.commit)
        raise
    echo(f"worktree {worktree} on {head.remote.name}")
    return snap, worktree


def write_secrets(
    *,
    head: Head,
    run_id: str,
    secret_names: Sequence[str],
    echo: Callable[[str], None],
    suffix: str = "",
) -> str | None:
    """Write the secrets of ``secret_names`` set in this environment to the job's mode-600
    file on the head (``<runs_path>/.secrets/<run-id><suffix>.env``, which the entrypoint
    deletes at exit); returns its path, or None when none is set. Used by submit and by
    resume (whose ``suffix`` makes the file its own job's)."""
    secrets = {k: os.environ[k] for k in secret_names if os.environ.get(k)}
    if not secrets:
        return None
    secrets_path = f"{head.runs_path}/.secrets/{run_id}{suffix}.env"
    body = "".join(f"{k}={v}\n" for k, v in secrets.items())
    head.write_file(path=secrets_path, data=body, private=True)
    echo(f"secrets for the run: {', '.join(secrets)} (mode-600 file on the head)")
    return secrets_path


def _entrypoint(
    *, head: Head, config: TetherConfig, run_id: str, run_rel: str, worktree: str,
    secret_names: Sequence[str], echo: Callable[[str], None],
) -> str:  # fmt: skip
    """The job's entrypoint; the secrets the run needs go to a mode-600 file on the head."""
    args = [
        "-m", "tether.cluster.entrypoint", "--run-id", run_id, "--spec", SPEC_IN_WORKTREE,
        "--run-dir", run_rel,
        "--heartbeat-s", f"{config.heartbeat.interval_s:g}",
        "--stall-timeout-s", f"{config.heartbeat.stall_timeout_s:g}",
    ]  # fmt: skip
    secrets_path = write_secrets(head=head, run_id=run_id, secret_names=secret_names, echo=echo)
    if secrets_path is not None:
        args += ["--secrets-file", secrets_path]
    entrypoint = f"cd {shlex.quote(worktree)} && " + " ".join(
        shlex.quote(a) for a in [head.python, *args]
    )
    return entrypoint


def _submit(
    *, head: Head, spec, spec_path: Path, root: Path, run_id: str, branch: str,
    config: TetherConfig, secret_names: Sequence[str], echo: Callable[[str], None],
) -> Submission:  # fmt: skip
    snap, worktree = _snapshot_onto_head(
        head=head, spec=spec, root=root, run_id=run_id, branch=branch, echo=echo
    )
    record = {
        "run_id": run_id,
        "spec": spec.name,
        "branch": branch,
        "commit": snap.commit,
        "base": snap.base,
        "dirty": snap.dirty,
        "files_changed": snap.files_changed,
        "profile": head.profile_name,
        "submitted_at": time.time(),
    }
    run_rel = f"{config.results_dir}/{run_id}"
    # The run record and the uncommitted diff, on both sides.
    local_dir = run_results_dir(repo=root, results_dir=config.results_dir, run_id=run_id)
    write_json_atomic(local_dir / "run.json", record)
    write_bytes_atomic(local_dir / "snapshot.diff", snap.diff)
    head.write_file(path=f"{worktree}/{run_rel}/run.json", data=json.dumps(record, indent=2))
    head.write_file(path=f"{worktree}/{run_rel}/snapshot.diff", data=snap.diff)
    head.write_file(path=f"{worktree}/.tether/.gitignore", data="*\n")
    head.write_file(path=f"{worktree}/{SPEC_IN_WORKTREE}", data=Path(spec_path).read_bytes())
    entrypoint = _entrypoint(
        head=head, config=config, run_id=run_id, run_rel=run_rel, worktree=worktree,
        secret_names=secret_names, echo=echo,
    )  # fmt: skip
    metadata = {
        "tether_run": run_id,
        "branch": branch,
        "commit": snap.commit,
        "spec": spec.name,
        "dirty": str(snap.dirty).lower(),
        "profile": head.profile_name,
    }
    with head.jobs(start_local=True) as jobs:
        job_id = jobs.submit(entrypoint=entrypoint, run_id=run_id, metadata=metadata)
    sub = Submission(
        run_id=run_id,
        branch=branch,
        commit=snap.commit,
        base=snap.base,
        dirty=snap.dirty,
        spec=spec.name,
        profile=head.profile_name,
        job_id=job_id,
        worktree=worktree,
        entrypoint=entrypoint,
        submitted_at=record["submitted_at"],
    )
    write_json_atomic(local_dir / "run.json", {**record, "job_id": job_id})
    return sub
