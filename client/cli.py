"""The ``tether`` command. User mistakes print a clear error, never a traceback
(set TETHER_DEBUG=1 to see one)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from . import __version__
from .errors import TetherError


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tether",
        description="Run ML experiments on a Ray cluster of GPUs from your laptop.",
    )
    parser.add_argument("--version", action="version", version=f"tether {__version__}")
    parser.add_argument("--config", type=Path, help="tether.toml to use (default: nearest)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    doctor = sub.add_parser("doctor", help="check this machine and the configured head node")
    doctor.add_argument("--profile", help="profile from tether.toml (default: default_profile)")
    doctor.add_argument(
        "--trust-new-host",
        action="store_true",
        help="accept and record the head's SSH host key if it is not in known_hosts yet",
    )

    demo = sub.add_parser(
        "demo", help="run the demo job on the embedded local Ray cluster (no cloud, no GPU)"
    )
    demo.add_argument(
        "--keep-cluster", action="store_true", help="leave the local Ray cluster running"
    )
    demo.add_argument(
        "--quick", action="store_true", help="tiny models, one epoch: checks the plumbing only"
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    console = Console(highlight=False)
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "doctor":
            return _doctor(args, console)
        if args.command == "demo":
            return _demo(args, console)
    except TetherError as exc:
        if os.environ.get("TETHER_DEBUG") == "1":
            raise
        Console(stderr=True, highlight=False).print(f"[bold red]error:[/] {exc}", markup=True)
        return 2
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


def _doctor(args: argparse.Namespace, console: Console) -> int:
    from .doctor import Status, exit_code, run_checks

    checks = run_checks(
        cwd=Path.cwd(),
        config_path=args.config,
        profile=args.profile,
        trust_new_host=args.trust_new_host,
    )
    style = {Status.PASS: "green", Status.WARN: "yellow", Status.FAIL: "bold red"}
    table = Table(title="tether doctor", show_lines=False)
    for col in ("check", "status", "detail", "what to do"):
        table.add_column(col, overflow="fold")
    for c in checks:
        table.add_row(c.name, f"[{style[c.status]}]{c.status.value}[/]", c.detail, c.fix)
    console.print(table)
    code = exit_code(checks)
    failed = [c for c in checks if c.status is Status.FAIL]
    for c in failed:
        console.print(f"[bold red]FAIL[/] {c.name}: {c.detail}\n  -> {c.fix}")
    console.print("all checks passed" if code == 0 else f"{len(failed)} check(s) failed")
    return code


def _demo(args: argparse.Namespace, console: Console) -> int:
    from .config import load_config
    from .demo import run_demo

    config, _ = load_config(path=args.config, cwd=Path.cwd())
    result = run_demo(
        cwd=Path.cwd(),
        config=config,
        echo=lambda line: console.print(line, markup=False),
        keep_cluster=args.keep_cluster,
        quick=args.quick,
    )
    table = Table(title=f"run {result.run_id}: extractor comparison, track persistence")
    for col in ("extractor", "params", "test acc", "F1", "acc @ early", "compute saved", "train s"):
        table.add_column(col, justify="right")
    for t in result.results["trials"]:
        table.add_row(
            t["model"],
            f"{t['parameters']:,}",
            f"{t['accuracy']:.1%}",
            f"{t['f1']:.3f}",
            f"{t['accuracy_at_decision']:.1%}",
            f"{t['compute_savings_pct']:.0f}%",
            f"{t['train_seconds']:.0f}",
        )
    console.print(table)
    console.print(f"results: {result.run_dir} (training_results.json per extractor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
