"""``tether resume RUN``: run a run's failed and unfinished stages again, as the same run.

A resume is a new Ray job of the same run (Ray refuses a reused submission id): the N-th
resume is ``tether-<run-id>.r<N>`` with ``tether_attempt: N`` in its metadata
(``client/jobs.py``). It runs the run's original entrypoint plus ``--resume`` in the same
worktree on the head, on the same run branch, with the spec that the run started with
(``.tether/spec.toml`` in the worktree, never the laptop's current one), so the code and spec
that resume are the ones that ran. The entrypoint (``cluster/pipeline.py``) reads the run's
``run_state.json``, skips the finished stages (their commits stay as they are) and runs the
others; a compare stage runs only its trials not finished.

Refused, with a hint and nothing changed, when: the run is unknown; its newest job has not
ended (stop it first); it succeeded (nothing to resume); its worktree, spec or
``run_state.json`` is gone (e.g. removed by ``tether prune``, or the run ended before its
first stage started). Secrets are written again the way ``tether submit`` writes them (the
entrypoint deleted the last job's file when it ended), to a file of the resume's own
(``<run-id>.r<N>-<random>.env``: a resume that loses a race deletes only its own). The
resume is added to ``results/<run-id>/run.json`` (laptop and head) under ``resumes``; the
rest of the record, what submit wrote, stays as it was.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import shlex
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tether.ml.atomic import write_json_atomic

from .config import TetherConfig
from .errors import TetherError
from .head import Head, open_head
from .jobs import ATTEMPT_METADATA_KEY, RUN_METADATA_KEY, JobRecord, submission_id_for
from .localstate import run_results_dir
from .repo import repo_root
from .runid import check_run_id
from .submit import SECRET_NAMES, write_secrets

ENTRYPOINT_MODULE = "tether.cluster.entrypoint"
STATE_FILE = "run_state.json"  # cluster/pipeline.py's STATE_FILE (that module needs Ray)
# Exit codes of the head-side check (_read_state), and the line between its two files.
_NO_WORKTREE, _NO_SPEC, _NO_STATE = 3, 4, 5
_SPEC_FOLLOWS = "# --- tether resume: the run's spec follows ---"


@dataclass(frozen=True)
class Resumption:
    """What ``resume_run`` submitted: the run's new job and what it will run again."""

    run_id: str
    attempt: int  # N: the N-th resume of the run
    job_id: str  # tether-<run-id>.r<N>
    previous_job_id: str
    previous_status: str
    branch: str
    worktree: str
    rerun: list[str]  # stages that run again (failed or not finished), in spec order
    kept: dict[str, str | None] = field(default_factory=dict)  # finished stage -> its commit
    entrypoint: str = ""
    submitted_at: float = 0.0


@dataclass(frozen=True)
class TetherEntrypoint:
    """A job entrypoint written by ``tether submit``: ``cd <worktree> && <python> -m
    tether.cluster.entrypoint <args>``."""

    worktree: str
    python: str
    args: list[str]  # after ``-m tether.cluster.entrypoint``

    @classmethod
    def parse(cls, text: str) -> TetherEntrypoint | None:
        """The parts of ``text``, or None when tether submit did not write it."""
        try:
            words = shlex.split(text)
        except ValueError:
            return None
        if len(words) < 6 or words[0] != "cd" or words[2] != "&&":
            return None
        if words[4:6] != ["-m", ENTRYPOINT_MODULE]:
            return None
        return cls(worktree=words[1], python=words[3], args=words[6:])

    def option(self, name: str) -> str | None:
        """The value of ``--name VALUE`` in the arguments (the last one), or None."""
        value = None
        for i, word in enumerate(self.args[:-1]):
            if word == name:
                value = self.args[i + 1]
        return value

    def resumed(self, *, secrets_file: str | None) -> str:
        """This entrypoint with ``--resume`` and the new secrets file (or none)."""
        args, skip = [], False
        for i, word in enumerate(self.args):
            if skip:
                skip = False
            elif word == "--secrets-file" and i + 1 < len(self.args):
                skip = True
            elif word != "--resume":
                args.append(word)
        if secrets_file is not None:
            args += ["--secrets-file", secrets_file]
        args.append("--resume")
        command = [self.python, "-m", ENTRYPOINT_MODULE, *args]
        return f"cd {shlex.quote(self.worktree)} && " + " ".join(shlex.quote(a) for a in command)


