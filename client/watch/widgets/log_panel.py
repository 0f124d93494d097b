"""The job log: the newest lines of every trial and stage, followed as they arrive, with a
regex search (``/``) that keeps only the matching lines and highlights each match.

New lines are appended (never the whole log redrawn); the search redraws once per pattern.
A pattern that does not compile leaves the view as it was and marks the input red.
"""

from __future__ import annotations

import re
from collections import deque

from rich.text import Text
from textual import on
from textual.containers import Vertical
from textual.message import Message
from textual.widgets import Input, RichLog

from ..model import LogLine, RunModel
from . import fmt

MATCH_STYLE = "bold black on #edc948"


def log_text(line: LogLine, *, color: str | None, pattern: re.Pattern | None) -> Text:
    text = Text()
    text.append(fmt.clock(line.time), style="dim")
    text.append(f" {line.trial or line.stage or '-'} ", style=color or "")
    start = len(text)
    text.append(line.line, style="#ff9da7" if line.stream == "stderr" else "")
    if pattern is not None:
        for m in pattern.finditer(line.line):
            if m.end() > m.start():
                text.stylize(MATCH_STYLE, start + m.start(), start + m.end())
    return text


class LogPanel(Vertical):
    DEFAULT_CSS = """
    LogPanel {
        height: 1fr;
        border: round $primary-darken-2;
        border-title-color: $text-muted;
        & > RichLog { height: 1fr; scrollbar-size-vertical: 1; background: $surface; }
        & > Input {
            height: 1; border: none; padding: 0 1; display: none;
            &:focus { border: none; }
        }
        & > Input.-shown { display: block; }
        & > Input.-invalid { color: #e15759; }
    }
    """

    class SearchClosed(Message):
        """The search input closed (enter or escape): focus may go back where it was."""

    def __init__(self, *, max_lines: int = 2000, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "log"
        self.pattern: re.Pattern | None = None
        self.lines: deque[str] = deque(maxlen=max_lines)  # the plain text shown
        self._log = RichLog(
            max_lines=max_lines, min_width=20, wrap=True, markup=False, highlight=False
        )
        self._input = Input(placeholder="regex: keep matching lines (enter: done, esc: clear)")
        self._last_seq = 0
        self._title_shown = ""
        self._model: RunModel | None = None
        self._colors: dict = {}

    def compose(self):
        yield self._input
        yield self._log

    # ----------------------------------------------------------------- search

    def open_search(self) -> None:
        self._input.add_class("-shown")
        self._input.focus()

    def close_search(self, *, clear: bool) -> None:
        if clear:
            self._input.value = ""
            self.set_pattern(None)
        if self.searching:
            self._input.remove_class("-shown")
            self.post_message(self.SearchClosed())

    @property
    def searching(self) -> bool:
        return self._input.has_class("-shown")

    @on(Input.Changed)
    def _changed(self, event: Input.Changed) -> None:
        event.stop()
        try:
            pattern = re.compile(event.value) if event.value else None
        except re.error:
            self._input.add_class("-invalid")
            return
        self._input.remove_class("-invalid")
        self.set_pattern(pattern)

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.close_search(clear=False)

    def on_key(self, event) -> None:
        if event.key == "escape" and self.searching:
            event.stop()
            event.prevent_default()
            self.close_search(clear=True)

    def set_pattern(self, pattern: re.Pattern | None) -> None:
        """Show only the lines ``pattern`` finds (all lines for None), matches highlighted."""
        self.pattern = pattern
        self._log.clear()
        self.lines.clear()
        self._last_seq = 0
        if self._model is not None:
            self.show(self._model, colors=self._colors)

    # ----------------------------------------------------------------- lines

    def show(self, model: RunModel, *, colors: dict) -> None:
        """Append the lines that arrived since the last call (the log is followed)."""
        self._model, self._colors = model, colors
        if not model.logs or model.logs[-1].seq <= self._last_seq:
            self._title(model)
            return
        new: list[LogLine] = []
        for line in reversed(model.logs):
            if line.seq <= self._last_seq:
                break
            new.append(line)
        self._last_seq = model.logs[-1].seq
        for line in reversed(new):
            if self.pattern is not None and not self.pattern.search(line.line):
                continue
            text = log_text(line, color=colors.get(line.trial or line.stage), pattern=self.pattern)
            self.lines.append(text.plain)
            self._log.write(text, scroll_end=True)
        self._title(model)

    def _title(self, model: RunModel) -> None:
        if self.pattern is None:
            title = f"log ({len(model.logs)} lines)"
        else:
            title = f"log /{self.pattern.pattern}/ {len(self.lines)} matching"
        if title != self._title_shown:
            self._title_shown = title
            self.border_title = Text(title)  # literal: a pattern may hold [ ]
