"""``tether watch``: the Textual app. Its screens render; the app does the I/O.

Started as ``tether watch`` it shows the Runs screen (``screens_runs``), as ``tether watch
RUN`` that run's screen (``run_screen.RunScreen``) on top of it. The head (its command
channel, Jobs API and repository) is opened in a worker at start; until it answers, the
screens say "connecting". With ``--offline``, or when the head cannot be reached, the pulled
runs of ``results/`` are listed and a run is replayed from its ``events.jsonl``.

All I/O happens off the event loop: the run's event feed on a daemon thread of its own
(``feeds.LiveFeed``: a blocked read must not hold up quitting), everything else in thread
workers (the runs list every ``refresh_s``, pulls, stop, fetch, re-run, opening a report);
results come back as messages or ``call_from_thread``. Only the UI thread touches the model.

Actions (from the Runs screen's keys, or ``RunScreen.ActionRequested``): stop (after a
confirmation; Ray stops the job), pull now, auto-pull on/off (every ``[sync] interval_s``;
the first pull when the run opens, a last one and a branch fetch when it ends), fetch the
branch, open the report, re-run failed (``tether resume``), compare. A failure is a
notification saying what to do, never a traceback.
"""

from __future__ import annotations

import threading
import time
import webbrowser
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from textual import work
from textual.app import App
from textual.binding import Binding, BindingType
from textual.message import Message

from ..config import TetherConfig
from . import actions as act
from .app_actions import ActionsMixin
from .feeds import (
    EventsArrived,
    FeedChanged,
    FeedStatus,
    LiveFeed,
    OfflineFeed,
    pulled_events,
)
from .model import Caps, RunModel
from .screens_help import HelpScreen
from .screens_runs import PulledRuns, RunRow, RunsScreen, summarize

REFRESH_S = 3.0
JOB_END_GRACE_S = 5.0  # a job Ray ended: its last events may still be on their way


class HeadOpened(Message):
    def __init__(self, head, error: str | None) -> None:
        super().__init__()
        self.head = head
        self.error = error


class RunsListed(Message):
    def __init__(self, rows: list[RunRow], error: str | None) -> None:
        super().__init__()
        self.rows = rows
        self.error = error