def resume_run(
    *,
    run_id: str,
    config: TetherConfig,
    cwd: Path,
    profile_name: str | None = None,
    trust_new_host: bool = False,
    secret_names: Sequence[str] = SECRET_NAMES,
    echo: Callable[[str], None] = print,
) -> Resumption:
    """Submit the next resume of run ``run_id``; returns what was submitted.

    Raises:
        TetherError: If ``run_id`` is malformed or unknown on the profile's cluster, its
            newest job has not ended, it succeeded, it was not submitted by ``tether submit``,
            or its worktree, spec or ``run_state.json`` is gone from the head; also when
            another resume of it came first. Nothing was submitted then.
        ConfigError: If the profile is unknown.
        ClusterError, RemoteError: If the head or its dashboard cannot be reached.
    """
    check_run_id(run_id)
    config.profile(profile_name)  # an unknown profile fails here, before any connection
    root = repo_root(cwd)
    head = open_head(
        config=config, profile_name=profile_name, laptop_repo=root, trust_new_host=trust_new_host
    )
    try:
        with head.jobs() as jobs:
            newest = jobs.status(run_id=run_id)
            entry, state, order = _check_resumable(head=head, run_id=run_id, newest=newest)
            stages = {n: r for n, r in (state.get("stages") or {}).items() if isinstance(r, dict)}
            finished = [n for n in order if stages.get(n, {}).get("status") == "finished"]
            rerun = [n for n in order if n not in finished]
            kept = {n: stages[n].get("commit") for n in finished}
            echo(_plan_line(run_id=run_id, newest=newest, rerun=rerun, kept=kept))
            attempt = newest.attempt + 1
            secrets_file = write_secrets(
                head=head, run_id=run_id, secret_names=secret_names, echo=echo,
                suffix=f".r{attempt}-{secrets.token_hex(3)}",  # a racing resume has its own
            )  # fmt: skip
            entrypoint = entry.resumed(secrets_file=secrets_file)
            metadata = {
                k: v
                for k, v in newest.metadata.items()
                if k not in (RUN_METADATA_KEY, ATTEMPT_METADATA_KEY)
            }
            metadata.update(profile=head.profile_name, resumed_from=newest.submission_id)
            try:
                job_id = jobs.submit(
                    entrypoint=entrypoint, run_id=run_id, metadata=metadata, attempt=attempt
                )
            except BaseException:
                if secrets_file is not None:  # no job will delete it
                    with contextlib.suppress(Exception):  # the submit's error is the one to see
                        head.remote.run(f"rm -f {shlex.quote(secrets_file)}", timeout=30)
                raise
        res = Resumption(
            run_id=run_id,
            attempt=attempt,
            job_id=job_id,
            previous_job_id=newest.submission_id,
            previous_status=newest.status,
            branch=newest.metadata.get("branch", ""),
            worktree=entry.worktree,
            rerun=rerun,
            kept=kept,
            entrypoint=entrypoint,
            submitted_at=time.time(),
        )
        _record(head=head, config=config, root=root, entry=entry, res=res)
        return res
    finally:
        head.close()


def _check_resumable(
    *, head: Head, run_id: str, newest: JobRecord
) -> tuple[TetherEntrypoint, dict, list[str]]:
    """The run's entrypoint, its ``run_state.json`` and its spec's stage names in order, or
    the TetherError saying why it cannot be resumed."""
    if not newest.is_terminal():
        raise TetherError(
            f"run {run_id} is still {newest.status}: stop it first (`tether stop {run_id}`) "
            "or wait for it to end",
            hint=f"`tether logs {run_id} -f` follows it until it ends",
        )
    if newest.status == "SUCCEEDED":
        raise TetherError(
            f"run {run_id} succeeded: nothing to resume",
            hint=f"`tether fetch {run_id}` brings its branch; submit the spec again for a new run",
        )
    entry = TetherEntrypoint.parse(newest.entrypoint)
    if entry is None or entry.option("--spec") is None:
        raise TetherError(
            f"run {run_id} (Ray job {newest.submission_id}) was not started by `tether submit` "
            "from a spec: only those can be resumed",
            hint="submit the spec again for a new run",
        )
    state, order = _read_state(head=head, run_id=run_id, entry=entry, newest=newest)
    if state.get("status") == "succeeded":
        raise TetherError(
            f"every stage of run {run_id} finished (its run_state.json says succeeded): "
            "nothing to resume",
            hint=f"`tether fetch {run_id}` brings its branch; `tether logs {run_id}` shows why "
            f"its job ended {newest.status}",
        )
    return entry, state, order


def _head_path(entry: TetherEntrypoint, rel: str) -> str:
    return rel if rel.startswith("/") else f"{entry.worktree.rstrip('/')}/{rel}"


def _run_dir(entry: TetherEntrypoint, run_id: str) -> str:
    return entry.option("--run-dir") or f"results/{run_id}"


