"""The Runs screen: every run of the profile's cluster, newest first, one row each.

Columns: id, spec, branch, status (Ray's job status, coloured), current stage, progress %,
ETA, health, GPUs, started. The first four and the start time come from the Ray Jobs API
(``JobsClient.runs()``: the job's metadata); the run's progress, stage, ETA, health and GPUs
come from its events: the live model of the run opened in this session, else the pulled
``results/<run-id>/events.jsonl`` (read by its tail: only the bytes added since the last
refresh), else they stay ``-`` (a run never pulled). Runs that are only pulled (no job on
the cluster, or no cluster reachable) are listed too, their status taken from their events.

``/`` opens a filter: a regular expression (case-insensitive) matched against every column of
a row; ``escape`` clears it. Enter opens the highlighted run.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Static

from ..jobs import JobRecord
from .colors import HEALTH_STYLES, RUN_STYLES
from .feeds import EVENTS_FILE
from .model import Caps, RunModel
from .widgets import fmt

COLUMNS = ("run", "spec", "branch", "status", "stage", "progress", "ETA", "health", "GPUs",
           "started")  # fmt: skip
# Worst first: the health a row shows is its workers' worst.
HEALTH_ORDER = ("dead", "stalled", "failed", "ok", "finished")
_ROW_CAPS = Caps(log_lines=10, alerts=10, steps_per_trial=10)
_READ_MAX = 8 * 1024 * 1024  # bytes of a pulled events.jsonl read per refresh


@dataclass(frozen=True)
class RunRow:
    run_id: str
    spec: str = ""
    branch: str = ""
    status: str = "-"  # Ray's job status (RUNNING ...) or, for a pulled run, its events'
    stage: str = "-"
    progress: str = "-"
    eta: str = "-"
    health: str = "-"
    gpus: str = "-"
    started: float | None = None
    source: str = "cluster"  # "cluster": a Ray job; "pulled": only results/<run-id>/

    def cells(self) -> list[str]:
        when = time.strftime("%m-%d %H:%M", time.localtime(self.started)) if self.started else "-"
        return [self.run_id, self.spec, self.branch, self.status, self.stage, self.progress,
                self.eta, self.health, self.gpus, when]  # fmt: skip


def summarize(row: RunRow, model: RunModel) -> RunRow:
    """``row`` with the stage, progress, ETA, health and GPUs the run's events tell."""
    stage = model.current_stage()
    progress = model.progress()
    running = [t for t in model.trials.values() if t.status == "running"]
    etas = [e for e in (t.eta_s() for t in running) if e is not None]
    healths = {w.health for w in model.workers.values()}
    health = next((h for h in HEALTH_ORDER if h in healths), "-")
    gpus = sorted({g for t in running for g in t.gpu_ids})
    return replace(
        row,
        stage=f"{stage.name} {stage.status}" if stage else "-",
        progress=f"{progress:.0%}" if progress is not None else "-",
        eta=fmt.duration(max(etas)) if etas else "-",
        health=health,
        gpus=",".join(gpus) if gpus else "-",
    )


