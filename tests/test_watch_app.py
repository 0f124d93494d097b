"""`tether watch`: the app shell (client/watch/app.py and its screens), the plain watch and
the offline replay, against real runs on the local Ray cluster (embedded local profile, real
git). Pilot tests (`App.run_test()`) drive the app by its keys and wait on its state, never
on fixed sleeps; the screen is read as text from Textual's compositor.

- A live run: the runs table fills and filters; the run screen shows the stage strip and the
  metrics advancing; the worker that stops reporting (heartbeats on) turns `stalled` on
  screen; the Cluster and Branches screens read the real cluster and repository; pull-now
  brings files into `results/<run-id>/`; stop asks first, then Ray says STOPPED.
- Over the test sshd: the connection killed mid-watch; the banner says reconnecting; after
  the reconnection the app holds every event exactly once (asserted on its model).
- Plain lines through a pipe (under 100 columns, exit 0 at the run's end), the offline replay
  of the pulled events.jsonl (plain and in the app, marked offline), and the fallback to it
  when no cluster answers.
- The throttle of the plain watch and the batcher of the feeds, with the test's clock.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import git
from ray.job_submission import JobStatus, JobSubmissionClient
from rich.cells import cell_len
from test_events_stream import _emit_spec, _kill_connections
from test_submit import laptop  # noqa: F401  (the fixture: an ssh profile over the test sshd)

from tether.client.cli import main as tether
from tether.client.config import load_config
from tether.client.localcluster import free_port
from tether.client.watch.feeds import Batcher
from tether.client.watch.plain import WIDTH, Throttle, clip

# A user's training loop: one progress report per epoch (loss, accuracy), then silence while
# its heartbeats go on (a stuck dataloader looks like this), for `after` seconds.
STEPS = """\
import json, sys, time

def tether(**event):
    print("TETHER " + json.dumps(event), flush=True)

n, pause, after = int(sys.argv[1]), float(sys.argv[2]), float(sys.argv[3])
for step in range(1, n + 1):
    tether(step=step, epoch=step, epoch_end=True,
           metrics={"loss": 1.0 / step, "accuracy": step / n})
    print(f"step {step} [done]", flush=True)
    time.sleep(pause)
print("stuck now", flush=True)
time.sleep(after)
"""


def _profile(repo: Path, dashboard_url: str, *, stall_s: float = 2) -> None:
    port = dashboard_url.rsplit(":", 1)[1]
    (repo / "tether.toml").write_text(
        f'[profiles.local]\nkind = "local"\ndashboard_port = {port}\n'
        f"[heartbeat]\ninterval_s = 1\nstall_timeout_s = {stall_s}\n"
    )


def _spec(repo: Path, *, steps: int, pause: float, after: float) -> None:
    (repo / "steps.py").write_text(STEPS)
    command = f"{sys.executable} steps.py {steps} {pause} {after}"
    (repo / "steps.toml").write_text(
        f'name = "steps"\n[[stages]]\nname = "train"\ncommand = \'{command}\'\n'
    )
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "steps spec", cwd=repo)


@pytest.fixture
def repo(git_repo, ray_cluster, monkeypatch) -> Path:
    repo = git_repo.path
    _profile(repo, ray_cluster.dashboard_url)
    monkeypatch.chdir(repo)
    monkeypatch.setenv("COLUMNS", "200")
    return repo


def _submit_spec(capsys, spec: str) -> dict:
    capsys.readouterr()
    assert tether(["submit", spec, "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _submit(capsys) -> dict:
    return _submit_spec(capsys, "steps.toml")


def _wait_job(dashboard: str, job_id: str, want: Callable[[JobStatus], bool], timeout=240):
    client = JobSubmissionClient(dashboard)
    deadline = time.monotonic() + timeout
    while not want(status := client.get_job_status(job_id)):
        assert time.monotonic() < deadline, client.get_job_logs(job_id)[-3000:]
        time.sleep(0.5)
    return status


def screen_text(app) -> str:
    """What the terminal shows now, as plain text (notifications included)."""
    return "\n".join(strip.text for strip in app.screen._compositor.render_strips())


async def until(pilot, cond: Callable[[], object], what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}:\n{screen_text(pilot.app)}")
        await pilot.pause(0.1)


def _own_streams(run_id: str) -> list:
    """This process's children running the head-side stream of ``run_id``."""
    import psutil

    found = []
    for child in psutil.Process().children(recursive=True):
        try:
            argv = child.cmdline()
        except psutil.Error:
            continue
        if "tether.cluster.stream" in argv and run_id in argv and child.status() != "zombie":
            found.append(child)
    return found


