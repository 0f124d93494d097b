"""``tether watch [RUN] [--plain] [--offline]``: the terminal UI, or plain lines without one.

In a terminal: the Textual app (``client/watch/app.py``): the Runs screen, or with RUN that
run's screen. Without one (stdout or stdin not a TTY: CI, a pipe) or with ``--plain``: the
run's events as throttled plain lines under 100 columns until it ends
(``client/watch/plain.py``); that needs a RUN. ``--offline`` replays the pulled
``results/<run-id>/events.jsonl`` instead of asking the cluster; with no cluster reachable
the watch falls back to that file by itself.

The parser is built here without importing Textual: the CLI starts fast for every verb.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from .errors import TetherError


def add_watch_parser(*, sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "watch", help="the terminal UI: runs, stages, trials, health, metrics, logs, results"
    )
    p.add_argument("run_id", nargs="?", metavar="RUN", help="open this run's screen")
    p.add_argument(
        "--plain", action="store_true", help="plain lines (what a pipe or CI gets), needs RUN"
    )
    p.add_argument(
        "--offline",
        action="store_true",
        help="replay the pulled results/<run-id>/events.jsonl instead of asking the cluster",
    )
    p.add_argument("--profile", help="profile from tether.toml (default: default_profile)")
    p.add_argument(
        "--trust-new-host",
        action="store_true",
        help="accept and record the head's SSH host key if it is not in known_hosts yet",
    )


def _has_terminal() -> bool:
    try:
        return sys.stdout.isatty() and sys.stdin.isatty()
    except (AttributeError, ValueError):  # closed or replaced streams
        return False


def watch_command(*, args: argparse.Namespace, console: Console) -> int:
    from .config import load_config
    from .output import make_console
    from .repo import repo_root
    from .runid import check_run_id

    if args.run_id is not None:
        check_run_id(args.run_id)
    cwd = Path.cwd()
    config, _ = load_config(path=args.config, cwd=cwd)
    config.profile(args.profile)  # an unknown profile fails here, before anything starts
    repo = repo_root(cwd)
    if args.plain or not _has_terminal():
        if args.run_id is None:
            raise TetherError(
                "without a terminal `tether watch` prints one run's events: it needs a RUN",
                hint="tether watch RUN --plain; `tether runs` lists the runs",
            )
        from .watch.plain import watch_plain

        return watch_plain(
            config=config,
            repo=repo,
            run_id=args.run_id,
            profile=args.profile,
            trust_new_host=args.trust_new_host,
            offline=args.offline,
            console=console,
            err=make_console(stderr=True),
        )
    from .watch.app import WatchApp

    app = WatchApp(
        config=config,
        repo=repo,
        profile=args.profile,
        trust_new_host=args.trust_new_host,
        run_id=args.run_id,
        offline=args.offline,
    )
    code = app.run()
    return 0 if code is None else int(code)
