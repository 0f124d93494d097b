"""The run monitor on a real Ray cluster: durable, gap-free, idempotent event log that
survives its actor being killed; worker health; live training-curve alerts; the stream."""

from __future__ import annotations

import io
import json
import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import ray

from tether.cluster.eventlog import EventLogCorruptError
from tether.cluster.events import EventError, Health, Kind, make_event, validate_event
from tether.cluster.monitor import (
    HEAD_NODE_RESOURCE,
    MonitorCore,
    MonitorNotFoundError,
    get_monitor,
    start_monitor,
    stop_monitor,
)
from tether.cluster.stream import stream_events

ROOT = Path(__file__).resolve().parents[1]
T = 60.0  # seconds any single Ray call may take here


def get(ref):
    return ray.get(ref, timeout=T)


@pytest.fixture
def monitor(ray_driver, tmp_path):
    """Start monitors with unique run ids; kill them (they are detached) afterwards."""
    started = []

    def start(**kw):
        run = f"t-{uuid.uuid4().hex[:8]}"
        kw.setdefault("check_every_s", 0)  # tests drive health with check_health(now=...)
        handle = start_monitor(run_id=run, run_dir=tmp_path / run, **kw)
        started.append(run)
        return run, handle, tmp_path / run

    yield start
    for run in started:
        stop_monitor(run_id=run)


def log(run, text, **kw):
    return make_event(kind=Kind.LOG, run=run, stream="stdout", line=text, **kw)


def stored(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]


def all_events(handle) -> list[dict]:
    out: list[dict] = []
    while page := get(handle.events.remote(since_seq=len(out), limit=1000)):
        out += page
    return out


def kill_process(handle) -> int:
    """SIGKILL the actor's process, as a crash would; Ray restarts it."""
    pid = get(handle.pid.remote())
    os.kill(pid, signal.SIGKILL)
    return pid


# --------------------------------------------------------------------------- schema


def test_events_follow_one_schema_and_bad_ones_are_named():
    e = make_event(kind=Kind.METRIC, run="r", trial="a", time=5.0, name="acc", value=0.5,
                   step=3, epoch=1)  # fmt: skip
    assert e == {"time": 5.0, "run": "r", "trial": "a", "stage": None, "worker": None,
                 "kind": "metric", "name": "acc", "value": 0.5, "step": 3, "epoch": 1}  # fmt: skip
    with pytest.raises(EventError, match="missing field 'sha256'"):
        make_event(kind="artifact", run="r", path="a.json", bytes=3)
    with pytest.raises(EventError, match="'status' is 'done'; expected one of"):
        make_event(kind="stage", run="r", status="done")
    with pytest.raises(EventError, match="field 'kind'"):
        validate_event({"time": 1.0, "run": "r", "kind": "nope"})
    assert Health.DEAD.is_terminal() is False and Health.FINISHED.is_terminal()


# --------------------------------------------------------------------------- durable log


def test_push_gives_gap_free_seqs_and_a_repeated_batch_is_stored_once(monitor):
    run, m, run_dir = monitor()
    assert (
        get(m.push.remote(reporter="r1", batch=1, events=[log(run, f"a{i}") for i in range(3)]))
        == 3
    )
    assert get(m.push.remote(reporter="r2", batch=1, events=[log(run, "b0"), log(run, "b1")])) == 5
    # The same (reporter, batch) again, as Ray's retry after a restart would send it.
    assert get(m.push.remote(reporter="r1", batch=1, events=[log(run, "a0"), log(run, "x")])) == 3
    assert get(m.push.remote(reporter="r1", batch=2, events=[log(run, "c0")])) == 6
    lines = stored(run_dir)
    assert [e["seq"] for e in lines] == [1, 2, 3, 4, 5, 6]
    assert [e["line"] for e in lines] == ["a0", "a1", "a2", "b0", "b1", "c0"]
    assert [(e["src"], e["batch"]) for e in lines][2:4] == [("r1", 1), ("r2", 1)]
    assert all_events(m) == lines
    assert [e["seq"] for e in get(m.events.remote(since_seq=4, limit=1))] == [5]
    # A bad event rejects its whole batch; nothing is stored.
    bad = {"time": time.time(), "run": run, "kind": "log", "stream": "stdout"}
    with pytest.raises(EventError, match="missing field 'line'"):
        get(m.push.remote(reporter="r1", batch=3, events=[log(run, "ok"), bad]))
    with pytest.raises(EventError, match="pushed to the monitor of run"):
        get(m.push.remote(reporter="r1", batch=3, events=[log("other-run", "x")]))
    assert len(stored(run_dir)) == 6
    # start_monitor is idempotent; get_monitor finds the actor; it lives on the head node.
    again = start_monitor(run_id=run, run_dir=run_dir)
    assert (
        get(again.pid.remote()) == get(get_monitor(run_id=run).pid.remote()) == get(m.pid.remote())
    )
    assert HEAD_NODE_RESOURCE in ray.cluster_resources()
    with pytest.raises(MonitorNotFoundError, match="no run monitor for run 'nope-"):
        get_monitor(run_id=f"nope-{run}")


