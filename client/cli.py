"""The ``tether`` command. User mistakes print a clear error, never a traceback
(set TETHER_DEBUG=1 to see one)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table
from rich.text import Text

from . import __version__
from .clustercmd import add_cluster_parser
from .errors import TetherError, from_library_error
from .output import make_console, styled
from .watchcmd import add_watch_parser


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
    analyze = sub.add_parser(
        "analyze",
        help="plots, diagnosis and a Markdown/HTML report for a run (or W&B metric CSVs)",
    )
    analyze.add_argument("results", nargs="?", type=Path, help="a training_results.json")
    analyze.add_argument(
        "--csv",
        nargs="+",
        type=Path,
        default=[],
        metavar="FILE",
        help="Weights & Biases CSV exports (chart or run-history layout)",
    )
    analyze.add_argument("--out", type=Path, help="output folder (default: <input>/../analysis)")
    analyze.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="SPEC",
        help="e.g. accuracy=0.85:0.95 (acceptable:goal) or val_loss<0.01",
    )
    analyze.add_argument(
        "--milestones",
        type=Path,
        metavar="FILE",
        help="lines like 'epoch 20: val_loss < 0.25, red flag > 0.30'",
    )
    analyze.add_argument(
        "--llm", action="store_true", help="add LLM commentary (needs ANTHROPIC_API_KEY)"
    )
    analyze.add_argument("--llm-model", help="Anthropic model id for --llm")
    analyze.add_argument(
        "--compare",
        type=Path,
        metavar="RUN_DIR",
        help="rebuild the comparison report of a pulled run (results/<run-id>/ or its compare/)",
    )
    analyze.add_argument(
        "--metric", help="with --compare: rank by this metric (default: the comparison's)"
    )
    analyze.add_argument(
        "--mode", choices=("max", "min"), help="with --compare: higher (max) or lower is better"
    )

    _run_parsers(sub)
    add_cluster_parser(sub=sub)
    add_watch_parser(sub=sub)

    diag = sub.add_parser("diagnose", help="diagnose training curves from a history JSON")
    diag.add_argument(
        "history",
        type=Path,
        help="JSON object metric -> per-epoch values, or a training_results.json",
    )
    diag.add_argument("--target", action="append", default=[], metavar="SPEC")
    diag.add_argument("--milestones", type=Path, metavar="FILE")
    diag.add_argument("--monitor", help="metric to judge convergence on (default val_loss)")
    diag.add_argument("--out", type=Path, help="folder for diagnosis.json (default: beside input)")
    diag.add_argument("--json", action="store_true", help="print the diagnosis as JSON")
    return parser


def _run_parsers(sub) -> None:
    def common(p: argparse.ArgumentParser, *, json_out: bool = False) -> None:
        p.add_argument("--profile", help="profile from tether.toml (default: default_profile)")
        p.add_argument(
            "--trust-new-host",
            action="store_true",
            help="accept and record the head's SSH host key if it is not in known_hosts yet",
        )
        if json_out:
            p.add_argument("--json", action="store_true", help="machine-readable output")

    p = sub.add_parser("submit", help="submit an experiment spec as a run on the head's cluster")
    p.add_argument("spec", type=Path, help="experiment spec (TOML)")
    p.add_argument("--branch", help="run branch (default: tether/<spec>/<run-id>)")
    p.add_argument("--watch", action="store_true", help="follow the run's log until it ends")
    common(p, json_out=True)
    p = sub.add_parser(
        "resume", help="run a failed or stopped run's unfinished stages again (same branch)"
    )
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("--watch", action="store_true", help="follow the run's log until it ends")
    common(p, json_out=True)
    p = sub.add_parser("runs", help="list the runs (Ray jobs submitted by tether)")
    common(p, json_out=True)
    p = sub.add_parser("status", help="a run's status (its newest Ray job)")
    p.add_argument("run_id", metavar="RUN")
    common(p, json_out=True)
    p = sub.add_parser("logs", help="print a run's log")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")
    common(p)
    p = sub.add_parser("events", help="print a run's events: stages, epochs, alerts (or JSON)")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing until it ends")
    p.add_argument("--since", type=int, default=0, metavar="N", help="only events after seq N")
    common(p, json_out=True)
    p = sub.add_parser("stop", help="stop a run")
    p.add_argument("run_id", metavar="RUN")
    common(p)
    p = sub.add_parser("branches", help="list the run branches on the head")
    common(p, json_out=True)
    p = sub.add_parser("fetch", help="fetch a run's branch (with its stage commits) into this repo")
    p.add_argument("run_id", metavar="RUN")
    common(p, json_out=True)
    p = sub.add_parser("pull", help="pull a run's lightweight results into results/<run-id>/")
    p.add_argument("run_id", metavar="RUN")
    p.add_argument(
        "--every",
        type=float,
        nargs="?",
        const=0.0,
        metavar="S",
        help="pull again every S seconds (no S: [sync] interval_s of tether.toml, 60)",
    )
    p.add_argument(
        "--until-done", action="store_true", help="with --every: stop after the run has ended"
    )
    p.add_argument("--mirror", action="store_true", help="delete local files gone on the head")
    common(p, json_out=True)
    p = sub.add_parser("prune", help="remove the head worktrees of finished runs")
    p.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    common(p, json_out=True)


RUN_COMMANDS = (
    "submit", "resume", "runs", "status", "logs", "stop", "branches", "fetch", "pull", "prune",
)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    console = make_console()
    if args.command is None:
        parser.print_help()
        return 0
    try:
        if args.command == "doctor":
            return _doctor(args, console)
        if args.command == "demo":
            return _demo(args, console)
        if args.command in ("analyze", "diagnose"):
            return _analysis(args, console)
        if args.command in RUN_COMMANDS:
            from .runviews import run_command

            return run_command(args, console)
        if args.command == "events":
            from .eventscmd import events_command

            return events_command(args=args, console=console)
        if args.command == "cluster":
            from .clustercmd import cluster_command

            return cluster_command(args=args, console=console)
        if args.command == "watch":
            from .watchcmd import watch_command

            return watch_command(args=args, console=console)
    except Exception as exc:  # one error tree: TetherError, or a library's error mapped to one
        error = from_library_error(exc)
        if error is None or os.environ.get("TETHER_DEBUG") == "1":
            raise
        _print_error(error)
        return 2
    except KeyboardInterrupt:
        return 130
    parser.error(f"unknown command {args.command}")
    return 2


def _print_error(error: TetherError) -> None:
    """``error: <message>``, then ``  hint: <what to do>`` when the error has one."""
    err = make_console(stderr=True)
    err.print(styled(("error:", "bold red"), " ", error.message or type(error).__name__))
    if error.hint:
        err.print(styled(("  hint:", "bold"), " ", error.hint))


def _analysis(args: argparse.Namespace, console: Console) -> int:
    from .analyze import run_analyze, run_diagnose

    def echo(line: str) -> None:
        console.print(Text(line))

    if args.command == "analyze" and args.compare is not None:
        return _analyze_compare(args, echo)
    if args.command == "analyze" and (args.metric or args.mode):
        raise TetherError("--metric and --mode apply to --compare RUN_DIR")
    if args.command == "analyze":
        return run_analyze(
            results=args.results,
            csv=args.csv,
            out=args.out,
            targets=args.target,
            milestones=args.milestones,
            llm=args.llm,
            llm_model=args.llm_model,
            echo=echo,
        )
    return run_diagnose(
        history=args.history,
        targets=args.target,
        milestones=args.milestones,
        monitor=args.monitor,
        out=args.out,
        as_json=args.json,
        echo=echo,
    )


def _analyze_compare(args: argparse.Namespace, echo) -> int:
    from .analyze_compare import run_analyze_compare

    extra = [flag for flag, given in (
        ("a results file", args.results), ("--csv", args.csv), ("--target", args.target),
        ("--milestones", args.milestones), ("--llm", args.llm),
    ) if given]  # fmt: skip
    if extra:
        raise TetherError(
            f"--compare rebuilds a comparison report: {', '.join(extra)} cannot go with it",
            hint="tether analyze --compare results/<run-id>/ [--metric M --mode max|min] [--out D]",
        )
    return run_analyze_compare(
        run_dir=args.compare, out=args.out, metric=args.metric, mode=args.mode, echo=echo
    )


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
        table.add_row(
            Text(c.name), Text(c.status.value, style=style[c.status]), Text(c.detail), Text(c.fix)
        )
    console.print(table)
    code = exit_code(checks)
    failed = [c for c in checks if c.status is Status.FAIL]
    for c in failed:
        console.print(styled(("FAIL", "bold red"), f" {c.name}: {c.detail}\n  -> {c.fix}"))
    console.print(Text("all checks passed" if code == 0 else f"{len(failed)} check(s) failed"))
    return code


def _demo(args: argparse.Namespace, console: Console) -> int:
    from .config import load_config
    from .demo import run_demo

    config, _ = load_config(path=args.config, cwd=Path.cwd())
    result = run_demo(
        cwd=Path.cwd(),
        config=config,
        echo=lambda line: console.print(Text(line)),
        keep_cluster=args.keep_cluster,
        quick=args.quick,
    )
    table = Table(title=Text(f"run {result.run_id}: extractor comparison, track persistence"))
    for col in ("extractor", "params", "test acc", "F1", "early rate", "saved %", "train s"):
        table.add_column(col, justify="right")

    def cell(rec, key: str, fmt: str) -> str:
        value = rec.metrics.get(key)
        return "unknown" if value is None else format(value, fmt)

    for rec in result.records:
        if rec.status != "finished":
            table.add_row(Text(rec.trial), Text(f"{rec.status}: {rec.error or ''}"))
            continue
        table.add_row(
            Text(rec.extractor),
            cell(rec, "parameters", ",.0f"),
            cell(rec, "test.accuracy", ".1%"),
            cell(rec, "test.f1", ".3f"),
            cell(rec, "test.early_decision_rate", ".1%"),
            cell(rec, "test.compute_saved_pct", ".0f"),
            cell(rec, "train_seconds", ".0f"),
        )
    console.print(table)
    report = result.run_dir / "compare" / "comparison.html"
    console.print(Text(f"comparison: {report}"))
    console.print(Text(f"results: {result.run_dir} (compare/trials/<trial>/ per trial)"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
