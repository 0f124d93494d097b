"""The ``?`` help screen: every key of ``tether watch``, screen by screen, and what the
marks on screen mean. Closed with ``escape``, ``?`` or ``q``."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

KEYS: tuple[tuple[str, tuple[tuple[str, str], ...]], ...] = (
    (
        "everywhere",
        (
            ("?", "this help"),
            ("q", "quit (the run goes on; watching stops)"),
            ("escape", "back to the previous screen"),
            ("R / C / B", "the Runs, Cluster and Branches screens"),
        ),
    ),
    (
        "Runs",
        (
            ("enter", "open the highlighted run"),
            ("/", "filter the rows (a regular expression, any column); escape clears it"),
            ("s", "stop the run (asks first; Ray stops its job)"),
            ("u", "pull its results into results/<run-id>/ now"),
            ("f", "fetch its branch, with every stage commit"),
            ("o", "open its report (report.html or compare/comparison.html)"),
            ("r", "re-run its failed stages and trials (tether resume)"),
            ("c / b", "the Cluster and Branches screens"),
        ),
    ),
    (
        "Run",
        (
            ("s u f o r", "stop, pull now, fetch the branch, open the report, re-run failed"),
            ("a", "auto-pull on or off (every [sync] interval_s of tether.toml)"),
            ("c", "the comparison table (a run with a compare stage)"),
            ("l  /", "the log panel; search it"),
            ("p", "pin the highlighted trial in the charts"),
        ),
    ),
    (
        "Cluster, Branches",
        (
            ("r", "read again now (the Cluster screen also every 5 s)"),
            ("enter", "Branches: fetch the highlighted branch into this repository"),
        ),
    ),
    (
        "marks",
        (
            ("reconnecting", "the stream dropped: the data shown is dimmed, with its age"),
            ("offline", "no cluster: the pulled events.jsonl is replayed"),
            ("stalled", "alive (heartbeats) but no progress for [heartbeat] stall_timeout_s"),
            ("dead", "no heartbeat for two intervals"),
        ),
    ),
)


def help_text() -> str:
    lines = []
    for section, keys in KEYS:
        lines.append(section)
        lines.extend(f"  {key:<14} {what}" for key, what in keys)
        lines.append("")
    return "\n".join(lines).rstrip()


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen {
        align: center middle;
    }
    HelpScreen > VerticalScroll {
        width: 90;
        max-height: 90%;
        height: auto;
        border: thick $accent 60%;
        background: $surface;
        padding: 1 2;
    }
    HelpScreen #title {
        text-style: bold;
        margin-bottom: 1;
    }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "close"),
        Binding("question_mark", "close", "close", show=False),
        Binding("q", "close", "close", show=False),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Static("tether watch: keys", id="title", markup=False)
            yield Static(help_text(), id="keys", markup=False)

    def action_close(self) -> None:
        self.dismiss(None)
