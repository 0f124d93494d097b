"""The Run screen of ``tether watch``: one run, everything at once, rendered from a RunModel.

Top to bottom: the connection banner (hidden while connected), a header line (run id,
status, current stage, progress, elapsed), the pipeline strip (stages with status,
duration, attempt, commit sha), then trials (progress bars and ETAs) and alerts on the left
beside the metric charts (or the log panel, ``l``), worker health, and the results panel.

The screen does no I/O. The app feeds the model and calls :meth:`RunScreen.update_view`
(every widget compares what it shows with the model and redraws only what changed), tells it
the stream's state with :meth:`RunScreen.set_connection` and the puller's with
:meth:`RunScreen.set_results`. What the user asks for that needs I/O (stop, pull, fetch, ...)
is posted as :class:`RunScreen.ActionRequested` for the app to do.

Ages (heartbeat, progress, elapsed) come from the injected ``clock``; an offline screen (a
replay of ``results/<run>/events.jsonl``) shows the run as of its last event instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer

from .colors import trial_colors
from .model import RunModel
from .widgets.alerts_panel import AlertsPanel
from .widgets.banner import STALE_STATES, ConnectionBanner
from .widgets.compare_table import split_trial
from .widgets.health_table import HealthTable
from .widgets.log_panel import LogPanel
from .widgets.metric_chart import ChartsGrid
from .widgets.results_panel import ResultsInfo, ResultsPanel
from .widgets.run_header import RunHeader
from .widgets.stage_strip import StageStrip
from .widgets.trial_progress import TrialsPanel, visible_trials

ACTIONS = ("stop", "pull", "toggle_autopull", "fetch", "open_report", "rerun_failed", "compare")
CONNECTION_STATES = ("connecting", "connected", "reconnecting", "ended", "failed", "offline")


def has_compare(model: RunModel) -> bool:
    """Whether the run has a compare stage (or trials named ``<extractor>-s<seed>``)."""
    return "compare" in model.stages or any(split_trial(k) for k in model.trials)


class RunScreen(Screen):
    """One run: pipeline, trials, charts, health, alerts, log, results."""

    DEFAULT_CSS = """
    RunScreen {
        layout: vertical;
        #body { height: 1fr; }
        /* opacity where Textual can blend it; the charts' canvases take a tint instead */
        #body.-stale > RunHeader, #body.-stale > StageStrip, #body.-stale #left,
        #body.-stale LogPanel, #body.-stale > HealthTable, #body.-stale > ResultsPanel {
            opacity: 50%;
        }
        #body.-stale ChartsGrid, #body.-stale ChartsGrid Canvas { tint: $background 50%; }
        #middle { height: 1fr; }
        #left { width: 52; }
        #right { width: 1fr; }
        #log { display: none; }
        &.-log-open #log { display: block; }
        &.-log-open #charts { display: none; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("l", "toggle_log", "log"),
        Binding("slash", "search", "search"),
        Binding("p", "pin", "pin"),
        Binding("c", "request('compare')", "compare"),
        Binding("s", "request('stop')", "stop"),
        Binding("u", "request('pull')", "pull"),
        Binding("a", "request('toggle_autopull')", "auto-pull"),
        Binding("f", "request('fetch')", "fetch"),
        Binding("o", "request('open_report')", "report"),
        Binding("r", "request('rerun_failed')", "re-run"),
        Binding("escape", "back", "back"),
    ]

    class ActionRequested(Message):
        """The user asked for ``action`` (one of :data:`ACTIONS`, or ``back`` when the run
        screen is the only screen); the app does it."""

        def __init__(self, action: str, *, run_id: str) -> None:
            super().__init__()
            self.action = action
            self.run_id = run_id

    def __init__(
        self, model: RunModel, *, clock: Callable[[], float] = time.time, offline: bool = False
    ) -> None:
        super().__init__()
        self.model = model
        self.clock = clock
        self.offline = offline
        self.pinned: set[str | None] = set()
        self.banner = ConnectionBanner(id="banner")
        self.header = RunHeader(id="header")
        self.stages = StageStrip(id="stages")
        self.trials = TrialsPanel(id="trials")
        self.alerts = AlertsPanel(id="alerts")
        self.charts = ChartsGrid(id="charts")
        self.log_panel = LogPanel(id="log", max_lines=model.caps.log_lines)
        self.health = HealthTable(id="health")
        self.results = ResultsPanel(id="results")
        self._colors: dict = {}
        self._compare: bool | None = None
        self._stale = False
        self._ready = False  # composed and mounted: widgets may be drawn
        self.banner.source = f"results/{model.run_id}/events.jsonl"
        self.set_connection("offline" if offline else "connecting", None, None)

    def compose(self):
        yield self.banner
        with Vertical(id="body"):
            yield self.header
            yield self.stages
            with Horizontal(id="middle"):
                with Vertical(id="left"):
                    yield self.trials
                    yield self.alerts
                with Vertical(id="right"):
                    yield self.charts
                    yield self.log_panel
            yield self.health
            yield self.results
        yield Footer()

    def on_mount(self) -> None:
        self._ready = True
        self.query_one("#body").set_class(self._stale, "-stale")
        self.trials.focus()
        self.update_view()
        self.set_interval(1.0, self.update_view)  # ages and countdowns move on their own

    # ------------------------------------------------------------------ the app's calls

    def now(self) -> float:
        """The time ages are measured to: the clock, or the last event's time offline."""
        if self.offline and self.model.last_event_time is not None:
            return self.model.last_event_time
        return self.clock()

    def update_view(self) -> None:
        """Re-render every widget from the model; each redraws only what changed."""
        if not self._ready:
            return
        m, now = self.model, self.now()
        if len(self._colors) != len(m.trials):
            self._colors = trial_colors(m.trial_names())
        colors = self._colors
        self.banner.show(now=self.clock(), last_event=m.last_event_time)
        self.header.show(m, now=now)
        self.stages.show(m, now=now)
        self.trials.show(m, colors=colors, pinned=self.pinned, now=now)
        self.alerts.show(m, colors=colors)
        if self.has_class("-log-open"):
            self.log_panel.show(m, colors=colors)
        else:
            trials = [t.trial for t in visible_trials(m)]
            self.charts.show(m, trials=trials, colors=colors, pinned=self.pinned)
        self.health.show(m, now=now, colors=colors)
        self.results.show(m, now=self.clock())
        compare = has_compare(m)
        if compare != self._compare:
            self._compare = compare
            self.refresh_bindings()

    def set_connection(self, state: str, since: float | None, reason: str | None) -> None:
        """The event stream's state: the banner, and the data dimmed while it is stale."""
        if state not in CONNECTION_STATES:
            raise ValueError(f"connection state {state!r}: use one of {CONNECTION_STATES}")
        self.banner.set_state(state, since, reason)
        self.header.offline = self.offline or state == "offline"
        stale = state in STALE_STATES
        self._stale = stale
        if self._ready:
            self.query_one("#body").set_class(stale, "-stale")
            self.banner.show(now=self.clock(), last_event=self.model.last_event_time)

    def set_results(self, info: ResultsInfo) -> None:
        """The puller's latest: files, bytes, last pull, next pull, refused, reports."""
        self.results.set_info(info, now=self.clock())
        if self._ready:
            self.results.show(self.model, now=self.clock())

    # ------------------------------------------------------------------ bindings

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "request" and parameters == ("compare",):
            return True if has_compare(self.model) else None
        return True

    def action_request(self, action: str) -> None:
        self.post_message(self.ActionRequested(action, run_id=self.model.run_id))

    def on_log_panel_search_closed(self, message: LogPanel.SearchClosed) -> None:
        self.trials.focus()

    def action_toggle_log(self) -> None:
        self.toggle_class("-log-open")
        if not self.has_class("-log-open"):
            self.log_panel.close_search(clear=False)
        self.update_view()

    def action_search(self) -> None:
        if not self.has_class("-log-open"):
            self.add_class("-log-open")
            self.update_view()
        self.log_panel.open_search()

    def action_pin(self) -> None:
        trial = self.trials.highlighted_trial()
        if trial is None:
            self.notify("no trial to pin: highlight one in the trials list (up/down)",
                        severity="warning")  # fmt: skip
            return
        if trial in self.pinned:
            self.pinned.discard(trial)
        else:
            self.pinned.add(trial)
        if self.has_class("-log-open"):  # the charts are behind the log: show them
            self.action_toggle_log()
        self.update_view()

    def action_back(self) -> None:
        if self.log_panel.searching:
            self.log_panel.close_search(clear=True)
            return
        if len(self.app.screen_stack) > 1 and self.app.screen is self:
            self.app.pop_screen()
        else:
            self.post_message(self.ActionRequested("back", run_id=self.model.run_id))