class _Tail:
    """One pulled events.jsonl read by its tail into a small model."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self._reset()

    def _reset(self) -> None:
        self.model = RunModel(self.run_id, caps=_ROW_CAPS)
        self.offset = 0
        self.rest = b""

    def read(self, path: Path) -> None:
        if path.stat().st_size < self.offset:  # replaced by a shorter file: read it again
            self._reset()
        with open(path, "rb") as f:
            f.seek(self.offset)
            data = self.rest + f.read(_READ_MAX)
        self.offset += len(data) - len(self.rest)
        *lines, self.rest = data.split(b"\n")
        for line in lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                self.model.apply(event)


class PulledRuns:
    """The runs in the results folder: a model per run from its pulled events (tails)."""

    def __init__(self, results: Path) -> None:
        self.results = Path(results)
        self._tails: dict[str, _Tail] = {}

    def model(self, run_id: str) -> RunModel | None:
        path = self.results / run_id / EVENTS_FILE
        try:
            if not path.is_file():
                return None
            tail = self._tails.setdefault(run_id, _Tail(run_id))
            tail.read(path)
        except OSError:
            return None
        return tail.model

    def local_ids(self) -> list[str]:
        try:
            return sorted(p.parent.name for p in self.results.glob(f"*/{EVENTS_FILE}"))
        except OSError:
            return []

    def _record(self, run_id: str) -> dict:
        """``results/<run-id>/run.json`` (what ``tether submit`` wrote), or {}."""
        try:
            record = json.loads((self.results / run_id / "run.json").read_text())
        except (OSError, ValueError):
            return {}
        return record if isinstance(record, dict) else {}

    def rows(self, records: list[JobRecord]) -> list[RunRow]:
        """A row per job (and per pulled run without one), newest first."""
        rows: dict[str, RunRow] = {}
        for r in records:
            m = r.metadata
            status = r.status + (f" r{r.attempt}" if r.attempt else "")
            rows[r.run_id] = RunRow(
                run_id=r.run_id, spec=m.get("spec", ""), branch=m.get("branch", ""),
                status=status, started=r.start_time,
            )  # fmt: skip
        for run_id in self.local_ids():
            if run_id not in rows:
                record = self._record(run_id)
                rows[run_id] = RunRow(
                    run_id=run_id, spec=str(record.get("spec") or ""),
                    branch=str(record.get("branch") or ""), source="pulled", status="pulled",
                )  # fmt: skip
        out = []
        for row in rows.values():
            model = self.model(row.run_id)
            if model is not None:
                ended = row.status.split(" ")[0] in ("STOPPED", "FAILED", "SUCCEEDED")
                row = summarize(row, model)
                if ended and model.status == "running":  # pulled before the job ended
                    row = replace(row, stage=f"{row.stage}*", health="-", eta="-", gpus="-")
                if row.source == "pulled":  # its status as its events last told it
                    row = replace(row, status=f"{model.status}*", started=model.started)
            out.append(row)
        return sorted(out, key=lambda r: (r.started or 0.0, r.run_id), reverse=True)


def status_style(status: str) -> str:
    """Ray's ``RUNNING``/``SUCCEEDED``/... or a pulled run's ``succeeded*``: its colour."""
    word = status.split(" ")[0].rstrip("*").lower()
    return RUN_STYLES.get(word, {"pending": "#76b7b2"}.get(word, ""))


class RunsScreen(Screen):
    """The runs table. The app feeds it with ``show_rows`` (from its refresh worker)."""

    DEFAULT_CSS = """
    RunsScreen #title { height: 1; padding: 0 1; background: $panel; text-style: bold; }
    RunsScreen #status { height: 1; padding: 0 1; color: $text-muted; }
    RunsScreen DataTable { height: 1fr; }
    RunsScreen #filter { dock: bottom; display: none; }
    RunsScreen #filter.-open { display: block; }
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("slash", "filter", "filter"),
        Binding("escape", "clear_filter", "clear filter", show=False),
        Binding("s", "act('stop')", "stop"),
        Binding("u", "act('pull')", "pull"),
        Binding("f", "act('fetch')", "fetch"),
        Binding("o", "act('open_report')", "report"),
        Binding("r", "act('rerun_failed')", "re-run failed"),
        Binding("c", "app.cluster", "cluster"),
        Binding("b", "app.branches", "branches"),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[RunRow] = []
        self.pattern: re.Pattern[str] | None = None
        self.note = "connecting…"

    def compose(self) -> ComposeResult:
        yield Static("tether watch: runs", id="title", markup=False)
        yield Static(self.note, id="status", markup=False)
        table: DataTable = DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        for name in COLUMNS:
            table.add_column(name, key=name)
        yield table
        yield Input(placeholder="filter: a regular expression over every column", id="filter")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one(DataTable).focus()

    # ------------------------------------------------------------------ data

    def set_note(self, text: str) -> None:
        self.note = text
        if self.is_mounted:
            self.query_one("#status", Static).update(Text(self._status_text()))

    def _status_text(self) -> str:
        shown = len(self.visible_rows())
        count = f"{shown} of {len(self.rows)} runs" if self.pattern else f"{len(self.rows)} runs"
        if any("*" in r.status or "*" in r.stage for r in self.rows):
            count += " (* as of the last pull)"
        where = f"  filter /{self.pattern.pattern}/" if self.pattern else ""
        return f"{count}{where}  ·  {self.note}"

    def visible_rows(self) -> list[RunRow]:
        if self.pattern is None:
            return self.rows
        return [r for r in self.rows if any(self.pattern.search(c) for c in r.cells())]

    def show_rows(self, rows: list[RunRow]) -> None:
        self.rows = rows
        if not self.is_mounted:
            return
        table = self.query_one(DataTable)
        keep = self.highlighted()
        table.clear()
        for row in self.visible_rows():
            cells = row.cells()
            styled = [Text(c) for c in cells]
            styled[3] = Text(cells[3], style=status_style(cells[3]))
            styled[7] = Text(cells[7], style=HEALTH_STYLES.get(cells[7], ""))
            table.add_row(*styled, key=row.run_id)
        if keep is not None:
            with contextlib.suppress(Exception):  # gone (filtered out): the cursor stays
                table.move_cursor(row=table.get_row_index(keep))
        self.query_one("#status", Static).update(Text(self._status_text()))

    def highlighted(self) -> str | None:
        table = self.query_one(DataTable)
        if table.row_count == 0:
            return None
        try:
            key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        except Exception:
            return None
        return key.value

    # ------------------------------------------------------------------ events

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        if event.row_key.value:
            self.app.open_run(event.row_key.value)

    def on_screen_resume(self) -> None:
        self.app.close_run()  # back from a run's screen: its feed stops

    def action_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.add_class("-open")
        box.value = self.pattern.pattern if self.pattern else ""
        box.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        try:
            self.pattern = re.compile(text, re.IGNORECASE) if text else None
        except re.error as exc:
            self.notify(
                f"/{text}/ is not a regular expression: {exc}; type it again (escape clears it)",
                severity="error",
            )
            return
        event.input.remove_class("-open")
        self.query_one(DataTable).focus()
        self.show_rows(self.rows)

    def action_clear_filter(self) -> None:
        box = self.query_one("#filter", Input)
        box.remove_class("-open")
        box.value = ""
        self.pattern = None
        self.query_one(DataTable).focus()
        self.show_rows(self.rows)

    def action_act(self, action: str) -> None:
        run_id = self.highlighted()
        if run_id is None:
            self.notify("no run is highlighted: wait for the table to fill", severity="warning")
            return
        self.app.perform(action, run_id=run_id)
