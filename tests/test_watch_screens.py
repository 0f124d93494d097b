"""The Run and Compare screens of ``tether watch``, drawn from fixed event files.

The files in tests/data/watch/ (written by make_events.py there) are replayed into a real
RunModel; the screens are mounted in a tiny App with Textual's Pilot at 120x40. Expected
values (commit shas, ETAs, mean ± std, alert counts) are computed here from the raw events,
not from the model or the widgets. Snapshot tests (pytest-textual-snapshot) pin the look of
the live run screen, the stale banner, the offline mark and the compare screen; every clock
is fixed, so ages and countdowns never move.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import statistics
import time
from pathlib import Path

import pytest
from textual.app import App

from tether.client.watch.colors import dimmed, trial_colors
from tether.client.watch.compare_screen import CompareScreen
from tether.client.watch.model import RunModel
from tether.client.watch.run_screen import RunScreen
from tether.client.watch.widgets.results_panel import ResultsInfo
from tether.cluster.events import validate_event

DATA = Path(__file__).parent / "data" / "watch"
_spec = importlib.util.spec_from_file_location("watch_make_events", DATA / "make_events.py")
make_events = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(make_events)

COMPARE_FILE, TRAIN_FILE = DATA / "compare_midway.jsonl", DATA / "train_finished.jsonl"
SIZE = (120, 40)


@pytest.fixture(autouse=True)
def utc(monkeypatch):
    """Clock times (14:02:11) are local: pin the zone so the snapshots match anywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def model_of(path: Path, *, upto: int | None = None) -> RunModel:
    evs = events(path)
    model = RunModel(evs[0]["run"])
    model.apply_all(evs[:upto])
    return model


class ScreenApp(App):
    """The screen under test as the app's only screen; records what it asks the app to do."""

    TITLE = "tether watch"

    def __init__(self, screen) -> None:
        super().__init__()
        self.test_screen = screen
        self.requested: list[str] = []

    def get_default_screen(self):
        return self.test_screen

    def on_run_screen_action_requested(self, message: RunScreen.ActionRequested) -> None:
        self.requested.append(message.action)


def live_screen(model: RunModel) -> RunScreen:
    screen = RunScreen(model, clock=lambda: make_events.COMPARE_NOW)
    screen.set_connection("connected", make_events.T0, None)
    screen.set_results(
        ResultsInfo(
            files=14, bytes=187_392, last_pull=make_events.T0 + 594, next_pull_in_s=54.0,
            auto=True, refused=["compare/i3d-s0/checkpoint.pt (over the 50 MB size cap)"],
            reports=["compare/comparison.html"],
        )
    )  # fmt: skip
    return screen


# --------------------------------------------------------------------------- the event files


def test_the_event_files_follow_the_schema_and_are_what_the_script_writes(tmp_path):
    for path, build in ((COMPARE_FILE, make_events.compare_midway),
                        (TRAIN_FILE, make_events.train_finished)):  # fmt: skip
        evs = events(path)
        assert [e["seq"] for e in evs] == list(range(1, len(evs) + 1))
        for e in evs:
            validate_event(e)
        expected = [json.loads(json.dumps(e)) for e in build().stored()]
        assert evs == expected, f"{path.name} is stale: run tests/data/watch/make_events.py"


# --------------------------------------------------------------------------- the run screen


