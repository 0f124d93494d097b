"""The pipeline strip: every stage of the run in order, with its status (colour and icon),
duration, attempt and the short sha of its last commit on the run branch."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..colors import STAGE_ICONS, STAGE_STYLES
from ..model import RunModel, StageView
from . import fmt


def stage_text(stage: StageView, *, now: float) -> Text:
    """One stage: ``● train finished 2m13s #2 a1b2c3d``."""
    style = STAGE_STYLES.get(stage.status, "")
    text = Text()
    text.append(f"{STAGE_ICONS.get(stage.status, '?')} {stage.name}", style=style)
    text.append(f" {stage.status}", style=style)
    if stage.started is not None:
        text.append(f" {fmt.duration(stage.duration(now))}")
    if stage.attempt and stage.attempt > 1:
        text.append(f" #{stage.attempt}", style="bold #f28e2b")
    if stage.commit:
        text.append(f" {stage.commit[:7]}", style="#b07aa1")
    return text


class StageStrip(Static):
    DEFAULT_CSS = """
    StageStrip {
        height: auto;
        max-height: 5;
        border: round $primary-darken-2;
        border-title-color: $text-muted;
        padding: 0 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self.border_title = "pipeline"
        self._shown: tuple | None = None

    def show(self, model: RunModel, *, now: float) -> None:
        stages = list(model.stages.values())
        running = any(s.status == "running" for s in stages)
        key = (
            tuple((s.name, s.status, s.started, s.ended, s.attempt, s.commit) for s in stages),
            int(now) if running else None,
        )
        if key == self._shown:
            return
        self._shown = key
        if not stages:
            self.update(Text("no stage has started yet", style="dim"))
            return
        self.update(Text("  →  ", style="dim").join(stage_text(s, now=now) for s in stages))
