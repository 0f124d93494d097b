"""What ``tether watch`` does when asked, as a mixin of :class:`~.app.WatchApp`: the
actions of the Runs and Run screens (stop after a confirmation, pull now, auto-pull on/off,
fetch the branch, open the report, re-run failed, compare) and the puller's timer.

Each action's I/O is a blocking function of ``actions`` run in a thread worker; its line (or
its error, explained) comes back as a notification. Auto-pull: every ``[sync] interval_s``
while the open run is live, the first pull when its feed starts and a last one when it ends;
the results panel gets a ``ResultsInfo`` after each pull, scan and toggle (it counts the
seconds to the next pull down by itself).
"""

from __future__ import annotations

from collections.abc import Callable

from textual import work
from textual.message import Message

from ..errors import TetherError
from . import actions as act
from .feeds import LiveFeed
from .screens_confirm import ConfirmScreen


class PullDone(Message):
    def __init__(self, run_id: str, local: act.LocalResults | None, text: str, manual: bool):
        super().__init__()
        self.run_id, self.local, self.text, self.manual = run_id, local, text, manual


class ActionsMixin:
    """Needs the WatchApp's state: head, config, repo, model, run_screen, feed, autopull,
    next_pull_at, pulling, local, results_root, clock, opener, offline."""

    # ------------------------------------------------------------------ results

    def _results_info(self, run_id: str):
        from .widgets.results_panel import ResultsInfo

        local = self.local.get(run_id, act.LocalResults())
        next_in = None
        if self.autopull and self.next_pull_at is not None:
            next_in = max(0.0, self.next_pull_at - self.clock())
        return ResultsInfo(
            files=local.files, bytes=local.bytes, last_pull=local.last_pull,
            next_pull_in_s=next_in, auto=self.autopull and isinstance(self.feed, LiveFeed),
            refused=list(local.refused),
            reports=list(local.reports),
        )  # fmt: skip

    def _show_results(self) -> None:
        if self.model is not None and self.run_screen is not None:
            self.run_screen.set_results(self._results_info(self.model.run_id))

    @work(thread=True, group="scan")
    def _scan(self, run_id: str) -> None:
        local = act.scan_results(self.results_root / run_id)
        self.call_from_thread(self._scanned, run_id, local)

    def _scanned(self, run_id: str, local: act.LocalResults) -> None:
        old = self.local.get(run_id)
        if old is not None:  # keep what the last pull said
            local = act.LocalResults(local.files, local.bytes, local.reports, old.refused,
                                     old.last_pull)  # fmt: skip
        self.local[run_id] = local
        self._show_results()

    def _tick(self) -> None:
        due = self.next_pull_at is not None and self.clock() >= self.next_pull_at
        live = isinstance(self.feed, LiveFeed)
        if self.model is not None and self.autopull and live and due and not self.pulling:
            self.next_pull_at = None
            self._pull(self.model.run_id, manual=False)

    def _pull(self, run_id: str, *, manual: bool) -> None:
        if self.pulling:
            if manual:
                self.notify("a pull is running already; its results show when it is done")
            return
        self.pulling = True
        self._pull_worker(run_id, manual)

    @work(thread=True, group="pull")
    def _pull_worker(self, run_id: str, manual: bool) -> None:
        try:
            local, text = act.pull_run(head=self.head, config=self.config, run_id=run_id)
        except Exception as exc:
            self.post_message(PullDone(run_id, None, act.explain(exc, what="pull failed"), manual))
            return
        self.post_message(PullDone(run_id, local, text, manual))

    def on_pull_done(self, message: PullDone) -> None:
        self.pulling = False
        if message.local is not None:
            self.local[message.run_id] = message.local
        if message.manual or message.local is None:
            self.notify(message.text, severity="information" if message.local else "error")
        if self._mine(message.run_id):
            live = self.model.status == "running" and isinstance(self.feed, LiveFeed)
            if self.autopull and live:
                self.next_pull_at = self.clock() + self.config.sync.interval_s
            self._show_results()

    # ------------------------------------------------------------------ actions

    def on_run_screen_action_requested(self, message) -> None:
        message.stop()
        if message.action == "back":
            self.action_runs()
        else:
            self.perform(message.action, run_id=message.run_id)

    def perform(self, action: str, *, run_id: str) -> None:
        """Do ``action`` for ``run_id`` (see the module docstring)."""
        if action == "open_report":
            self._simple(run_id, "open the report", self._open_report, {"run_id": run_id})
            return
        if action == "compare":
            self._compare(run_id)
            return
        if action == "toggle_autopull":
            self._toggle_autopull(run_id)
            return
        if self.head is None:
            self.notify(f"{action.replace('_', ' ')} needs the cluster: {self.no_head_reason()}",
                        severity="warning")  # fmt: skip
            return
        if action == "stop":
            self._confirm_stop(run_id)
        elif action == "pull":
            self._pull(run_id, manual=True)
        elif action == "fetch":
            self._simple(run_id, "fetch", act.fetch_run, {"head": self.head, "run_id": run_id})
        elif action == "rerun_failed":
            kwargs = dict(config=self.config, repo=self.repo, profile=self.profile,
                          trust_new_host=self.trust_new_host, run_id=run_id)  # fmt: skip
            self._simple(run_id, "re-run failed", act.rerun_failed, kwargs)
        else:
            self.notify(f"unknown action {action!r}", severity="error")

    def _confirm_stop(self, run_id: str) -> None:
        question = (f"Stop run {run_id}?\n\nRay stops its job; what its stages committed "
                    f"stays. `tether resume {run_id}` runs the rest later.")  # fmt: skip

        def answered(yes: bool | None) -> None:
            if yes:
                self.notify(f"stopping run {run_id}…")
                self._simple(run_id, "stop", act.stop_run, {"head": self.head, "run_id": run_id})

        self.push_screen(ConfirmScreen(question, confirm="Stop run"), answered)

    @work(thread=True, group="actions")
    def _simple(self, run_id: str, what: str, fn: Callable[..., str], kwargs: dict) -> None:
        """Run ``fn(**kwargs)`` in a worker; its line (or its error) becomes a notification."""
        try:
            text = fn(**kwargs)
        except Exception as exc:
            self.call_from_thread(self.notify, act.explain(exc, what=f"{what} failed"),
                                  severity="error", timeout=12)  # fmt: skip
            return
        self.call_from_thread(self._action_done, run_id, what, text)

    def _action_done(self, run_id: str, what: str, text: str) -> None:
        self.notify(text)
        if what in ("stop", "re-run failed"):
            self.refresh_runs()
        if what == "re-run failed" and self._mine(run_id) and self.head is not None:
            self._start_live(since=self.model.last_seq)  # the resume's events follow on

    def _open_report(self, *, run_id: str) -> str:
        text, opened = act.open_report(
            dest=self.results_root / run_id, run_id=run_id, opener=self.opener
        )
        if not opened:
            raise TetherError(text)
        return text

    def _toggle_autopull(self, run_id: str) -> None:
        if self.offline or self.head is None:
            self.notify(f"auto-pull needs the cluster: {self.no_head_reason()}", severity="warning")
            return
        self.autopull = not self.autopull
        self.next_pull_at = self.clock() if self.autopull else None
        state = f"on: every {self.config.sync.interval_s:g} s" if self.autopull else "off"
        self.notify(f"auto-pull {state}")
        self._show_results()

    def _compare(self, run_id: str) -> None:
        from .compare_screen import CompareScreen

        if not self._mine(run_id):
            self.open_run(run_id)
        metric, mode = act.compare_settings(dest=self.results_root / run_id, model=self.model)
        self.compare_screen = CompareScreen(self.model, metric=metric, mode=mode)
        self.push_screen(self.compare_screen)
