"""Per-trial progress: one row per trial (or per stage's own work when it has no trials).

Each row: a pin mark, the trial id in its stable colour, a bar of epochs done over epochs
planned, the percentage, ``epoch/epochs``, the last step, and the ETA at the recent epoch
rate (``TrialView.eta_s``, counted down since the last epoch ended), or the trial's state
when it is not running. The list is a
``ListView``: up/down highlight a trial, which ``p`` (the run screen's binding) pins.

A stage's own row is left out once the stage has trials of its own (the compare stage's
fan-out task says nothing the trials do not).
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import ListItem, ListView, Static

from ..colors import STAGE_STYLES
from ..model import RunModel, TrialView
from . import fmt

BAR_WIDTH = 12
NAME_WIDTH = 10


def visible_trials(model: RunModel) -> list[TrialView]:
    """The trials to show, in the order they first appeared."""
    with_trials = {v.stage for k, v in model.trials.items() if v.stage is not None and k != v.stage}
    return [v for k, v in model.trials.items() if not (k == v.stage and k in with_trials)]


def bar_text(fraction: float | None, *, width: int, color: str) -> Text:
    """A bar in half-cell steps: ``━━━━╸───``; all dim when the fraction is unknown."""
    text = Text()
    halves = 0 if fraction is None else round(max(0.0, min(1.0, fraction)) * width * 2)
    full, half = divmod(halves, 2)
    text.append("━" * full, style=color)
    if half:
        text.append("╸", style=color)
    text.append("─" * (width - full - half), style="grey35")
    return text


def _compact_step(step: int | None) -> str:
    if step is None:
        return ""
    return f"s{step}" if step < 100_000 else f"s{step / 1000:.0f}k"


def eta_now(trial: TrialView, *, now: float) -> float | None:
    """Seconds left: the ETA at the last epoch's end, less the time since then."""
    eta = trial.eta_s()
    if eta is None or not trial.epoch_times:
        return eta
    return max(0.0, eta - max(0.0, now - trial.epoch_times[-1][0]))


def row_text(trial: TrialView, *, color: str, pinned: bool, eta: float | None) -> Text:
    name = str(trial.trial or "-")
    if len(name) > NAME_WIDTH:  # keep the end: "slowfast-s0" and "-s1" must stay apart
        keep = NAME_WIDTH - 1
        head = keep // 2
        name = name[:head] + "…" + name[len(name) - (keep - head) :]
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append("◆" if pinned else " ", style=color)
    text.append(name.ljust(NAME_WIDTH), style=f"bold {color}")
    text.append(" ")
    bar_color = "#e15759" if trial.status == "failed" else color
    text.append_text(bar_text(trial.fraction, width=BAR_WIDTH, color=bar_color))
    pct = "" if trial.fraction is None else f"{trial.fraction:.0%}"
    epochs = f"{trial.epoch or 0}/{trial.epochs}" if trial.epochs else str(trial.epoch or "")
    text.append(f" {pct:>4} {epochs:>5} {_compact_step(trial.step):>6} ")
    if trial.status == "running":
        text.append(fmt.duration(eta) if eta is not None else "…", style="bold")
    else:
        text.append("done" if trial.status == "finished" else trial.status,
                    style=STAGE_STYLES.get(trial.status, ""))  # fmt: skip
    if trial.attempt and trial.attempt > 1:
        text.append(f" #{trial.attempt}", style="bold #f28e2b")
    return text


class TrialRow(ListItem):
    """One trial's row; ``trial_id`` is the model's key."""

    DEFAULT_CSS = """
    TrialRow { height: 1; }
    TrialRow > Static { width: 1fr; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, trial_id: str | None) -> None:
        self._label = Static("", markup=False)
        super().__init__(self._label)
        self.trial_id = trial_id
        self.fraction: float | None = None
        self.epoch: int | None = None
        self.epochs: int | None = None
        self.step: int | None = None
        self.text = ""
        self._shown: tuple | None = None

    def show(self, trial: TrialView, *, color: str, pinned: bool, now: float) -> None:
        eta = eta_now(trial, now=now)
        key = (trial.status, trial.epoch, trial.epochs, trial.step, trial.attempt,
               None if eta is None else round(eta), pinned, color)  # fmt: skip
        if key == self._shown:
            return
        self._shown = key
        self.fraction, self.epoch, self.epochs, self.step = (
            trial.fraction, trial.epoch, trial.epochs, trial.step,
        )  # fmt: skip
        text = row_text(trial, color=color, pinned=pinned, eta=eta)
        self.text = text.plain
        self._label.update(text)


class TrialsPanel(ListView):
    DEFAULT_CSS = """
    TrialsPanel {
        border: round $primary-darken-2;
        border-title-color: $text-muted;
        height: 1fr;
        scrollbar-size-vertical: 1;
        &:focus { border: round $primary; }
        & > TrialRow.-highlight { background: #2a2f36; color: $foreground; text-style: none; }
        &:focus > TrialRow.-highlight {
            background: #33404f; color: $foreground; text-style: none;
        }
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.border_title = "trials"
        self._rows: dict[str | None, TrialRow] = {}

    def rows(self) -> dict[str | None, TrialRow]:
        """The rows by trial id, in order."""
        return dict(self._rows)

    def highlighted_trial(self) -> str | None:
        child = self.highlighted_child
        return child.trial_id if isinstance(child, TrialRow) else None

    def show(self, model: RunModel, *, colors: dict, pinned: set, now: float) -> None:
        if len(model.trials) != len(self._rows):  # trials only ever get added
            new = [TrialRow(key) for key in model.trials if key not in self._rows]
            self._rows.update((row.trial_id, row) for row in new)
            self.extend(new)
        trials = visible_trials(model)
        shown = {t.trial for t in trials}
        for key, row in self._rows.items():
            hide = key not in shown
            if row.disabled != hide:  # a stage's own row, once its trials appear
                row.disabled = hide
                row.display = not hide
        keys = list(self._rows)
        if trials and (self.index is None or keys[self.index] not in shown):
            self.index = keys.index(trials[0].trial)
        done = sum(t.status == "finished" for t in trials)
        title = f"trials {done}/{len(trials)} done"
        if title != self.border_title:
            self.border_title = title
        for t in trials:
            color = colors.get(t.trial, "white")
            self._rows[t.trial].show(t, color=color, pinned=t.trial in pinned, now=now)
