"""The run's alerts, newest first, one line each: time, severity, code, trial, message.

Severity has a colour and an icon (``·`` info, ``▲`` warning, ``✖`` critical) so a stalled
worker or a diverging loss stands out in a long list; a line too long is cut with an ellipsis.
"""

from __future__ import annotations

from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from ..colors import LEVEL_STYLES
from ..model import AlertView, RunModel
from . import fmt

LEVEL_ICONS = {"info": "·", "warning": "▲", "critical": "✖"}
SHOWN = 100  # the newest alerts drawn (the model keeps more)


def alert_text(alert: AlertView, *, color: str | None) -> Text:
    style = LEVEL_STYLES.get(alert.level, "")
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(fmt.clock(alert.time), style="dim")
    text.append(f" {LEVEL_ICONS.get(alert.level, '?')} ", style=style)
    text.append(alert.code, style=style)
    if alert.trial:
        text.append(f" {alert.trial}", style=color or "")
    text.append(f" {alert.message}")
    return text


class AlertsPanel(VerticalScroll):
    DEFAULT_CSS = """
    AlertsPanel {
        border: round $primary-darken-2;
        border-title-color: $text-muted;
        height: 1fr;
        scrollbar-size-vertical: 1;
        & > Static { width: 1fr; text-wrap: nowrap; text-overflow: ellipsis; }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "alerts"
        self._body = Static("", markup=False)
        self._shown: tuple | None = None
        self.lines: list[str] = []  # the plain text of each line shown, newest first

    def compose(self):
        yield self._body

    def show(self, model: RunModel, *, colors: dict) -> None:
        last = model.alerts[-1].seq if model.alerts else None
        key = (len(model.alerts), last)
        if key == self._shown:
            return
        self._shown = key
        newest = list(model.alerts)[-SHOWN:][::-1]
        counts = {lvl: sum(a.level == lvl for a in model.alerts) for lvl in LEVEL_ICONS}
        self.border_title = "alerts " + " ".join(
            f"{LEVEL_ICONS[lvl]}{n}" for lvl, n in counts.items() if n
        )
        if not newest:
            self.lines = []
            self._body.update(Text("no alerts", style="dim"))
            return
        texts = [alert_text(a, color=colors.get(a.trial)) for a in newest]
        self.lines = [t.plain for t in texts]
        self._body.update(Text("\n", no_wrap=True, overflow="ellipsis").join(texts))
