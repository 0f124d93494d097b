"""Rendering of the run verbs (``submit runs logs stop branches fetch prune``): rich tables
that fit the terminal, or ``--json`` for scripts."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from rich.console import Console
from rich.table import Table

from .config import load_config
from .runcmds import (
    fetch_run,
    head_for,
    list_branches,
    list_runs,
    prune_runs,
    show_logs,
    stop_run,
)


def _when(t: float | None) -> str:
    if not t:
        return "-"
    return datetime.fromtimestamp(t, tz=timezone.utc).astimezone().strftime("%Y-%m-%d %H:%M")


def _json(data) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def run_command(args: argparse.Namespace, console: Console) -> int:
    cwd = Path.cwd()
    config, _ = load_config(path=args.config, cwd=cwd)
    as_json = getattr(args, "json", False)

    def echo(line: str) -> None:
        if not as_json:
            console.print(line, markup=False)

    if args.command == "submit":
        from .submit import submit_run

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
                f"submitted run [bold]{sub.run_id}[/] as Ray job {sub.job_id} "
                f"(branch {sub.branch}, commit {sub.commit[:10]}"
                + (", with uncommitted changes" if sub.dirty else "")
                + ")"
            )
            console.print(f"  follow it: tether logs {sub.run_id} -f", markup=False)
        if not args.watch:
            return 0
        with head_for(
            config=config, profile_name=args.profile, cwd=cwd, trust_new_host=args.trust_new_host
        ) as head:
            status = show_logs(head, sub.run_id, follow=True, on_text=_write_raw)
        console.print(f"run {sub.run_id}: {status}")
        return 0 if status == "SUCCEEDED" else 1

    with head_for(
        config=config, profile_name=args.profile, cwd=cwd, trust_new_host=args.trust_new_host
    ) as head:
        if args.command == "runs":
            runs = list_runs(head)
            if as_json:
                _json([asdict(r) for r in runs])
                return 0
            table = Table(title=f"runs on {head.profile_name} ({head.remote.name})")
            for col in ("run", "status", "spec", "branch", "commit", "started", "ended"):
                table.add_column(col, overflow="fold")
            for r in runs:
                m = r.metadata
                table.add_row(
                    r.run_id,
                    r.status,
                    m.get("spec", ""),
                    m.get("branch", ""),
                    (m.get("commit") or "")[:10] + (" *" if m.get("dirty") == "true" else ""),
                    _when(r.start_time),
                    _when(r.end_time),
                )
            console.print(table)
            if not runs:
                console.print("no runs yet: tether submit SPEC", markup=False)
            return 0
        if args.command == "logs":
            status = show_logs(head, args.run_id, follow=args.follow, on_text=_write_raw)
            if args.follow:
                console.print(f"run {args.run_id}: {status}", markup=False)
            return 0
        if args.command == "stop":
            stopped = stop_run(head, args.run_id)
            console.print(
                f"stopping run {args.run_id}" if stopped else f"run {args.run_id} already ended",
                markup=False,
            )
            return 0
        if args.command == "branches":
            branches = list_branches(head)
            if as_json:
                _json([{**asdict(b), "date": b.date.isoformat()} for b in branches])
                return 0
            table = Table(title=f"run branches on {head.remote.name}")
            for col in ("branch", "commit", "last commit", "date"):
                table.add_column(col, overflow="fold")
            for b in branches:
                table.add_row(b.name, b.commit[:10], b.subject, b.date.strftime("%Y-%m-%d %H:%M"))
            console.print(table)
            return 0
        if args.command == "fetch":
            branch, commit = fetch_run(head, args.run_id)
            if as_json:
                _json({"run_id": args.run_id, "branch": branch, "commit": commit})
            else:
                console.print(f"{branch} is at {commit[:10]}: git log {branch}", markup=False)
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
                console.print(f"{verb} {r['path']} ({r['job_status'] or 'no job'})", markup=False)
            console.print(f"{len(removed)} worktree(s) {verb}; branches kept", markup=False)
            return 0
    raise AssertionError(args.command)


def _write_raw(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


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
    from .runcmds import run_status

    plan = plan_pull(head=head, config=config, run_id=args.run_id)

    def once():
        if as_json:
            return pull_once(head=head, plan=plan, config=config, mirror=args.mirror)
        with Progress(
            TextColumn("pull {task.fields[files]} files"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TextColumn("{task.fields[path]}"),
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
        console.print(f"{args.run_id}: {summary_line(result)} -> {plan.dest}", markup=False)
        for path, why in result.refused:
            console.print(f"  refused {path}: {why}", markup=False)
        for path, why in result.skipped:
            again = " (next pull)" if why == "changing" else ""
            console.print(f"  skipped {path}: {why}{again}", markup=False)

    if args.every is None:
        report(once())
        return 0

    def failed(exc: Exception, delay: float) -> None:
        console.print(
            f"[yellow]pull failed[/]: {str(exc).splitlines()[0]}; next try in {delay:.0f}s"
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