def told(app, text: str) -> bool:
    """The app notified the user of something containing ``text``."""
    return any(text in message for _, message in app.notices)


def _step_on_screen(app) -> int:
    """The step count the trials panel shows for the `train` trial (`s12`)."""
    found = re.search(r"train\s+\S*.*?\bs(\d+)\b", screen_text(app))
    return int(found.group(1)) if found else 0


# --------------------------------------------------------------------------- a live run


def test_the_app_follows_a_live_run_then_pulls_and_stops_it(repo, ray_cluster, capsys):
    from tether.client.watch.app import WatchApp
    from tether.client.watch.run_screen import RunScreen
    from tether.client.watch.screens_branches import BranchesScreen
    from tether.client.watch.screens_cluster import ClusterScreen
    from tether.client.watch.screens_confirm import ConfirmScreen

    _spec(repo, steps=30, pause=0.4, after=120)
    sub = _submit(capsys)
    run_id, job_id = sub["run_id"], sub["job_id"]
    config, _ = load_config(cwd=repo)
    app = WatchApp(config=config, repo=repo, refresh_s=0.5, autopull=False)
    dest = repo / "results" / run_id

    async def scenario() -> None:
        async with app.run_test(size=(130, 42), notifications=True) as pilot:
            # The runs table fills from the Jobs API; `/` filters it by any column.
            await until(pilot, lambda: any(r.run_id == run_id for r in app.rows), "the row")
            row = next(r for r in app.rows if r.run_id == run_id)
            assert (row.spec, row.branch) == ("steps", sub["branch"])
            await until(pilot, lambda: run_id in screen_text(app), "the row on screen")
            await pilot.press("slash", *"nomatch-zz", "enter")
            assert app.runs_screen.visible_rows() == []
            await until(pilot, lambda: run_id not in screen_text(app), "the row filtered out")
            await pilot.press("slash", "ctrl+u", *"(", "enter")  # not a regex: said so
            await until(pilot, lambda: told(app, "is not a regular expression"), "bad regex")
            await pilot.press("ctrl+u", *run_id[-9:], "enter")
            assert [r.run_id for r in app.runs_screen.visible_rows()] == [run_id]
            await pilot.press("enter")  # the only row left: open it
            await until(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
            model = app.model
            assert model.run_id == run_id

            # The stage strip shows the stage running; the step and the epoch series advance.
            await until(
                pilot, lambda: "train running" in screen_text(app) and _step_on_screen(app) >= 3,
                "the stage strip and a few steps",
            )  # fmt: skip
            first, points = _step_on_screen(app), len(model.series("train", "loss"))
            await until(pilot, lambda: _step_on_screen(app) >= first + 3, "more steps")
            assert len(model.series("train", "loss")) > points
            assert (
                model.series("train", "accuracy")[-1][1] > model.series("train", "accuracy")[0][1]
            )

            # It stops reporting, its heartbeats go on: stalled, on screen.
            await until(
                pilot, lambda: any(w.health == "stalled" for w in model.workers.values()), "stall"
            )
            await until(pilot, lambda: "stalled" in screen_text(app), "stalled on screen")

            # The Cluster screen: the test cluster's nodes and its 4 logical GPUs.
            await pilot.press("C")
            await until(pilot, lambda: isinstance(app.screen, ClusterScreen), "cluster screen")
            await until(pilot, lambda: app.screen.info is not None, "the cluster's state")
            info = app.screen.info
            assert len(info.nodes) >= 1 and info.gpus is not None and info.gpus[1] == 4
            assert info.cpus is not None and info.cpus[0] >= 1  # the stalled stage holds one
            await until(pilot, lambda: "no prices configured" in screen_text(app), "no prices")
            await pilot.press("escape")

            # The Branches screen: the run's branch on the head, with its commits.
            await pilot.press("B")
            await until(pilot, lambda: isinstance(app.screen, BranchesScreen), "branches")
            screen = app.screen
            await until(pilot, lambda: sub["branch"] in [b.name for b in screen.branches], "b")
            await until(pilot, lambda: screen.commits.get(screen.highlighted()), "its commits")
            await pilot.press("escape")
            await until(pilot, lambda: isinstance(app.screen, RunScreen), "back on the run")

            # Pull now: the run's results land in results/<run-id>/.
            assert not (dest / "events.jsonl").exists()
            seq_before = model.last_seq
            await pilot.press("u")
            await until(pilot, lambda: (dest / "events.jsonl").is_file() and not app.pulling, "p")
            pulled = [json.loads(line) for line in (dest / "events.jsonl").read_text().splitlines()]
            assert pulled[0]["run"] == run_id and pulled[-1]["seq"] >= seq_before
            assert (dest / "PROGRESS.txt").is_file()
            await until(pilot, lambda: told(app, "pulled "), "the pull's notification")

            # Stop: asked first (cancel keeps it running), then Ray stops the job.
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "the question")
            await until(pilot, lambda: f"Stop run {run_id}?" in screen_text(app), "asked")
            await pilot.press("n")
            await until(pilot, lambda: isinstance(app.screen, RunScreen), "cancelled")
            client = JobSubmissionClient(ray_cluster.dashboard_url)
            assert client.get_job_status(job_id) == JobStatus.RUNNING
            await pilot.press("s")
            await until(pilot, lambda: isinstance(app.screen, ConfirmScreen), "asked again")
            await pilot.press("y")
            await until(
                pilot, lambda: client.get_job_status(job_id) == JobStatus.STOPPED, "Ray STOPPED"
            )
            await until(pilot, lambda: told(app, "Ray says STOPPED"), "said so")
            # No end event comes from a stopped job's monitor: the feed ends by Ray's word.
            await until(pilot, lambda: app.feed is None, "the feed closed")
            # ... and the head-side stream command it ran (a child of this process) with it.
            await until(pilot, lambda: not _own_streams(run_id), "the stream command ended")
            await pilot.press("q")

    asyncio.run(scenario())
    assert app.return_code == 0