def test_killing_the_monitor_while_batches_arrive_loses_and_repeats_nothing(monitor):
    run, m, run_dir = monitor(window=50)  # a small window: older ranges come from the file
    acked: dict[int, int] = {}
    total = 90
    errors: list[BaseException] = []

    def pusher():
        try:
            in_flight = []
            for b in range(1, total + 1):
                evs = [log(run, f"b{b}e{i}") for i in range(3)]
                in_flight.append((b, m.push.remote(reporter="p", batch=b, events=evs)))
                if len(in_flight) >= 4:  # a few calls in flight when the process dies
                    b0, ref = in_flight.pop(0)
                    acked[b0] = get(ref)
                time.sleep(0.005)
            for b0, ref in in_flight:
                acked[b0] = get(ref)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=pusher)
    thread.start()
    pids = set()
    for at in (10, 45):
        deadline = time.monotonic() + T
        while len(acked) < at and not errors and time.monotonic() < deadline:
            time.sleep(0.01)
        pids.add(kill_process(m))
    thread.join(timeout=3 * T)
    assert not thread.is_alive() and not errors, errors
    pids.add(get(m.pid.remote()))
    assert len(pids) == 3, "the actor was not restarted twice"

    lines = stored(run_dir)
    assert [e["seq"] for e in lines] == list(range(1, 3 * total + 1))
    assert all_events(m) == lines
    by_batch: dict[int, list[dict]] = {}
    for e in lines:
        by_batch.setdefault(e["batch"], []).append(e)
    assert sorted(by_batch) == list(range(1, total + 1))
    for b, evs in by_batch.items():
        assert [e["line"] for e in evs] == [f"b{b}e{i}" for i in range(3)]
        assert acked[b] == evs[-1]["seq"]
    # After the restarts the idempotency keys come from the file.
    assert get(m.push.remote(reporter="p", batch=7, events=[log(run, "again")])) == acked[7]
    assert len(stored(run_dir)) == 3 * total


def test_a_torn_last_write_is_cut_off_when_the_monitor_restarts(monitor):
    run, m, run_dir = monitor()
    get(m.push.remote(reporter="r", batch=1, events=[log(run, "a"), log(run, "b")]))
    path = run_dir / "events.jsonl"
    good = path.read_bytes()
    # A crash mid-write: one complete line of an unfinished batch, then half a line.
    with open(path, "ab") as f:
        f.write(json.dumps({**log(run, "c"), "seq": 3, "src": "r", "batch": 2}).encode() + b"\n")
        f.write(b'{"time": 1.0, "run": "' + run.encode() + b'", "ki')
    kill_process(m)
    assert get(m.push.remote(reporter="r", batch=2, events=[log(run, "c2")])) == 3
    lines = stored(run_dir)
    assert path.read_bytes().startswith(good)
    assert [(e["seq"], e["line"]) for e in lines] == [(1, "a"), (2, "b"), (3, "c2")]


def test_a_damaged_line_before_complete_writes_is_refused_not_dropped(tmp_path):
    core = MonitorCore(run_id="r", run_dir=str(tmp_path))  # in-process: no Ray needed
    for b in (1, 2):
        core.push(reporter="x", batch=b, events=[log("r", f"{b}")])
    path = tmp_path / "events.jsonl"
    first, second = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(first[:20] + b"\n" + second)
    with pytest.raises(EventLogCorruptError, match="line 1 is damaged but complete writes follow"):
        MonitorCore(run_id="r", run_dir=str(tmp_path))


# --------------------------------------------------------------------------- health


def test_the_periodic_check_finds_a_silent_worker_dead(monitor):
    run, m, run_dir = monitor(heartbeat_s=0.2, stall_timeout_s=60, check_every_s=0.1)
    beat = make_event(kind="heartbeat", run=run, worker="w", host="h", pid=1, rss_mb=1.0, gpus=None)
    get(m.push.remote(reporter="r", batch=1, events=[beat]))
    deadline = time.monotonic() + T
    while not (dead := [e for e in all_events(m) if e.get("code") == "health:dead"]):
        assert time.monotonic() < deadline, "no health:dead alert from the periodic check"
        time.sleep(0.1)
    assert dead[0]["worker"] == "w" and dead[0]["level"] == "critical"
    rows = [line.split() for line in (run_dir / "HEARTBEAT.txt").read_text().splitlines()]
    assert ["w", "dead", "h", "1"] in [row[:4] for row in rows]


