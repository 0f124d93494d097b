"""Health per worker: ok / stalled / dead / finished / failed, the age of its last heartbeat
(alive?) and of its last progress (progressing?), host, pid, resident memory and, where the
heartbeat carries them, each GPU's utilisation and memory.

"alive but not progressing" is the hang that matters, so the two ages sit side by side. Rows
are keyed by worker id and updated cell by cell (ages change every second).
"""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from ..colors import HEALTH_STYLES
from ..model import RunModel, WorkerView
from . import fmt

# Rows needing attention first: stalled, dead, failed, then the working, then the done.
HEALTH_ORDER = {"stalled": 0, "dead": 1, "failed": 2, "ok": 3, "finished": 4}
COLUMNS = ("worker", "trial", "health", "beat", "progress", "host", "pid", "rss", "gpu")


def gpu_text(gpus: list | None) -> str:
    """``0:87% 10.2/80G  1:12% 1.1/80G``; ``-`` without a GPU."""
    if not gpus:
        return "-"
    parts = []
    for g in gpus:
        if not isinstance(g, dict):
            continue
        util = g.get("util_pct")
        used, total = g.get("mem_used_mb"), g.get("mem_total_mb")
        piece = f"{g.get('index', '?')}:"
        piece += "-" if util is None else f"{util:.0f}%"
        if used is not None:
            piece += f" {used / 1024:.1f}"
            piece += f"/{total / 1024:.0f}G" if total else "G"
        parts.append(piece)
    return "  ".join(parts) or "-"


def worker_cells(w: WorkerView, *, now: float, color: str | None) -> tuple:
    """The cells of one worker's row, in :data:`COLUMNS` order."""
    return (
        Text(w.worker[:14]),
        Text(w.trial or w.stage or "-", style=color or ""),
        Text(w.health, style=HEALTH_STYLES.get(w.health, "")),
        Text(fmt.age(now, w.last_heartbeat), justify="right"),
        Text(fmt.age(now, w.last_progress), justify="right"),
        Text((w.host or "-")[:16]),
        Text("-" if w.pid is None else str(w.pid), justify="right"),
        Text("-" if w.rss_mb is None else fmt.size(w.rss_mb * 1024 * 1024), justify="right"),
        Text(gpu_text(w.gpus)),
    )


class HealthTable(DataTable):
    DEFAULT_CSS = """
    HealthTable {
        height: 9;
        border: round $primary-darken-2;
        border-title-color: $text-muted;
        scrollbar-size-vertical: 1;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id, cursor_type="none", zebra_stripes=True, show_cursor=False)
        self.border_title = "workers"
        self.can_focus = False
        self._cells: dict[str, tuple] = {}
        self._order: tuple = ()

    def on_mount(self) -> None:
        for name in COLUMNS:
            self.add_column(name, key=name)

    def health_of(self, worker: str) -> str:
        """The health shown for ``worker`` (its row's plain text)."""
        return str(self.get_cell(worker, "health"))

    def show(self, model: RunModel, *, now: float, colors: dict) -> None:
        counts: dict[str, int] = {}
        for wid, w in model.workers.items():
            counts[w.health] = counts.get(w.health, 0) + 1
            cells = worker_cells(w, now=now, color=colors.get(w.trial or w.stage))
            old = self._cells.get(wid)
            if old is None:
                self.add_row(*cells, key=wid)
            else:
                for name, new, was in zip(COLUMNS, cells, old, strict=True):
                    if new != was:
                        self.update_cell(wid, name, new)
            self._cells[wid] = cells
        order = tuple((wid, w.health) for wid, w in model.workers.items())
        if order != self._order:
            self._order = order
            self.sort("health", key=lambda h: HEALTH_ORDER.get(str(h), 9))
        title = "workers " + " ".join(
            f"{h} {n}" for h, n in sorted(counts.items(), key=lambda c: HEALTH_ORDER.get(c[0], 9))
        )
        if title != self.border_title:
            self.border_title = title