def test_the_app_keeps_every_event_once_across_a_killed_ssh_connection(
    laptop,  # noqa: F811  (the fixture imported from test_submit: an ssh profile, the test sshd)
    sshd,
    ray_cluster,
    tmp_path,
    capsys,
):
    from tether.client.watch.app import WatchApp
    from tether.client.watch.run_screen import RunScreen

    repo, stop = laptop, tmp_path / "stop-emitting"
    _emit_spec(repo, stop=stop, most=1200)
    sub = _submit_spec(capsys, "emit.toml")
    config, _ = load_config(cwd=repo)
    app = WatchApp(config=config, repo=repo, run_id=sub["run_id"], refresh_s=1, autopull=False)
    states: list[str] = []

    async def scenario() -> None:
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await until(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
            await until(pilot, lambda: app.model.last_seq >= 25, "events", timeout=180)
            cut_at = app.model.last_seq
            assert _kill_connections(sshd.pid)

            def seen() -> str:
                state = app.feed_status.state if app.feed_status else ""
                if not states or states[-1] != state:
                    states.append(state)
                return state

            # The data stays, dimmed, under the banner; then the stream is back.
            await until(pilot, lambda: seen() == "reconnecting", "the reconnecting state")
            await until(pilot, lambda: "reconnecting (since" in screen_text(app), "the banner")
            assert app.model.last_seq >= cut_at  # nothing was dropped from the screen
            await until(pilot, lambda: seen() == "connected", "reconnected", timeout=120)
            await until(pilot, lambda: app.model.last_seq >= cut_at + 25, "events after the cut")
            stop.touch()  # the emitter ends, then the run
            await until(pilot, lambda: app.model.status == "succeeded", "the end", timeout=180)
            await pilot.press("q")

    asyncio.run(scenario())
    events_file = Path(sub["worktree"]) / "results" / sub["run_id"] / "events.jsonl"
    stored = [json.loads(line) for line in events_file.read_text().splitlines()]
    # Every event exactly once, in order: as many applied as stored, none twice, no gap.
    model = app.model
    assert model.last_seq == stored[-1]["seq"] == model.applied == len(stored)
    assert model.duplicates == 0 and model.gaps == 0
    assert "reconnecting" in states and states[-1] in ("connected", "ended")


# --------------------------------------------------------------------------- plain, offline


def _tether_cli(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    """The CLI in a subprocess, stdout a pipe (so: no terminal)."""
    return subprocess.run(
        [sys.executable, "-m", "tether.client.cli", *args],
        cwd=cwd, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def test_plain_lines_offline_replay_and_the_fallback_without_a_cluster(
    repo, ray_cluster, capsys, tmp_path
):
    from tether.client.watch.app import WatchApp
    from tether.client.watch.run_screen import RunScreen

    _spec(repo, steps=25, pause=0.05, after=0)
    sub = _submit(capsys)
    run_id = sub["run_id"]

    # No terminal: plain lines of the live stream, each under 100 columns, exit 0 at the end.
    res = _tether_cli("watch", run_id, cwd=repo)
    assert res.returncode == 0, res.stderr[-3000:]
    lines = res.stdout.splitlines()
    assert lines and all(cell_len(line) < 100 for line in lines), lines
    text = [re.sub(r"^\d\d:\d\d:\d\d  ", "", line) for line in lines]
    assert any(re.fullmatch(r"\[train\] started on \S+", t) for t in text), text
    assert "run succeeded" in text and "Traceback" not in res.stderr
    # Throttled: epochs may be folded into the next one shown, never out of order or lost.
    epochs = [t for t in text if t.startswith("[train] epoch ")]
    shown = [int(t.split()[2].rstrip(":")) for t in epochs]
    assert shown == sorted(set(shown)) and shown[-1] == 25, epochs
    assert epochs[-1].startswith("[train] epoch 25: loss=0.04 accuracy=1")
    assert not any("step" in t for t in text)  # steps and heartbeats are never line by line
    assert _wait_job(ray_cluster.dashboard_url, sub["job_id"], JobStatus.is_terminal) == (
        JobStatus.SUCCEEDED
    )

    # Pulled, then replayed with --offline: the same lines under the offline mark.
    capsys.readouterr()
    assert tether(["pull", run_id]) == 0
    events_file = repo / "results" / run_id / "events.jsonl"
    last_seq = json.loads(events_file.read_text().splitlines()[-1])["seq"]
    res = _tether_cli("watch", run_id, "--offline", cwd=repo)
    assert res.returncode == 0, res.stderr
    out = res.stdout.splitlines()
    assert out[0].startswith(f"offline: run {run_id}, events pulled at ")
    assert out[-1] == f"offline: {last_seq} events replayed; run succeeded"
    replayed = [re.sub(r"^\d\d:\d\d:\d\d  ", "", ln) for ln in out if "] epoch " in ln]
    assert [t.split(":")[0] for t in replayed] == [f"[train] epoch {n}" for n in range(1, 26)]
    assert all(cell_len(line) < 100 for line in out)

    # No cluster answers (a profile whose dashboard port is free): the pulled events, and a
    # clear error with a hint for a run never pulled.
    dead = tmp_path / "dead.toml"
    dead.write_text(f'[profiles.local]\nkind = "local"\ndashboard_port = {free_port()}\n')
    res = _tether_cli("--config", str(dead), "watch", run_id, cwd=repo)
    assert res.returncode == 0, res.stderr
    assert res.stdout.splitlines()[0].startswith(f"offline: run {run_id}")
    assert res.stderr.startswith("watch: offline, replaying the pulled events: cannot reach")
    res = _tether_cli("--config", str(dead), "watch", "never-pulled-1", cwd=repo)
    assert res.returncode == 2 and res.stdout == ""
    assert "error: cannot watch run never-pulled-1" in res.stderr
    assert "hint:" in res.stderr and "tether pull never-pulled-1" in res.stderr
    assert "Traceback" not in res.stderr

    # The app, offline: the run screen replays the pulled file, marked offline.
    config, _ = load_config(cwd=repo)
    app = WatchApp(config=config, repo=repo, run_id=run_id, offline=True)

    async def scenario() -> None:
        async with app.run_test(size=(120, 40), notifications=True) as pilot:
            await until(pilot, lambda: isinstance(app.screen, RunScreen), "the run screen")
            await until(
                pilot, lambda: app.feed_status is not None and app.feed_status.last_seq, "replay"
            )
            assert app.feed_status.state == "offline" and app.model.last_seq == last_seq
            assert app.model.status == "succeeded" and app.model.duplicates == 0
            await until(pilot, lambda: "offline" in screen_text(app).lower(), "the mark")
            await pilot.press("u")  # pulling needs the cluster: said, not crashed
            await until(pilot, lambda: told(app, "needs the cluster"), "the refusal")
            await pilot.press("escape")
            await until(pilot, lambda: app.screen is app.runs_screen, "the runs screen")
            await until(pilot, lambda: any(r.run_id == run_id for r in app.rows), "the row")
            row = next(r for r in app.rows if r.run_id == run_id)
            assert (row.status, row.spec, row.progress) == ("succeeded*", "steps", "100%")
            await pilot.press("q")

    asyncio.run(scenario())
    assert app.return_code == 0


# --------------------------------------------------------------------------- pieces


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_the_plain_throttle_folds_epochs_and_never_drops_a_stage_line():
    clock = FakeClock()
    throttle = Throttle(per_s=3, clock=clock)
    out = []
    for n in range(1, 11):  # ten epochs of one trial in one second
        out += throttle.offer(f"[t/train] epoch {n}", fold_key=("t", "train"))
    out += throttle.offer("[t/train] FAILED: boom")  # not foldable: waits its turn
    assert out == ["[t/train] epoch 1", "[t/train] epoch 2", "[t/train] epoch 3"]
    clock.now += 1.0
    assert throttle.due() == ["[t/train] epoch 10 (+6 earlier epochs)", "[t/train] FAILED: boom"]
    assert throttle.due() == [] and throttle.drain() == []
    # In a new second, lines go straight through again.
    clock.now += 1.0
    assert throttle.offer("[u/train] epoch 1", fold_key=("u", "train")) == ["[u/train] epoch 1"]

    wide = "界" * 80  # two columns each
    assert cell_len(clip(wide)) <= WIDTH and clip(wide).endswith("...")
    assert clip("short line") == "short line"


def test_the_batcher_delivers_every_event_once_in_order_in_bounded_batches():
    batches: list[list[dict]] = []
    done = threading.Event()

    def deliver(batch):
        batches.append(list(batch))
        if batch[-1]["seq"] == 1201:
            done.set()

    batcher = Batcher(deliver=deliver, batch_s=0.05, batch_max=500)
    for seq in range(1, 1201):
        batcher.add({"seq": seq})
    batcher.flush()  # what waits now, in order with the flusher's batches
    batcher.add({"seq": 1201})  # a lone event still goes out, after batch_s
    assert done.wait(30)
    batcher.close()
    seqs = [e["seq"] for b in batches for e in b]
    assert seqs == list(range(1, 1202))
    assert all(1 <= len(b) <= 500 for b in batches)


def test_watch_settings_cap_the_windows_and_a_bad_value_is_refused(tmp_path):
    from tether.client.errors import ConfigError
    from tether.client.watch.app import WatchApp

    good = tmp_path / "good.toml"
    good.write_text("[watch]\nlog_lines = 50\nalerts = 20\nsteps_per_trial = 30\n")
    config, _ = load_config(path=good)
    app = WatchApp(config=config, repo=tmp_path, offline=True)
    assert (app.caps.log_lines, app.caps.alerts, app.caps.steps_per_trial) == (50, 20, 30)

    bad = tmp_path / "bad.toml"
    bad.write_text("[watch]\nlog_lines = 5\nlog_line = 10\n")
    with pytest.raises(ConfigError) as err:
        load_config(path=bad)
    text = str(err.value)
    assert "bad.toml:2: watch.log_lines" in text and "bad.toml:3: watch.log_line" in text


def test_watch_without_a_terminal_needs_a_run(git_repo, monkeypatch):
    res = _tether_cli("watch", cwd=git_repo.path, timeout=60)
    assert res.returncode == 2 and res.stdout == ""
    assert "error: without a terminal `tether watch` prints one run's events" in res.stderr
    assert "hint: tether watch RUN --plain" in res.stderr and "Traceback" not in res.stderr
