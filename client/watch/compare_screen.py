"""The Compare screen: the comparison table of a run's compare stage, updated as trials finish.

Per extractor (trial ids ``<extractor>-s<seed>``): mean ± std of the ranking metric over the
seeds finished so far, seeds done / failed / running, the seeds' values, the tier (extractors
the seeds cannot separate share a tier) and a warning under 3 seeds. The numbers are
``tether.ml.comparison_stats``'s, computed in a thread worker (scipy, bootstrap resamples)
only when a trial's state or value changed; the result comes back as a message.
"""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import work
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Footer, Static

from tether.ml.comparison_stats import ALPHA, MIN_SEEDS
from tether.ml.errors import MLError

from .colors import trial_colors
from .model import RunModel
from .widgets.compare_table import CompareRow, CompareTable, compare_rows, trial_states

MODES = ("max", "min")


class CompareScreen(Screen):
    DEFAULT_CSS = """
    CompareScreen {
        layout: vertical;
        #compare-header { height: 1; background: $panel; padding: 0 1; }
        #compare-note { height: auto; color: $text-muted; padding: 0 1; }
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "back", "back")]

    class RowsReady(Message):
        def __init__(self, key: tuple, rows: list[CompareRow] | None, error: str | None) -> None:
            super().__init__()
            self.key, self.rows, self.error = key, rows, error

    def __init__(self, model: RunModel, *, metric: str = "test.accuracy", mode: str = "max"):
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: use 'max' (higher is better) or 'min'")
        super().__init__()
        self.model, self.metric, self.mode = model, metric, mode
        self.header = Static("", id="compare-header", markup=False)
        self.table = CompareTable(id="compare-table")
        self.note = Static("", id="compare-note", markup=False)
        self._key: tuple | None = None  # the trials' states last sent to the worker
        self._colors: dict[str, str] = {}
        self._ready = False

    def compose(self):
        yield self.header
        yield self.table
        yield self.note
        yield Footer()

    def on_mount(self) -> None:
        self._ready = True
        self.table.border_title = f"compare: {self.metric} ({self._better()})"
        self.note.update(
            Text(
                f"tier: extractors the seeds cannot separate (Welch's t-test, Holm-corrected, "
                f"alpha {ALPHA:g}); 3* = a single seed, untested; under {MIN_SEEDS} seeds the "
                "spread is not known."
            )
        )
        self.update_view()

    def _better(self) -> str:
        return "higher is better" if self.mode == "max" else "lower is better"

    def update_view(self) -> None:
        """Recompute the table when a trial's state or value changed (in a worker)."""
        if not self._ready:
            return
        states = trial_states(self.model, metric=self.metric)
        key = tuple(states)
        self._header(states)
        if key == self._key:
            return
        self._key = key
        colors = trial_colors(self.model.trial_names())  # an extractor: its first trial's
        self._colors = {}
        for s in states:
            self._colors.setdefault(s.extractor, colors.get(f"{s.extractor}-s{s.seed}", "white"))
        self._compute(key, states)

    def _header(self, states) -> None:
        done = sum(s.status == "finished" for s in states)
        failed = sum(s.status == "failed" for s in states)
        running = sum(s.status == "running" for s in states)
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f"compare  {self.model.run_id}", style="bold")
        t.append(f"  {self.metric} ({self._better()})")
        t.append(f"  {done}/{len(states)} finished", style="bold")
        if failed:
            t.append(f"  {failed} failed", style="#e15759")
        if running:
            t.append(f"  {running} running", style="#4e9ded")
        reported = {m for v in self.model.trials.values() for m in v.results}
        if done and self.metric not in reported:
            t.append(f"  no trial reported {self.metric}", style="#f28e2b")
        self.header.update(t)

    @work(thread=True, exclusive=True, group="compare-stats")
    def _compute(self, key: tuple, states) -> None:
        try:
            rows = compare_rows(list(states), metric=self.metric, mode=self.mode)
        except MLError as exc:
            self.post_message(self.RowsReady(key, None, str(exc)))
        else:
            self.post_message(self.RowsReady(key, rows, None))

    def on_compare_screen_rows_ready(self, message: RowsReady) -> None:
        if message.key != self._key:
            return  # a newer computation is on its way
        if message.error is not None:
            self.notify(f"comparison: {message.error}", severity="error")
            return
        self.table.show(message.rows or [], colors=self._colors)

    def action_back(self) -> None:
        if len(self.app.screen_stack) > 1 and self.app.screen is self:
            self.app.pop_screen()
