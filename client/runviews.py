"""How the run verbs (``submit resume runs status logs stop branches fetch pull prune``) are
shown: rich
tables that fit the terminal, or ``--json`` for scripts. The verbs themselves act in
``runverbs``; this module only renders what they return."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.text import Text

from .branches import BranchInfo
from .config import load_config
from .jobs import JobRecord
from .output import Col, print_table, styled, write_raw
from .runverbs import (
    fetch_run,
    head_for,
    list_branches,
    list_runs,
    prune_runs,
    run_status,
    show_logs,
    stop_run,
)


def _when(t: float | None) -> str:
    if not t:
        return "-"
    return datetime.fromtimestamp(t, tz=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M")


# Ids, branches, commits and times are never broken over lines; on narrow terminals the
# columns with a drop rank go (highest first), then each run prints as a block of lines.
RUN_COLS = (
    Col("run", whole=True),
    Col("status", whole=True),
    Col("commit", whole=True),
    Col("branch", whole=True),
    Col("spec", whole=True, drop=2),
    Col("started", whole=True, drop=1),
    Col("ended", whole=True, drop=3),
)
BRANCH_COLS = (
    Col("branch", whole=True),
    Col("commit", whole=True),
    Col("last commit", fold_min=24),
    Col("date", whole=True, drop=1),
)


def print_runs(*, console: Console, runs: list[JobRecord], title: str) -> None:
    """The ``tether runs`` table: run ids, branches and commits always whole, at any width."""
    rows = []
    for r in runs:
        m = r.metadata
        commit = (m.get("commit") or "")[:10] + (" *" if m.get("dirty") == "true" else "")
        rows.append(
            [
                r.run_id,
                r.status + (f" (resume {r.attempt})" if r.attempt else ""),
                commit,
                m.get("branch", ""),
                m.get("spec", ""),
                _when(r.start_time),
                _when(r.end_time),
            ]
        )
    print_table(console=console, title=title, cols=RUN_COLS, rows=rows)


def print_branches(*, console: Console, branches: list[BranchInfo], title: str) -> None:
    rows = [[b.name, b.commit[:10], b.subject, b.date.strftime("%Y-%m-%d %H:%M")] for b in branches]
    print_table(console=console, title=title, cols=BRANCH_COLS, rows=rows)


def _json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def run_command(args: argparse.Namespace, console: Console) -> int:
    cwd = Path.cwd()
    config, _ = load_config(path=args.config, cwd=cwd)
    as_json = getattr(args, "json", False)

    def raw(text: str) -> None:
        write_raw(text, console=console)

    if args.command == "submit":
        return _submit(args, config=config, cwd=cwd, console=console, as_json=as_json)
    if args.command == "resume":
        return _resume(args, config=config, cwd=cwd, console=console, as_json=as_json)

    with head_for(
        config=config, profile_name=args.profile, cwd=cwd, trust_new_host=args.trust_new_host
    ) as head:
        if args.command == "runs":
            runs = list_runs(head)
            if as_json:
                _json([asdict(r) for r in runs])
                return 0
            title = f"runs on {head.profile_name} ({head.remote.name})"
            print_runs(console=console, runs=runs, title=title)
            if not runs:
                console.print(Text("no runs yet: tether submit SPEC"))
            return 0
        if args.command == "status":
            rec = run_status(head, args.run_id)
            if as_json:
                _json(asdict(rec))
                return 0
            title = f"run {args.run_id} on {head.profile_name} ({head.remote.name})"
            print_runs(console=console, runs=[rec], title=title)
            job = f"Ray job {rec.submission_id}"
            console.print(Text(f"{job}, resume {rec.attempt}" if rec.attempt else job))
            if rec.message:
                console.print(Text(rec.message))
            return 0
        if args.command == "logs":
            status = show_logs(head, args.run_id, follow=args.follow, on_text=raw)
            if args.follow:
                console.print(Text(f"run {args.run_id}: {status}"))
            return 0
        if args.command == "stop":
            stopped = stop_run(head, args.run_id)
            done = f"stopping run {args.run_id}" if stopped else f"run {args.run_id} already ended"
            console.print(Text(done))
            return 0
        if args.command == "branches":
            branches = list_branches(head)
            if as_json:
                _json([{**asdict(b), "date": b.date.isoformat()} for b in branches])
                return 0
            title = f"run branches on {head.remote.name}"
            print_branches(console=console, branches=branches, title=title)
            return 0
        if args.command == "fetch":
            branch, commit = fetch_run(head, args.run_id)
            if as_json:
                _json({"run_id": args.run_id, "branch": branch, "commit": commit})
            else:
                console.print(Text(f"{branch} is at {commit[:10]}: git log {branch}"))
            return 0
        if args.command == "pull":
            return _pull(args, head, config, console, as_json)
        if args.command == "prune":
            removed = prune_runs(head, dry_run=args.dry_run)
            if as_json:
                _json(removed)
                return 0
            verb = "would remove" if args.dry_run else "removed"
            for r in removed:
                console.print(Text(f"{verb} {r['path']} ({r['job_status'] or 'no job'})"))
            console.print(Text(f"{len(removed)} worktree(s) {verb}; branches kept"))
            return 0
    raise AssertionError(args.command)


def _submit(args: argparse.Namespace, *, config, cwd: Path, console: Console, as_json: bool) -> int:
    """``tether submit``: the run, its summary line (or JSON), and with ``--watch`` its log."""
    from .submit import submit_run

    def echo(line: str) -> None:
        if not as_json:
            console.print(Text(line))

    sub = submit_run(
        spec_path=args.spec,
        config=config,
        cwd=cwd,
        profile_name=args.profile,
        branch=args.branch,
        trust_new_host=args.trust_new_host,
        echo=echo,
    )
    if as_json:
        _json(asdict(sub))
    else:
        console.print(
            styled(
                "submitted run ",
                (sub.run_id, "bold"),
                f" as Ray job {sub.job_id} (branch {sub.branch}, commit {sub.commit[:10]}"
                + (", with uncommitted changes" if sub.dirty else "")
                + ")",
            )
        )
        console.print(Text(f"  follow it: tether logs {sub.run_id} -f"))
    if not args.watch:
        return 0
    return _watch(args, config=config, cwd=cwd, console=console, run_id=sub.run_id)


def _resume(args: argparse.Namespace, *, config, cwd: Path, console: Console, as_json: bool) -> int:
    """``tether resume``: the run's next job, its summary line (or JSON), with ``--watch`` its
    log."""
    from .resume import resume_run

    def echo(line: str) -> None:
        if not as_json:
            console.print(Text(line))

    res = resume_run(
        run_id=args.run_id,
        config=config,
        cwd=cwd,
        profile_name=args.profile,
        trust_new_host=args.trust_new_host,
        echo=echo,
    )
    if as_json:
        _json(asdict(res))
    else:
        console.print(
            styled(
                "resumed run ",
                (res.run_id, "bold"),
                f" as Ray job {res.job_id} (resume {res.attempt}, branch {res.branch})",
            )
        )
        console.print(Text(f"  follow it: tether logs {res.run_id} -f"))
    if not args.watch:
        return 0
    return _watch(args, config=config, cwd=cwd, console=console, run_id=res.run_id)


def _watch(args: argparse.Namespace, *, config, cwd: Path, console: Console, run_id: str) -> int:
    """Follow the run's newest job until it ends: 0 when it succeeded, else 1."""
    with head_for(
        config=config, profile_name=args.profile, cwd=cwd, trust_new_host=args.trust_new_host
    ) as head:
        status = show_logs(
            head, run_id, follow=True, on_text=lambda text: write_raw(text, console=console)
        )
    console.print(Text(f"run {run_id}: {status}"))
    return 0 if status == "SUCCEEDED" else 1


