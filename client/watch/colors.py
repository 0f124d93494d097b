"""The colours of ``tether watch``: one stable colour per trial, and the status colours.

A trial's colour is fixed by the order trials first appear in the run (the order of
``RunModel.trials``, which only grows), so a trial keeps its colour on every screen and for
the whole session: its progress bar, its chart lines and its rows in the compare table agree.
The palette is ten colours that stay apart on a dark and a light background (Tableau 10);
past ten, colours repeat.

Status colours (stages, trials, worker health, alert levels) are rich style strings, used by
every screen, so "stalled" looks the same in the health table and in an alert.
"""

from __future__ import annotations

from collections.abc import Iterable

from textual.color import Color

PALETTE: tuple[str, ...] = (
    "#4e79a7",  # blue
    "#f28e2b",  # orange
    "#e15759",  # red
    "#76b7b2",  # teal
    "#59a14f",  # green
    "#edc948",  # yellow
    "#b07aa1",  # purple
    "#ff9da7",  # pink
    "#9c755f",  # brown
    "#bab0ac",  # grey
)

# What a line that is not pinned fades towards (while some other trial is pinned).
DIM_TOWARDS = "#303030"
DIM_AMOUNT = 0.7

STAGE_STYLES: dict[str, str] = {
    "pending": "grey58",
    "running": "bold #4e9ded",
    "finished": "bold #59a14f",
    "failed": "bold #e15759",
}
STAGE_ICONS: dict[str, str] = {"pending": "○", "running": "◐", "finished": "●", "failed": "✖"}

HEALTH_STYLES: dict[str, str] = {
    "ok": "bold #59a14f",
    "stalled": "bold #f28e2b",
    "dead": "bold #e15759",
    "finished": "#4e79a7",
    "failed": "bold #e15759",
}

LEVEL_STYLES: dict[str, str] = {
    "info": "#76b7b2",
    "warning": "bold #f28e2b",
    "critical": "bold #e15759",
}

RUN_STYLES: dict[str, str] = {
    "running": "bold #4e9ded",
    "succeeded": "bold #59a14f",
    "finished": "bold #59a14f",
    "failed": "bold #e15759",
    "stopped": "bold #edc948",
}


def trial_color(index: int) -> str:
    """The colour of the ``index``-th trial to appear (0 first)."""
    return PALETTE[index % len(PALETTE)]


def trial_colors(names: Iterable[str | None]) -> dict[str | None, str]:
    """Each name's colour by its position in ``names`` (give ``model.trial_names()``)."""
    return {name: trial_color(i) for i, name in enumerate(names)}


def dimmed(color: str) -> str:
    """``color`` faded towards the background: a line that is not pinned."""
    return Color.parse(color).blend(Color.parse(DIM_TOWARDS), DIM_AMOUNT).hex


def style_for(table: dict[str, str], key: str | None, default: str = "") -> str:
    return table.get(key or "", default)
