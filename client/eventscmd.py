"""``tether events RUN [-f] [--since N] [--json]``: a run's events as plain lines.

The plain, scriptable watch (and what CI logs show): the event stream of
``client/eventstream.py`` printed as one human line per stage change, epoch summary, alert
and health change (heartbeats, steps, metrics and logs are left out: ``--json`` has them
all), or every event as one JSON line with ``--json``. ``-f`` follows until the run ends,
through dropped connections (stderr says when it reconnects, stdout never repeats or skips
an event); without it, what the head has now. ``--since N``: the events after seq N.
"""

from __future__ import annotations

import argparse
import contextlib
import time
from pathlib import Path

from rich.console import Console
from rich.text import Text

from tether.cluster.events import Kind
from tether.ml.numfmt import metric_value

from .config import load_config
from .errors import TetherError
from .eventstream import EventStream, StreamedEvent, StreamState, StreamStatus
from .head import Head, open_head
from .output import make_console, write_raw
from .repo import repo_root
from .runid import check_run_id

LAST_LOG_LINES = 10  # of a failed stage, under its line


def events_command(*, args: argparse.Namespace, console: Console) -> int:
    check_run_id(args.run_id)
    if args.since < 0:
        raise TetherError(f"--since {args.since}: a seq is >= 0", hint="e.g. --since 0")
    cwd = Path.cwd()
    config, _ = load_config(path=args.config, cwd=cwd)
    head = open_head(
        config=config,
        profile_name=args.profile,
        laptop_repo=repo_root(cwd),
        trust_new_host=args.trust_new_host,
    )
    try:
        return print_events(
            head=head,
            run_id=args.run_id,
            since=args.since,
            follow=args.follow,
            as_json=args.json,
            console=console,
            err=make_console(stderr=True),
        )
    finally:
        head.close()


def print_events(
    *,
    head: Head,
    run_id: str,
    since: int,
    follow: bool,
    as_json: bool,
    console: Console,
    err: Console,
) -> int:
    """Stream the run's events from ``head`` to ``console``; stream state to ``err``."""
    stream = EventStream(
        remote=head.remote,
        python=head.python,
        run_id=run_id,
        since=since,
        follow=follow,
        dashboard_port=head.profile.dashboard_port,
        is_pending=lambda: _job_running(head, run_id),
        on_state=_state_printer(err),
    )
    count = 0
    with contextlib.closing(stream):
        for event in stream:
            count += 1
            if as_json:
                write_raw(event.json_line() + "\n", console=console)
                continue
            line = describe(event)
            if line is not None:
                console.print(Text(line))
    if not as_json and not follow:
        console.print(
            Text(
                f"{count} events after seq {since}, up to seq {stream.last_seq}; "
                f"follow on: tether events {run_id} -f --since {stream.last_seq}"
            )
        )
    return 0


def _job_running(head: Head, run_id: str) -> bool:
    """The run's Ray job exists and has not ended (its monitor may still be starting)."""
    with head.jobs() as jobs:
        return not jobs.status(run_id=run_id).is_terminal()


def _state_printer(err: Console):
    """Tell stderr when the stream drops and when it is back (stdout stays the events)."""
    previous: list[StreamState] = [StreamState.CONNECTING]

    def on_state(status: StreamStatus) -> None:
        was, previous[0] = previous[0], status.state
        if status.state is StreamState.RECONNECTING:
            err.print(
                Text(
                    f"events: {status.reason}; reconnecting (attempt {status.attempts}), "
                    f"resuming after seq {status.last_seq}"
                )
            )
        elif status.state is StreamState.CONNECTED and was is StreamState.RECONNECTING:
            err.print(Text(f"events: reconnected, resuming after seq {status.last_seq}"))

    return on_state


# --------------------------------------------------------------------------- human lines


def describe(event: StreamedEvent) -> str | None:
    """The human line of an event (``HH:MM:SS  [trial/stage] what``), or None for the
    kinds a reader of the plain watch does not need line by line."""
    text = _what(event)
    if text is None:
        return None
    scope = "/".join(x for x in (event.trial, event.stage) if x)
    scope = f"[{scope}] " if scope else ""
    return f"{_clock(event.time)}  {scope}{text}"


def _clock(t: float) -> str:
    try:
        return time.strftime("%H:%M:%S", time.localtime(t))
    except (OverflowError, OSError, ValueError):
        return f"t={t:.0f}"


def _what(e: StreamedEvent) -> str | None:
    if e.kind is Kind.STAGE:
        return _stage(e)
    # An epoch's summary: the train stage's epoch_end, or a loop that reports once per epoch
    # (epoch and metrics, no step); step-level progress would flood the plain watch.
    per_epoch = e.get("step") is None and bool(e.get("metrics"))
    if e.kind is Kind.PROGRESS and e.get("epoch") is not None and (e.get("epoch_end") or per_epoch):
        shown = " ".join(f"{k}={metric_value(v)}" for k, v in (e.get("metrics") or {}).items())
        return f"epoch {e.get('epoch')}: {shown}".rstrip()
    if e.kind is Kind.ALERT:
        who = f" {e.worker}" if e.worker else ""
        return f"ALERT {e.get('level')} {e.get('code')}{who}: {e.get('message')}"
    if e.kind is Kind.HEARTBEAT and e.get("ended"):
        code = e.get("exit_code")
        return f"worker {e.worker} ended" + (f" (exit {code})" if code is not None else "")
    return None


def _stage(e: StreamedEvent) -> str:
    if e.get("terminal"):
        error = f": {e.get('error')}" if e.get("error") else ""
        return f"run {e.get('run_status')}{error}"
    if e.get("resumed"):
        return "run resumed"
    status = e.get("status")
    by = f" on {e.worker}" if e.worker else ""
    if status == "failed":
        text = f"FAILED{by}: {e.get('error') or 'no error message'}"
        tail = e.get("last_log_lines") or []
        return text + "".join(f"\n    | {line}" for line in tail[-LAST_LOG_LINES:])
    text = f"{status}{by}"
    attempt, epoch = e.get("attempt"), e.get("resumed_from_epoch")
    if attempt is not None and attempt > 1:
        text += f" (attempt {attempt}" + (
            f", resumed from epoch {epoch})" if epoch is not None else ")"
        )
    return text
