"""The results panel: what the puller has brought into ``results/<run-id>/``.

Files and bytes pulled, the last pull's time, the countdown to the next one (auto-pull on or
off: ``a`` toggles it, ``u`` pulls now), files the sync rules refused, and the reports there
are to open (``o``). The app gives a :class:`ResultsInfo` after each pull; until it does, the
panel shows the run's last ``sync`` event.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.text import Text
from textual.widgets import Static

from ..model import RunModel
from . import fmt


@dataclass(frozen=True)
class ResultsInfo:
    """The pulled results of one run, as the app's puller last saw them."""

    files: int
    bytes: int
    last_pull: float | None  # epoch seconds of the last pull, None before the first
    next_pull_in_s: float | None  # seconds to the next automatic pull when it was given
    auto: bool  # auto-pull on
    refused: list[str] = field(default_factory=list)  # "path (reason)" per refused file
    reports: list[str] = field(default_factory=list)  # report files to open, e.g. report.html


class ResultsPanel(Static):
    DEFAULT_CSS = """
    ResultsPanel {
        height: 4;
        border: round $primary-darken-2;
        border-title-color: $text-muted;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self.border_title = "results"
        self.info: ResultsInfo | None = None
        self._next_at: float | None = None
        self._shown: tuple | None = None

    def set_info(self, info: ResultsInfo, *, now: float) -> None:
        self.info = info
        self._next_at = None if info.next_pull_in_s is None else now + info.next_pull_in_s
        self._shown = None

    def show(self, model: RunModel, *, now: float) -> None:
        info = self.info
        sync = model.sync
        if info is None:
            refused = [" ".join(map(str, r)) if isinstance(r, list) else str(r)
                       for r in sync.refused]  # fmt: skip
            info = ResultsInfo(files=sync.files, bytes=sync.bytes, last_pull=sync.time,
                               next_pull_in_s=None, auto=False, refused=refused)  # fmt: skip
        next_in = None if self._next_at is None else max(0.0, self._next_at - now)
        key = (info, int(now), next_in is not None and int(next_in), sync.error)
        if key == self._shown:
            return
        self._shown = key
        t = Text(no_wrap=True, overflow="ellipsis")
        t.append(f"{info.files} files", style="bold")
        t.append(f" · {fmt.size(info.bytes)}")
        if info.last_pull is None:
            t.append(" · not pulled yet", style="dim")
        else:
            ago = fmt.age(now, info.last_pull)
            t.append(f" · last pull {fmt.clock(info.last_pull)} ({ago} ago)")
        if self.info is not None:
            if info.auto and next_in is not None:
                t.append(f" · next in {fmt.duration(next_in)}")
            t.append(" · auto-pull ")
            t.append("on" if info.auto else "off", style="bold #59a14f" if info.auto else "bold")
        if sync.error:
            t.append(f" · last pull failed: {sync.error}", style="#e15759")
        t.append("\n")
        if info.reports:
            t.append("open (o): ")
            t.append(" ".join(info.reports), style="underline")
            t.append("  ")
        if info.refused:
            t.append(f"{len(info.refused)} refused: ", style="#f28e2b")
            t.append(", ".join(info.refused[:3]) + (" …" if len(info.refused) > 3 else ""))
        elif not info.reports:
            t.append("nothing refused, no report yet", style="dim")
        self.update(t)