def _pull(args, head, config, console: Console, as_json: bool) -> int:
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TextColumn,
        TransferSpeedColumn,
    )

    from .errors import TetherError
    from .pullcmd import plan_pull, pull_every, pull_once, summary_dict, summary_line
    from .runverbs import run_status

    plan = plan_pull(head=head, config=config, run_id=args.run_id)

    def once():
        if as_json:
            return pull_once(head=head, plan=plan, config=config, mirror=args.mirror)
        with Progress(
            TextColumn("pull {task.fields[files]} files", markup=False),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[path]}", markup=False),
            console=console,
            transient=True,
        ) as bar:
            task = bar.add_task("pull", total=None, files=0, path="manifest ...")
            seen: set[str] = set()

            def progress(path: str, done: int, total: int) -> None:
                seen.add(path)
                bar.update(task, completed=done, total=total or None, files=len(seen), path=path)

            return pull_once(
                head=head, plan=plan, config=config, mirror=args.mirror, progress=progress
            )

    def report(result) -> None:
        if as_json:
            _json({"run_id": args.run_id, "dest": str(plan.dest), **summary_dict(result)})
            return
        console.print(Text(f"{args.run_id}: {summary_line(result)} -> {plan.dest}"))
        for path, why in result.refused:
            console.print(Text(f"  refused {path}: {why}"))
        for path, why in result.skipped:
            again = " (next pull)" if why == "changing" else ""
            console.print(Text(f"  skipped {path}: {why}{again}"))

    if args.every is None:
        report(once())
        return 0

    def failed(exc: Exception, delay: float) -> None:
        console.print(
            styled(
                ("pull failed", "yellow"),
                f": {str(exc).splitlines()[0]}; next try in {delay:.0f}s",
            )
        )

    def done() -> bool:
        if not args.until_done:
            return False
        try:
            return run_status(head, args.run_id).is_terminal()
        except TetherError:
            return False

    every = args.every or config.sync.interval_s
    try:
        pull_every(every_s=every, pull_fn=once, on_result=report, on_error=failed, done=done)
    except KeyboardInterrupt:
        return 130
    return 0