def test_health_stalled_dead_finished_each_alerted_once(monitor):
    run, m, run_dir = monitor(heartbeat_s=1, stall_timeout_s=2)
    t0 = time.time() + 1e6  # ahead of the monitor's clock: only check_health(now=...) moves it

    def beat(worker, t, trial, **kw):
        return make_event(kind="heartbeat", run=run, worker=worker, trial=trial, stage="train",
                          time=t0 + t, host="node-1", pid=100, rss_mb=512.0, gpus=None, **kw)  # fmt: skip

    def stage(worker, t, trial, status, **kw):
        return make_event(kind="stage", run=run, worker=worker, trial=trial, stage="train",
                          time=t0 + t, status=status, **kw)  # fmt: skip

    def progress(worker, t, trial, step):
        return make_event(kind="progress", run=run, worker=worker, trial=trial, stage="train",
                          time=t0 + t, step=step, epoch=None, metrics={})  # fmt: skip

    workers = {"w-stall": "a", "w-dead": "b", "w-done": "c"}
    start = [stage(w, 0, tr, "started") for w, tr in workers.items()]
    get(m.push.remote(reporter="test", batch=0, events=start))
    first: dict[tuple[str, str], float] = {}
    for k in range(13):  # t = 0 .. 6 s in half seconds
        t = k / 2
        evs = [beat("w-stall", t, "a")]  # keeps beating, never progresses
        if t <= 1:  # these two stop beating at t = 1; w-done finishes its stage
            evs += [beat(w, t, tr) for w, tr in workers.items() if w != "w-stall"]
            evs += [progress(w, t, tr, k + 1) for w, tr in workers.items() if w != "w-stall"]
        if t == 1:
            evs.append(stage("w-done", t, "c", "finished"))
        get(m.push.remote(reporter="test", batch=k + 1, events=evs))
        for w, h in get(m.check_health.remote(now=t0 + t)).items():
            first.setdefault((w, h), t)
    assert first[("w-stall", "stalled")] <= 2 * 2
    assert first[("w-dead", "dead")] <= 1 + 2 * 1 + 0.5  # last beat at 1 s, 2 intervals
    states = get(m.check_health.remote(now=t0 + 6))
    assert states == {"w-stall": "stalled", "w-dead": "dead", "w-done": "finished"}

    def health_alerts():
        out: dict[str, list[str]] = {}
        for e in all_events(m):
            if e["kind"] == "alert" and e["code"].startswith("health:"):
                out.setdefault(e["worker"], []).append(e["code"])
        return out

    assert health_alerts() == {
        "w-stall": ["health:stalled"],
        "w-dead": ["health:dead"],
        "w-done": ["health:finished"],
    }
    # Progress again: the stalled worker recovers, once.
    get(m.push.remote(reporter="test", batch=99, events=[progress("w-stall", 6.5, "a", 1)]))
    assert get(m.check_health.remote(now=t0 + 7))["w-stall"] == "ok"
    assert health_alerts()["w-stall"] == ["health:stalled", "health:ok"]

    summary = get(m.summary.remote())
    rows = {w["worker"]: w for w in summary["workers"]}
    assert rows["w-dead"]["health"] == "dead" and rows["w-dead"][
        "last_beat_age_s"
    ] == pytest.approx(6)
    assert rows["w-stall"]["host"] == "node-1" and rows["w-stall"][
        "last_progress_age_s"
    ] == pytest.approx(0.5)
    heartbeat = (run_dir / "HEARTBEAT.txt").read_text()
    for w, h in [("w-stall", "ok"), ("w-dead", "dead"), ("w-done", "finished")]:
        assert any(line.split()[:3] == [w, h, "node-1"] for line in heartbeat.splitlines()), (
            heartbeat
        )
    progress_txt = (run_dir / "PROGRESS.txt").read_text()
    assert "[a/train] train started on w-stall" in progress_txt
    assert "[c/train] train finished on w-done" in progress_txt
    assert (
        "ALERT warning health:stalled w-stall: worker w-stall (node-1 pid 100) is stalled"
        in progress_txt
    )
    assert "ALERT critical health:dead w-dead" in progress_txt


# --------------------------------------------------------------------------- live alerts


