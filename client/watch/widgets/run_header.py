"""The run screen's top line: run id, status, current stage, progress, elapsed time, and the
``offline`` mark when the screen replays a pulled ``events.jsonl``."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from ..colors import RUN_STYLES, STAGE_STYLES
from ..model import RunModel
from . import fmt


class RunHeader(Static):
    DEFAULT_CSS = """
    RunHeader {
        height: 1;
        width: 1fr;
        background: $panel;
        padding: 0 1;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__("", id=id, markup=False)
        self._shown: tuple | None = None
        self.offline = False

    def show(self, model: RunModel, *, now: float) -> None:
        """Render from the model; nothing is redrawn when no shown value changed."""
        stage = model.current_stage()
        progress = model.progress()
        end = model.ended or now
        elapsed = None if model.started is None else end - model.started
        key = (
            model.run_id, model.status, stage and (stage.name, stage.status), progress,
            fmt.duration(elapsed), self.offline, model.last_seq,
        )  # fmt: skip
        if key == self._shown:
            return
        self._shown = key
        text = Text(no_wrap=True, overflow="ellipsis")
        text.append("tether ", style="bold")
        text.append(model.run_id, style="bold")
        text.append("  ")
        text.append(model.status, style=RUN_STYLES.get(model.status, "bold"))
        if stage is not None:
            text.append("  stage ")
            text.append(stage.name, style=STAGE_STYLES.get(stage.status, ""))
        text.append("  progress ")
        text.append("-" if progress is None else f"{progress:.0%}", style="bold")
        text.append(f"  elapsed {fmt.duration(elapsed)}")
        text.append(f"  seq {model.last_seq}", style="dim")
        if model.error:
            text.append("  ")
            text.append(model.error, style="#e15759")
        if self.offline:
            text.append("  ")
            text.append(" OFFLINE ", style="bold reverse #edc948")
        self.update(text)