def _read_state(
    *, head: Head, run_id: str, entry: TetherEntrypoint, newest: JobRecord
) -> tuple[dict, list[str]]:
    """``run_state.json`` from the run's worktree on the head and the stage names of the spec
    there, in order (one command on the channel, which first checks that both are there)."""
    wt = entry.worktree
    spec = _head_path(entry, entry.option("--spec") or "")
    state = _head_path(entry, f"{_run_dir(entry, run_id)}/{STATE_FILE}")
    q = shlex.quote
    res = head.remote.run(
        f"[ -d {q(wt)} ] || exit {_NO_WORKTREE}; [ -f {q(spec)} ] || exit {_NO_SPEC}; "
        f"[ -f {q(state)} ] || exit {_NO_STATE}; cat {q(state)} && "
        f"printf '\\n%s\\n' {q(_SPEC_FOLLOWS)} && cat {q(spec)}",
        check=False,
        timeout=60,
    )
    again = "submit the spec again for a new run"
    if res.exit_code == _NO_WORKTREE:
        raise TetherError(
            f"the worktree of run {run_id} ({wt} on {head.remote.name}) is gone (`tether "
            "prune` removes those of ended runs): a resume runs in the run's worktree",
            hint=f"{again}; its branch keeps the finished stages' commits",
        )
    if res.exit_code == _NO_SPEC:
        raise TetherError(
            f"the spec of run {run_id} is missing from its worktree ({spec} on "
            f"{head.remote.name}): a resume runs the spec the run started with",
            hint=again,
        )
    if res.exit_code == _NO_STATE:
        raise TetherError(
            f"run {run_id} ended {newest.status} before its first stage started (no {state} "
            f"on {head.remote.name}): nothing to resume",
            hint=f"`tether logs {run_id}` shows why; then {again}",
        )
    if res.exit_code != 0:
        raise TetherError(
            f"could not read {state} on {head.remote.name} (exit {res.exit_code}): "
            f"{res.stderr.strip()[-300:]}",
            hint="run `tether doctor`",
        )
    state_text, _, spec_text = res.stdout.partition(f"\n{_SPEC_FOLLOWS}\n")
    try:
        data = json.loads(state_text)
    except ValueError:
        data = None
    if not isinstance(data, dict) or not isinstance(data.get("stages", {}), dict):
        raise TetherError(
            f"{state} on {head.remote.name} is damaged: the run cannot be resumed",
            hint=again,
        )
    return data, _stage_names(spec_text, source=spec)


def _stage_names(text: str, *, source: str) -> list[str]:
    """The stage names of the run's spec, in order (cluster.spec is torch- and Ray-free)."""
    from tether.cluster.spec import SpecError, parse_spec

    try:
        return [s.name for s in parse_spec(text, source=source).stages]
    except SpecError as exc:
        raise TetherError(
            f"the spec the run started with no longer loads: {exc}",
            hint="this tether's spec rules changed since the run began: resume it with the "
            "tether it was submitted with, or submit the spec again",
        ) from None


def _plan_line(
    *, run_id: str, newest: JobRecord, rerun: list[str], kept: dict[str, str | None]
) -> str:
    done = ", ".join(f"{n} ({(c or 'no commit')[:10]})" for n, c in kept.items())
    again = ", ".join(rerun) or "none (the run only completes)"
    return (
        f"resuming run {run_id} (Ray job {newest.submission_id} {newest.status}): "
        f"running again: {again}" + (f"; kept: {done}" if done else "")
    )


def _record(
    *, head: Head, config: TetherConfig, root: Path, entry: TetherEntrypoint, res: Resumption
) -> None:
    """Add the resume to ``run.json`` in ``results/<run-id>/`` on the laptop and in the
    run directory on the head; what was there stays (the laptop's copy has the first
    job id, which the head's copy, written before the submission, lacks)."""
    local = run_results_dir(repo=root, results_dir=config.results_dir, run_id=res.run_id)
    remote = _head_path(entry, f"{_run_dir(entry, res.run_id)}/run.json")
    record = _load_record(local / "run.json")
    if record is None:
        got = head.remote.run(f"cat {shlex.quote(remote)}", check=False, timeout=60)
        record = _parse_record(got.stdout) if got.exit_code == 0 else None
    record = record or {"run_id": res.run_id, "branch": res.branch}
    record.setdefault("job_id", submission_id_for(res.run_id))  # the run's first job
    resumes = [r for r in record.get("resumes") or [] if isinstance(r, dict)]
    resumes.append(
        {
            "attempt": res.attempt,
            "job_id": res.job_id,
            "previous_job_id": res.previous_job_id,
            "previous_status": res.previous_status,
            "rerun": res.rerun,
            "kept": res.kept,
            "profile": head.profile_name,
            "submitted_at": res.submitted_at,
        }
    )
    record["resumes"] = resumes
    write_json_atomic(local / "run.json", record)
    head.write_file(path=remote, data=json.dumps(record, indent=2))


def _load_record(path: Path) -> dict | None:
    try:
        return _parse_record(path.read_text(encoding="utf-8"))
    except OSError:
        return None


def _parse_record(text: str) -> dict | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
