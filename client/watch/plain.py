"""``tether watch RUN`` without a terminal (CI, a pipe, ``--plain``): the plain lines of
``tether events -f`` (``eventscmd.describe``: stage changes, epoch summaries, alerts, health
changes; steps and heartbeats never line by line), throttled and under 100 columns.

Throttled: at most ``lines_per_s`` lines a second. Lines past that wait for the next second,
in order; an epoch summary still waiting when a newer one of the same trial and stage comes
is replaced by it (the line says how many were folded in), so a fast run cannot flood a CI
log while a stage change or an alert is never lost. Every line is cut to ``WIDTH`` columns
(99; a failed stage's last log lines included).

Where the events come from: the live stream (a :class:`~.feeds.LiveFeed` on a thread, until
the run ends: exit 0), or with ``--offline`` the pulled ``results/<run-id>/events.jsonl``
(first line: the offline mark). With no cluster reachable (the head, its dashboard, or the
run's monitor cannot be reached before any event came) it falls back to that file when it
exists, else fails with a hint.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from rich.cells import cell_len, set_cell_size
from rich.console import Console
from rich.text import Text

from tether.cluster.events import EventError, Kind

from ..config import TetherConfig
from ..errors import ClusterError, RemoteError, TetherError
from ..eventscmd import describe
from ..eventstream import StreamedEvent
from .feeds import FeedStatus, LiveFeed, pulled_events, read_events

WIDTH = 99  # "under 100 columns"
LINES_PER_S = 10
_EPOCH = re.compile(r"^\d\d:\d\d:\d\d  (\[[^\]]*\] )?epoch ")


def clip(line: str, width: int = WIDTH) -> str:
    """``line`` cut to ``width`` terminal cells (``...`` marks a cut)."""
    if cell_len(line) <= width:
        return line
    return set_cell_size(line, width - 3).rstrip() + "..."


@dataclass
class _Waiting:
    line: str
    folded: int = 0


class Throttle:
    """At most ``per_s`` lines a second (see the module docstring). ``offer`` returns what
    to print now; ``due`` what may be printed now of what waits; ``drain`` all that waits."""

    def __init__(self, *, per_s: int = LINES_PER_S, clock: Callable[[], float] = time.monotonic):
        self._per_s = max(1, per_s)
        self._clock = clock
        self._window = clock()
        self._used = 0
        self._waiting: OrderedDict[object, _Waiting] = OrderedDict()
        self._n = 0

    def offer(self, line: str, *, fold_key: object = None) -> list[str]:
        out = self.due()
        if not self._waiting and self._used < self._per_s:
            self._used += 1
            return [*out, line]
        if fold_key is not None and fold_key in self._waiting:
            old = self._waiting.pop(fold_key)
            self._waiting[fold_key] = _Waiting(line, old.folded + 1)
        else:
            self._n += 1
            self._waiting[fold_key if fold_key is not None else ("line", self._n)] = _Waiting(line)
        return out

    def due(self) -> list[str]:
        now = self._clock()
        if now - self._window >= 1.0:
            self._window, self._used = now, 0
        out = []
        while self._waiting and self._used < self._per_s:
            out.append(self._take())
            self._used += 1
        return out

    def drain(self) -> list[str]:
        return [self._take() for _ in range(len(self._waiting))]

    def _take(self) -> str:
        _, w = self._waiting.popitem(last=False)
        return w.line + (f" (+{w.folded} earlier epochs)" if w.folded else "")


class PlainPrinter:
    """Events in, clipped and throttled lines out (``throttle=None``: no rate limit)."""

    def __init__(self, *, console: Console, throttle: Throttle | None) -> None:
        self._console = console
        self._throttle = throttle
        self.lines = 0
        self.ended: str | None = None  # the run's final status, once its end event came

    def event(self, data) -> None:
        try:
            event = StreamedEvent.from_dict(dict(data))
        except EventError:
            return
        if event.ends_run:
            self.ended = str(event.get("run_status") or "ended")
        text = describe(event)
        if text is None:
            return
        head, *tail = text.split("\n")
        key = (event.trial, event.stage) if event.kind is Kind.PROGRESS else None
        if key is not None and not _EPOCH.match(head):
            key = None
        self._offer(head, key)
        for line in tail:  # a failed stage's last log lines: never folded
            self._offer(line, None)

    def say(self, line: str) -> None:
        """A line of the watch's own (the offline mark): never held back."""
        self._print([line])

    def tick(self) -> None:
        if self._throttle is not None:
            self._print(self._throttle.due())

    def finish(self) -> None:
        if self._throttle is not None:
            self._print(self._throttle.drain())

    def _offer(self, line: str, key) -> None:
        if self._throttle is None:
            self._print([line])
        else:
            self._print(self._throttle.offer(line, fold_key=key))

    def _print(self, lines: list[str]) -> None:
        for line in lines:
            self._console.print(Text(clip(line)), soft_wrap=True, overflow="ignore")
            self.lines += 1


