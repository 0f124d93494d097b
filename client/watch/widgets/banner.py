"""The connection banner: why the data on screen may be old.

Hidden while the stream is connected. ``reconnecting (since 14:02:11)`` or ``stream failed``
with the data's age (the time since the last event) while the rest of the screen is dimmed;
``offline`` when the screen replays a pulled ``events.jsonl``.
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from . import fmt

STALE_STATES = ("reconnecting", "failed")


class ConnectionBanner(Static):
    DEFAULT_CSS = """
    ConnectionBanner {
        height: 1;
        width: 1fr;
        padding: 0 1;
        display: none;
        text-wrap: nowrap;
        text-overflow: ellipsis;
        &.-reconnecting { display: block; background: #5c3d00; color: #ffd27a; }
        &.-failed { display: block; background: #5c1414; color: #ffb3b3; }
        &.-connecting { display: block; background: $panel; color: $text-muted; }
        &.-offline { display: block; background: #3d3a1a; color: #edc948; }
        &.-ended.-why { display: block; background: $panel; color: $text-muted; }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self.state = "connecting"
        self.since: float | None = None
        self.reason: str | None = None
        self.source = "the pulled events.jsonl"  # what an offline screen replays
        self._shown: tuple | None = None

    @property
    def stale(self) -> bool:
        return self.state in STALE_STATES

    def set_state(self, state: str, since: float | None, reason: str | None) -> None:
        for old in ("connecting", "connected", "reconnecting", "ended", "failed", "offline"):
            self.remove_class(f"-{old}")
        self.state, self.since, self.reason = state, since, reason
        self.add_class(f"-{state}")
        self.set_class(bool(reason), "-why")  # an ended stream shows only when it says why
        self._shown = None

    def show(self, *, now: float, last_event: float | None) -> None:
        key = (self.state, self.since, self.reason, fmt.age(now, last_event))
        if key == self._shown:
            return
        self._shown = key
        text = Text(no_wrap=True, overflow="ellipsis")
        if self.state == "reconnecting":
            text.append(f"▲ reconnecting (since {fmt.clock(self.since)})", style="bold")
            text.append(f"  data {fmt.age(now, last_event)} old, kept on screen")
        elif self.state == "failed":
            text.append("✖ stream failed", style="bold")
            text.append(f"  data {fmt.age(now, last_event)} old")
        elif self.state == "connecting":
            text.append("connecting to the run's event stream…")
        elif self.state == "offline":
            text.append("offline", style="bold")
            text.append(f"  {self.reason or f'replaying {self.source}'}")
            text.append(f"  last event {fmt.clock(last_event)}")
        elif self.state == "ended":
            text.append("stream ended", style="bold")
        if self.reason and self.state != "offline":
            text.append(f"  ({self.reason})")
        self.update(text)