def test_run_screen_shows_stages_trials_health_and_alerts_and_follows_new_events():
    evs = events(COMPARE_FILE)
    commits = {e["stage"]: e["commit"] for e in evs if e.get("code") == "git:committed"}
    alerts = [e for e in evs if e["kind"] == "alert"]
    # i3d-s2's ETA at its recent rate, from its epoch ends: (10 - e1) * (t1 - t0) / (e1 - e0),
    # less the time since its last epoch ended
    ends = [(e["time"], e["epoch"]) for e in evs
            if e["kind"] == "progress" and e.get("epoch_end") and e["trial"] == "i3d-s2"]  # fmt: skip
    (t0, e0), (t1, e1) = ends[0], ends[-1]
    eta_s = (10 - e1) * (t1 - t0) / (e1 - e0) - (make_events.COMPARE_NOW - t1)
    cut = next(i for i, e in enumerate(evs) if e.get("trial") == "i3d-s2" and e.get("epoch") == 2)

    model = model_of(COMPARE_FILE, upto=cut)
    screen = live_screen(model)
    app = ScreenApp(screen)

    async def main():
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            rows = screen.trials.rows()
            assert rows["i3d-s2"].epoch == 1 and rows["i3d-s2"].epochs == 10
            assert rows["i3d-s2"].fraction == pytest.approx(0.1)

            model.apply_all(evs[cut:])  # the rest arrives: the screen follows
            screen.update_view()
            await pilot.pause()
            strip = str(screen.stages.render())
            assert f"data finished 30s {commits['data'][:7]}" in strip
            assert "compare running" in strip and commits["compare"][:7] in strip
            rows = screen.trials.rows()
            assert "compare" not in [r for r, row in rows.items() if row.display]
            assert (rows["i3d-s2"].epoch, rows["i3d-s2"].fraction) == (3, pytest.approx(0.3))
            assert rows["i3d-s0"].fraction == 1.0 and rows["cnn-s0"].text.endswith("failed")
            assert rows["i3d-s2"].text.endswith(f"{int(eta_s // 60)}m{int(eta_s % 60):02d}s")
            stalled = make_events.worker_id("magvit-s2")
            assert screen.health.health_of(stalled) == "stalled"
            assert screen.health.health_of(make_events.worker_id("cnn-s0")) == "failed"
            assert screen.health.get_row_index(stalled) == 0  # trouble first
            assert len(screen.alerts.lines) == len(alerts)
            assert "health:stalled magvit-s2" in screen.alerts.lines[0]  # newest first
            header = str(screen.header.render())
            assert model.run_id in header and "running" in header and "stage compare" in header
            results = str(screen.results.render())
            assert "14 files" in results and "next in 54s" in results and "1 refused" in results

            screen.set_connection("reconnecting", make_events.T0 + 595, "connection reset")
            await pilot.pause()
            banner = str(screen.banner.render())
            assert "reconnecting (since 22:23:15)" in banner and "data 6s old" in banner
            assert screen.query_one("#body").has_class("-stale")
            screen.set_connection("connected", make_events.T0 + 599, None)
            await pilot.pause()
            assert not screen.banner.display and not screen.query_one("#body").has_class("-stale")

            for key in ("s", "u", "a", "f", "o", "r", "c"):
                await pilot.press(key)
            await pilot.pause()
            assert app.requested == ["stop", "pull", "toggle_autopull", "fetch", "open_report",
                                     "rerun_failed", "compare"]  # fmt: skip

    asyncio.run(main())


def test_log_search_filters_and_highlights_and_pinning_changes_the_charts_emphasis():
    evs = events(COMPARE_FILE)
    log_lines = [e["line"] for e in evs if e["kind"] == "log"]
    nccl = [line for line in log_lines if "NCCL" in line]
    assert len(nccl) == 1
    model = model_of(COMPARE_FILE)
    screen = live_screen(model)
    app = ScreenApp(screen)
    colors = trial_colors(model.trial_names())

    async def main():
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            await pilot.press("l")
            await pilot.pause()
            assert len(screen.log_panel.lines) == len(log_lines)
            await pilot.press("slash", *"NCCL")
            await pilot.pause()
            assert [line.split(" ", 2)[2] for line in screen.log_panel.lines] == nccl
            await pilot.press("escape")  # clears the search, stays on the screen
            await pilot.pause()
            assert screen.log_panel.pattern is None
            assert len(screen.log_panel.lines) == len(log_lines)
            await pilot.press("slash", *"s=0\\.[4]", "enter")  # a regex, [ ] kept literal
            await pilot.pause()
            matching = [x for x in log_lines if "s=0.4" in x]
            assert len(screen.log_panel.lines) == len(matching) > 0
            await pilot.press("l")  # back to the charts; the search stays
            await pilot.pause()

            loss = screen.charts.charts["loss"]
            assert loss.line_styles["i3d-s0"] == colors["i3d-s0"]  # nothing pinned
            for _ in range(len(model.trials)):
                if screen.trials.highlighted_trial() == "magvit-s0":
                    break
                await pilot.press("down")
            await pilot.press("p")
            await pilot.pause()
            assert screen.pinned == {"magvit-s0"}
            assert loss.line_styles["magvit-s0"] == f"bold {colors['magvit-s0']}"
            assert loss.line_styles["i3d-s0"] == dimmed(colors["i3d-s0"])
            assert list(loss.line_styles)[-1] == "magvit-s0"  # drawn last, on top
            assert screen.trials.rows()["magvit-s0"].text.startswith("◆")
            await pilot.press("p")
            await pilot.pause()
            assert loss.line_styles["i3d-s0"] == colors["i3d-s0"] and not screen.pinned

    asyncio.run(main())