def watch_plain(
    *,
    config: TetherConfig,
    repo: Path,
    run_id: str,
    profile: str | None,
    trust_new_host: bool,
    offline: bool,
    console: Console,
    err: Console,
    lines_per_s: int = LINES_PER_S,
) -> int:
    """Print the run's events as plain lines until the run ends (live) or the file is
    replayed (offline); 0 then. Raises TetherError when there is nothing to show."""
    from ..head import open_head

    path = pulled_events(repo=repo, results_dir=config.results_dir, run_id=run_id)
    if offline:
        return replay(path=path, run_id=run_id, console=console, why=None)
    try:
        head = open_head(
            config=config, profile_name=profile, laptop_repo=repo, trust_new_host=trust_new_host
        )
    except (RemoteError, ClusterError) as exc:  # the head cannot be reached
        return _fallback(path=path, run_id=run_id, console=console, err=err, exc=exc)
    try:
        try:
            with head.jobs() as jobs:
                jobs.status(run_id=run_id)
        except TetherError as exc:  # no dashboard, or the cluster does not know the run
            return _fallback(path=path, run_id=run_id, console=console, err=err, exc=exc)
        printer = PlainPrinter(console=console, throttle=Throttle(per_s=lines_per_s))
        status = _follow(head=head, run_id=run_id, printer=printer, err=err)
        if status.state == "failed" and printer.lines == 0 and path.is_file():
            err.print(Text(clip(f"watch: offline, replaying the pulled events: {status.reason}")))
            return replay(path=path, run_id=run_id, console=console, why=status.reason)
        if status.state == "failed":
            raise TetherError(
                f"watch: the events of run {run_id} stopped: {status.reason}",
                hint=status.hint or f"try again: tether watch {run_id}",
            )
        return 0
    finally:
        head.close()


def _fallback(*, path: Path, run_id: str, console: Console, err: Console, exc) -> int:
    error = exc if isinstance(exc, TetherError) else TetherError(str(exc))
    first = error.message.strip().splitlines()[0] if error.message.strip() else str(error)
    if not path.is_file():
        raise TetherError(
            f"cannot watch run {run_id}: {first}; and no pulled events at {path}",
            hint=(error.hint + "; " if error.hint else "")
            + f"once the cluster is up, `tether pull {run_id}` keeps a copy for offline watching",
        )
    err.print(Text(clip(f"watch: offline, replaying the pulled events: {first}")))
    return replay(path=path, run_id=run_id, console=console, why=first)


def replay(*, path: Path, run_id: str, console: Console, why: str | None) -> int:
    """Print the pulled events of ``run_id`` (no rate limit: they are history)."""
    if not path.is_file():
        raise TetherError(
            f"no pulled events for run {run_id} at {path}",
            hint=f"pull them while the cluster is up: tether pull {run_id}",
        )
    printer = PlainPrinter(console=console, throttle=None)
    pulled = time.strftime("%H:%M:%S", time.localtime(path.stat().st_mtime))
    printer.say(f"offline: run {run_id}, events pulled at {pulled} ({path})")
    count = 0
    for event in read_events(path):
        printer.event(event)
        count += 1
    end = f"run {printer.ended}" if printer.ended else "the run had not ended at that pull"
    printer.say(f"offline: {count} events replayed; {end}")
    return 0


def _follow(*, head, run_id: str, printer: PlainPrinter, err: Console) -> FeedStatus:
    """Run a LiveFeed on a thread; print its events here, ticking the throttle."""
    inbox: queue.Queue = queue.Queue()
    feed = LiveFeed(
        head=head,
        run_id=run_id,
        on_events=lambda batch: inbox.put(("events", batch)),
        on_status=lambda status: inbox.put(("status", status)),
    )

    def run() -> None:
        try:
            feed.run()
        except Exception as exc:  # never a silent end: the loop below reports it
            reason = f"{type(exc).__name__}: {exc}"
            inbox.put(("status", FeedStatus(state="failed", since=time.time(), reason=reason)))

    thread = threading.Thread(target=run, name="tether-watch-plain", daemon=True)
    thread.start()
    final: FeedStatus | None = None
    previous = "connecting"
    try:
        while final is None or not inbox.empty():
            try:
                kind, item = inbox.get(timeout=0.2)
            except queue.Empty:
                printer.tick()
                if final is None and not thread.is_alive() and inbox.empty():
                    final = (
                        feed.status
                        if feed.status.is_terminal
                        else FeedStatus(
                            state="failed", since=time.time(), reason="the event feed stopped"
                        )
                    )
                continue
            if kind == "events":
                for event in item:
                    printer.event(event)
            else:
                _state_line(item, previous, err)
                waiting = item.state == "connecting" and item.reason
                previous = "waiting" if waiting else item.state
                if item.is_terminal:
                    final = item
            printer.tick()
    finally:
        feed.close()
        printer.finish()
    thread.join(timeout=5)
    return final


def _state_line(status: FeedStatus, previous: str, err: Console) -> None:
    if status.state == "reconnecting":
        since = time.strftime("%H:%M:%S", time.localtime(status.since or time.time()))
        text = f"watch: reconnecting (since {since}): {status.reason}; after seq {status.last_seq}"
    elif status.state == "connected" and previous == "reconnecting":
        text = f"watch: reconnected, resuming after seq {status.last_seq}"
    elif status.state == "connecting" and status.reason and previous != "waiting":
        text = "watch: the run is starting; waiting for its monitor"
    else:
        return
    err.print(Text(clip(text)))