class WatchApp(ActionsMixin, App[int]):
    TITLE = "tether watch"
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "quit"),
        Binding("question_mark", "help", "help"),
        Binding("escape", "back", "back", show=False),
        Binding("R", "runs", "runs", show=False),
        Binding("C", "cluster", "cluster", show=False),
        Binding("B", "branches", "branches", show=False),
    ]

    def __init__(
        self,
        *,
        config: TetherConfig,
        repo: Path,
        profile: str | None = None,
        trust_new_host: bool = False,
        run_id: str | None = None,
        offline: bool = False,
        clock: Callable[[], float] = time.time,
        opener: Callable[[str], bool] = webbrowser.open,
        refresh_s: float = REFRESH_S,
        autopull: bool | None = None,
    ) -> None:
        super().__init__()
        self.config, self.repo, self.profile = config, Path(repo), profile
        self.trust_new_host, self.offline, self.clock = trust_new_host, offline, clock
        self.opener, self.refresh_s, self.start_run = opener, refresh_s, run_id
        w = config.watch
        self.caps = Caps(log_lines=w.log_lines, alerts=w.alerts, steps_per_trial=w.steps_per_trial)
        self.results_root = self.repo / config.results_dir
        self.pulled = PulledRuns(self.results_root)
        self.runs_screen = RunsScreen()
        self.head = None
        self.head_error: str | None = None
        self.model: RunModel | None = None
        self.run_screen = None
        self.compare_screen = None
        self.feed: LiveFeed | OfflineFeed | None = None
        self.feed_status: FeedStatus | None = None
        self.autopull = (not offline) if autopull is None else (autopull and not offline)
        self.next_pull_at: float | None = None
        self.pulling = False
        self.local: dict[str, act.LocalResults] = {}
        self.rows: list[RunRow] = []
        self._runs_error: str | None = None
        self._job_ended_at: float | None = None
        self._feed_no = 0  # the number of the current feed (see _callbacks)
        self.notices: deque[tuple[str, str]] = deque(maxlen=100)

    def get_default_screen(self) -> RunsScreen:
        return self.runs_screen

    def notify(self, message: str, *, title: str = "", severity="information", timeout=None,
               markup: bool = True) -> None:  # fmt: skip
        """Every notification literal (event text and hints hold ``[...]``), and kept in
        ``notices`` (the last 100: what the user was told, for tests and bug reports)."""
        self.notices.append((severity, message))
        super().notify(message, title=title, severity=severity, timeout=timeout, markup=False)

    # ------------------------------------------------------------------ start and stop

    def on_mount(self) -> None:
        if self.offline:
            self.runs_screen.set_note(f"offline: the runs pulled into {self.config.results_dir}/")
        else:
            self._open_head()
        self.refresh_runs()
        self.set_interval(self.refresh_s, self.refresh_runs)
        self.set_interval(1.0, self._tick)
        if self.start_run:
            self.open_run(self.start_run)

    def on_unmount(self) -> None:
        if self.feed is not None:
            self.feed.close()
        if self.head is not None:
            self.head.close()

    @work(thread=True, exclusive=True, group="head")
    def _open_head(self) -> None:
        from ..head import open_head

        try:
            head = open_head(
                config=self.config, profile_name=self.profile, laptop_repo=self.repo,
                trust_new_host=self.trust_new_host,
            )  # fmt: skip
        except Exception as exc:
            self.post_message(HeadOpened(None, act.explain(exc, what="cannot reach the head")))
            return
        self.post_message(HeadOpened(head, None))

    def on_head_opened(self, message: HeadOpened) -> None:
        if message.head is None:
            self.head_error = message.error
            self.notify(f"{message.error}\nshowing the pulled runs only", severity="error")
            self.runs_screen.set_note("no cluster: the runs pulled into results/ (offline)")
            if self.model is not None and self.feed is None:
                self._go_offline(message.error)
            return
        self.head = message.head
        self.runs_screen.set_note(f"profile {self.head.profile_name} ({self.head.remote.name})")
        self.refresh_runs()
        if self.model is not None and self.feed is None:
            self._start_live(since=self.model.last_seq)

    def no_head_reason(self) -> str:
        if self.offline:
            return "offline (--offline): the cluster is not asked"
        return self.head_error or "connecting to the head…"

    # ------------------------------------------------------------------ the runs list

    @work(thread=True, exclusive=True, group="runs")
    def refresh_runs(self) -> None:
        records, error = [], None
        if self.head is not None:
            try:
                with self.head.jobs() as jobs:
                    records = jobs.runs()
            except Exception as exc:
                error = act.explain(exc, what="cannot list the runs")
        rows = self.pulled.rows(records)
        self.post_message(RunsListed(rows, error))

    def on_runs_listed(self, message: RunsListed) -> None:
        if message.error and message.error != self._runs_error:
            self.notify(message.error + "\nshowing the pulled runs", severity="error")
        self._runs_error = message.error
        rows = message.rows
        if self.model is not None:  # the open run: its live model knows best
            rows = [summarize(r, self.model) if r.run_id == self.model.run_id else r
                    for r in rows]  # fmt: skip
        self.rows = rows
        self.runs_screen.show_rows(rows)
        self._check_job_end(rows)

    def _check_job_end(self, rows: list[RunRow]) -> None:
        """A job Ray ended without its monitor recording the end (stopped, or killed): once
        it has been so for ``JOB_END_GRACE_S`` the live feed has nothing more to give."""
        if self.model is None or not isinstance(self.feed, LiveFeed):
            return
        row = next((r for r in rows if r.run_id == self.model.run_id), None)
        job = row.status.split(" ")[0] if row is not None and row.source == "cluster" else ""
        if job not in ("STOPPED", "FAILED", "SUCCEEDED") or self.model.status != "running":
            self._job_ended_at = None
            return
        now = self.clock()
        self._job_ended_at = self._job_ended_at or now
        if now - self._job_ended_at < JOB_END_GRACE_S:
            return
        self.feed.close()
        self.feed, self._feed_no = None, self._feed_no + 1  # its ENDED is not news
        reason = (
            f"Ray says the job is {job}; its monitor recorded no end (the data is as it left it)"
        )
        self.run_screen.set_connection("ended", now, reason)
        self.notify(f"run {self.model.run_id}: {reason}", severity="warning")

    # ------------------------------------------------------------------ one run

    def open_run(self, run_id: str) -> None:
        """Show ``run_id``'s screen and start its feed (live, or the pulled replay)."""
        from .run_screen import RunScreen

        if self.model is not None and self.model.run_id == run_id and self.run_screen:
            if self.run_screen not in self.screen_stack:
                self.push_screen(self.run_screen)
            return
        self.close_run()
        self.model = RunModel(run_id, caps=self.caps)
        self.run_screen = RunScreen(self.model, clock=self.clock, offline=self.offline)
        self.push_screen(self.run_screen)
        self.next_pull_at = None
        self._scan(run_id)
        if self.offline:
            self._start_offline()
        elif self.head is not None:
            self._start_live(since=0)
        elif self.head_error is not None:
            self._go_offline(self.head_error)

    def close_run(self) -> None:
        """Stop the open run's feed and forget it (back on the Runs screen)."""
        if self.run_screen is not None and self.run_screen in self.screen_stack:
            return
        if self.feed is not None:
            self.feed.close()
        self.feed = self.model = self.run_screen = self.compare_screen = None
        self.feed_status, self.next_pull_at = None, None

    def _events_path(self, run_id: str) -> Path:
        return pulled_events(repo=self.repo, results_dir=self.config.results_dir, run_id=run_id)

    def _callbacks(self) -> dict:
        """A new feed's callbacks: its messages carry its number, so those of a feed that
        was replaced (or closed) are told apart from the current one's."""
        if self.feed is not None:
            self.feed.close()
        self._feed_no += 1
        run_id, no = self.model.run_id, self._feed_no
        return dict(
            on_events=lambda batch: self.post_message(EventsArrived(run_id, batch, feed=no)),
            on_status=lambda status: self.post_message(FeedChanged(run_id, status, feed=no)),
        )

    def _start_live(self, *, since: int) -> None:
        callbacks = self._callbacks()
        self.feed = LiveFeed(head=self.head, run_id=self.model.run_id, since=since, **callbacks)
        self._run_feed(self.feed)
        if self.autopull:
            self.next_pull_at = self.clock()  # the first pull now, then every interval

    def _start_offline(self) -> None:
        run_id, callbacks = self.model.run_id, self._callbacks()
        self.feed = OfflineFeed(
            path=self._events_path(run_id), run_id=run_id, since=self.model.last_seq,
            **callbacks,
        )  # fmt: skip
        self.next_pull_at = None  # nothing to pull from: no cluster
        self._run_feed(self.feed)

    def _go_offline(self, why: str | None) -> None:
        """No live events: replay the pulled file when there is one, else say so."""
        path = self._events_path(self.model.run_id)
        if path.is_file():
            self.notify(f"{why}\nreplaying the pulled {path.name} (offline)", severity="warning")
            self.run_screen.offline = True
            self._start_offline()
            return
        reason = (why or "no events").splitlines()[0]
        self.run_screen.set_connection("failed", self.clock(), reason)
        self.notify(
            f"{why}\nand nothing pulled for run {self.model.run_id}: once the cluster is up, "
            f"`tether pull {self.model.run_id}` keeps a copy to watch offline",
            severity="error",
        )

    def _run_feed(self, feed) -> None:
        """The feed on a daemon thread: a read blocked on the head must not hold up quit."""

        no = self._feed_no

        def run() -> None:
            try:
                feed.run()
            except Exception as exc:
                why = act.explain(exc, what="the event feed stopped").splitlines()[0]
                status = FeedStatus(state="failed", since=time.time(), reason=why)
                self.post_message(FeedChanged(feed.run_id, status, feed=no))

        threading.Thread(target=run, name=f"tether-watch-feed-{feed.run_id}", daemon=True).start()

    def _mine(self, run_id: str) -> bool:
        return self.model is not None and self.model.run_id == run_id

    def _current(self, message: EventsArrived | FeedChanged) -> bool:
        """From the open run's current feed (not one replaced, closed or of another run)."""
        return self._mine(message.run_id) and message.feed == self._feed_no

    def on_events_arrived(self, message: EventsArrived) -> None:
        if not self._current(message):
            return
        was = self.model.status
        self.model.apply_all(message.events)
        self._update_views()
        live = isinstance(self.feed, LiveFeed)
        if live and was == "running" and self.model.status != "running":
            self._run_ended()

    def on_feed_changed(self, message: FeedChanged) -> None:
        if not self._current(message):
            return
        status = self.feed_status = message.status
        if status.state == "failed":
            if isinstance(self.feed, LiveFeed) and self.model.last_seq == 0:
                self._go_offline(f"no live events for run {self.model.run_id}: {status.reason}")
                return
            hint = f"\nwhat to do: {status.hint}" if status.hint else ""
            self.notify(f"the events stopped: {status.reason}{hint}", severity="error")
        self.run_screen.set_connection(status.state, status.since, status.reason)

    def _update_views(self) -> None:
        for screen in (self.run_screen, self.compare_screen):
            if screen is not None and screen.is_mounted:
                screen.update_view()

    def _run_ended(self) -> None:
        run_id, status = self.model.run_id, self.model.status
        self.notify(f"run {run_id} {status}", severity="information" if status == "succeeded"
                    else "warning")  # fmt: skip
        if self.autopull:  # the last results (the tick pulls), the branch with its commits
            self.next_pull_at = self.clock()
            self._simple(run_id, "fetch", act.fetch_run, {"head": self.head, "run_id": run_id})

    # ------------------------------------------------------------------ navigation

    def action_help(self) -> None:
        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen())

    def action_back(self) -> None:
        if len(self.screen_stack) > 1:
            self.pop_screen()

    def action_runs(self) -> None:
        while len(self.screen_stack) > 1:
            self.pop_screen()

    def action_cluster(self) -> None:
        from .screens_cluster import ClusterScreen

        if not isinstance(self.screen, ClusterScreen):
            self.push_screen(ClusterScreen())

    def action_branches(self) -> None:
        from .screens_branches import BranchesScreen

        if not isinstance(self.screen, BranchesScreen):
            self.push_screen(BranchesScreen())

    async def action_quit(self) -> None:
        if self.feed is not None:
            self.feed.close()
        self.exit(0)