# --------------------------------------------------------------------------- the compare screen


def test_compare_screen_gives_mean_and_std_per_extractor_and_counts_seeds():
    evs = events(COMPARE_FILE)
    values: dict[str, list[float]] = {}
    status: dict[str, str] = {}
    for e in evs:
        if e["kind"] == "metric" and e["name"] == "test.accuracy":
            values.setdefault(e["trial"].rsplit("-s", 1)[0], []).append(e["value"])
        if e["kind"] == "stage" and e.get("trial"):
            status[e["trial"]] = e["status"]
    model = model_of(COMPARE_FILE)
    screen = CompareScreen(model, metric="test.accuracy", mode="max")
    app = ScreenApp(screen)

    async def main():
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            await app.workers.wait_for_complete()
            await pilot.pause()
            table = screen.table
            assert [r.extractor for r in table.rows_shown] == ["i3d", "magvit", "cnn"]
            for name, vals in values.items():
                cells = [str(c) for c in table.get_row(name)]
                mean, std = statistics.mean(vals), statistics.stdev(vals)
                assert cells[2] == f"{mean:.4f} ± {std:.4f}"
                assert cells[3] == str(len(vals))
                running = sum(
                    s == "started" and t.startswith(name + "-") for t, s in status.items()
                )
                assert cells[5] == str(running)
                assert cells[7] == f"{len(vals)} seeds: the spread is not known"
            cnn = [str(c) for c in table.get_row("cnn")]
            assert cnn[0] == "-" and cnn[2] == "-" and cnn[4] == "1"
            assert str(table.get_row("i3d")[0]) == "1"  # the best mean leads the first tier
            header = str(screen.header.render())
            assert "4/7 finished" in header and "1 failed" in header and "2 running" in header

            # one more seed of magvit finishes: the table follows
            n = model.last_seq
            model.apply({"seq": n + 1, "time": make_events.COMPARE_NOW, "run": model.run_id,
                         "trial": "magvit-s2", "stage": "compare", "worker": None,
                         "kind": "metric", "name": "test.accuracy", "value": 0.85,
                         "step": None, "epoch": None})  # fmt: skip
            model.apply({"seq": n + 2, "time": make_events.COMPARE_NOW, "run": model.run_id,
                         "trial": "magvit-s2", "stage": "compare", "worker": None,
                         "kind": "stage", "status": "finished"})  # fmt: skip
            screen.update_view()
            await app.workers.wait_for_complete()
            await pilot.pause()
            vals = [*values["magvit"], 0.85]
            cells = [str(c) for c in table.get_row("magvit")]
            assert cells[2] == f"{statistics.mean(vals):.4f} ± {statistics.stdev(vals):.4f}"
            assert cells[3] == "3" and cells[7] == ""  # 3 seeds: no warning

    asyncio.run(main())


# --------------------------------------------------------------------------- snapshots


def test_snapshot_run_screen_live(snap_compare):
    assert snap_compare(ScreenApp(live_screen(model_of(COMPARE_FILE))), terminal_size=SIZE)


def test_snapshot_run_screen_reconnecting(snap_compare):
    screen = live_screen(model_of(COMPARE_FILE))
    screen.set_connection("reconnecting", make_events.T0 + 595, "ssh: connection reset by peer")
    assert snap_compare(ScreenApp(screen), terminal_size=SIZE)


def test_snapshot_run_screen_offline(snap_compare):
    screen = RunScreen(model_of(TRAIN_FILE), clock=lambda: make_events.TRAIN_NOW, offline=True)
    assert snap_compare(ScreenApp(screen), terminal_size=SIZE)


def test_snapshot_compare_screen(snap_compare):
    async def computed(pilot):
        await pilot.pause()
        await pilot.app.workers.wait_for_complete()

    screen = CompareScreen(model_of(COMPARE_FILE))
    assert snap_compare(ScreenApp(screen), terminal_size=SIZE, run_before=computed)