def test_live_alerts_from_the_training_curves_come_once(monitor):
    milestone = "epoch 3: val_loss < 0.25, red flag > 0.30"
    run, m, run_dir = monitor(targets=["val_loss<0.01"], milestones=[milestone])
    nan = math.nan
    curves = {
        "a": ([0.9, 0.7, 0.5, 0.45, nan, nan], [0.8, 0.6, 0.35, 0.3, nan, nan]),  # red, diverges
        "b": ([0.9, 0.6, 0.4, 0.3, 0.25, 0.2], [0.8, 0.4, 0.2, 0.15, 0.12, 0.1]),  # healthy
    }
    batch = 0
    for epoch in range(1, 7):
        for trial, (loss, val) in curves.items():
            batch += 1
            step = dict(kind="progress", run=run, trial=trial, stage="train", worker=f"w-{trial}")
            evs = [  # a step report mid-epoch, then the epoch's summary
                make_event(**step, step=epoch * 10 - 5, epoch=epoch, metrics={"loss": loss[epoch - 1]}),
                make_event(**step, step=epoch * 10, epoch=epoch, epoch_end=True,
                           metrics={"loss": loss[epoch - 1], "val_loss": val[epoch - 1]}),
            ]  # fmt: skip
            get(m.push.remote(reporter="r", batch=batch, events=evs))

    def curve_alerts():
        return [(e["trial"], e["code"], e["epoch"], e["level"]) for e in all_events(m)
                if e["kind"] == "alert" and not e["code"].startswith("health:")]  # fmt: skip

    assert curve_alerts() == [("a", "milestone", 3, "critical"), ("a", "diverged", 5, "critical")]
    # A restart rebuilds which alerts were sent: another NaN epoch adds none.
    kill_process(m)
    more = make_event(kind="progress", run=run, trial="a", stage="train", worker="w-a", step=70,
                      epoch=7, epoch_end=True, metrics={"loss": nan, "val_loss": nan})  # fmt: skip
    get(m.push.remote(reporter="r", batch=batch + 1, events=[more]))
    assert len(curve_alerts()) == 2
    stored_nan = next(e for e in stored(run_dir) if e.get("epoch") == 7)["metrics"]["val_loss"]
    assert math.isnan(stored_nan)
    progress_txt = (run_dir / "PROGRESS.txt").read_text()
    assert "[a/train] epoch 3: loss=0.5 val_loss=0.35" in progress_txt
    assert "ALERT critical milestone w-a: trial a: val_loss 0.35 at epoch 3" in progress_txt
    assert (
        "ALERT critical diverged w-a: trial a: loss is non-finite (NaN/inf) from epoch 5"
        in progress_txt
    )
    trials = {t["trial"]: t for t in get(m.summary.remote())["trials"]}
    assert trials["b"]["metrics"] == {"loss": 0.2, "val_loss": 0.1} and trials["b"]["epoch"] == 6


# --------------------------------------------------------------------------- stream


def test_stream_prints_every_event_once_in_order_across_a_restart_then_ends(monitor, ray_driver):
    run, m, run_dir = monitor()
    errors: list[BaseException] = []

    def produce():
        try:
            for b in range(1, 21):
                get(
                    m.push.remote(
                        reporter="r", batch=b, events=[log(run, f"{b}.{i}") for i in range(3)]
                    )
                )
                if b == 10:
                    kill_process(m)
                time.sleep(0.02)
            get(m.finish.remote(status="succeeded"))
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=produce)
    thread.start()
    out = io.StringIO()
    last = stream_events(run_id=run, since=0, out=out, poll_s=0.05)
    thread.join(timeout=T)
    assert not errors, errors
    printed = [json.loads(line) for line in out.getvalue().splitlines()]
    assert printed == all_events(m) == stored(run_dir)
    assert [e["seq"] for e in printed] == list(range(1, 62)) and last == 61
    assert printed[-1]["terminal"] is True and printed[-1]["run_status"] == "succeeded"
    assert get(m.is_terminal.remote()) is True
    assert get(m.finish.remote(status="failed")) == 61  # a second finish changes nothing

    out = io.StringIO()
    assert stream_events(run_id=run, since=50, out=out, poll_s=0.05) == 61
    assert [json.loads(line)["seq"] for line in out.getvalue().splitlines()] == list(range(51, 62))

    with pytest.raises(MonitorNotFoundError):
        stream_events(run_id=f"missing-{run}", since=0, out=io.StringIO())
    res = subprocess.run(
        [sys.executable, "-m", "tether.cluster.stream", f"missing-{run}", "--address", ray_driver.gcs_address],
        cwd=ROOT, capture_output=True, text=True, timeout=T,
    )  # fmt: skip
    assert res.returncode == 2, res.stderr
    assert res.stdout == ""
    assert f"stream: no run monitor for run 'missing-{run}'" in res.stderr.strip().splitlines()[-1]
