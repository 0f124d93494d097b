"""The reporter: non-blocking reporting into the run monitor (a real Ray actor), a local
events.jsonl without Ray, and shell-command stages that print TETHER lines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tether.cluster.command_stage import TetherLineError, parse_tether_line, run_command_stage
from tether.cluster.events import NAMESPACE as MONITOR_NAMESPACE
from tether.cluster.events import monitor_name
from tether.cluster.reporter import (
    Reporter,
    ReporterConfigError,
    get_reporter,
    set_default_reporter,
)
from tether.cluster.transports import JsonlTransport, MonitorTransport

REPO_ROOT = Path(__file__).resolve().parents[1]


def read_events(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def wait_for(predicate, *, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.1)


# --------------------------------------------------------------------------- Ray mode


def _run_id() -> str:
    return f"rep-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def run_monitor(ray_driver, tmp_path):
    """Starts the real run monitor (cluster/monitor.py) for a run; stops it afterwards."""
    from tether.cluster.monitor import start_monitor, stop_monitor

    started = []

    def start(*, run_id: str):
        handle = start_monitor(run_id=run_id, run_dir=tmp_path / run_id)
        started.append(run_id)
        return handle

    yield start
    for run_id in started:
        stop_monitor(run_id=run_id)


def monitor_events(handle) -> list[dict]:
    """Every event the monitor stored, paged through its ``events`` call."""
    import ray

    out: list[dict] = []
    while page := ray.get(handle.events.remote(since_seq=len(out), limit=5000), timeout=60):
        out += page
    return out


def test_ray_mode_10000_reports_from_4_threads_arrive_exactly_once_in_order(run_monitor):
    run_id = _run_id()
    monitor = run_monitor(run_id=run_id)
    reporter = get_reporter(run_id=run_id, trial="magvit", stage="train")
    assert reporter.mode == "ray"

    def work(k: int) -> None:
        for i in range(2500):
            reporter.report(step=i, epoch=1, metrics={"thread": k, "loss": 1.0 / (i + 1)})

    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert reporter.close(timeout=60)
    assert reporter.close() is True  # idempotent

    stored = monitor_events(monitor)
    assert [e["seq"] for e in stored] == list(range(1, len(stored) + 1))
    events = [e for e in stored if e["src"] == reporter.worker]  # not the monitor's own alerts
    progress = [e for e in events if e["kind"] == "progress"]
    assert len(progress) == 10_000
    for k in range(4):
        mine = [e for e in progress if e["metrics"]["thread"] == k]
        assert [e["step"] for e in mine] == list(range(2500))
        assert mine[7]["metrics"]["loss"] == pytest.approx(1 / 8)
    assert {(e["run"], e["trial"], e["stage"], e["worker"]) for e in events} == {
        (run_id, "magvit", "train", reporter.worker)
    }
    batches = [e["batch"] for e in events]
    assert batches == sorted(batches) and batches[0] == 1
    stats = reporter.stats()
    assert stats.sent_events == len(events) and stats.last_seq <= len(stored)
    assert stats.queued == 0 and stats.pending == 0 and stats.dropped == 0


def test_ray_mode_heartbeats_carry_host_pid_rss(run_monitor):
    run_id = _run_id()
    monitor = run_monitor(run_id=run_id)

    def heartbeats() -> list[dict] | None:
        found = [e for e in monitor_events(monitor) if e["kind"] == "heartbeat"]
        return found if len(found) >= 3 else None

    with get_reporter(run_id=run_id, trial="t", stage="train", heartbeat_s=1) as reporter:
        reporter.report(step=5, metrics={"loss": 0.1})
        beats = wait_for(heartbeats, timeout=20, what="3 heartbeats at heartbeat_s=1")
    for beat in beats:
        assert beat["pid"] == os.getpid()
        assert beat["host"] and beat["rss_mb"] > 0
        assert "gpus" in beat  # None here: no GPU on this machine
        assert beat["worker"] == reporter.worker
    assert beats[-1].get("progress_step") == 5


def _stand_in_monitor_class():
    """The monitor's push contract (idempotent per (reporter, batch), seq given here), plus
    a fault: the first ``fail_first`` pushes store their batch and then raise, like a monitor
    whose reply was lost, so the reporter must resend and the resend must be deduped."""
    import ray

    @ray.remote(num_cpus=0)
    class FlakyMonitor:
        def __init__(self, fail_first: int) -> None:
            self.events: list[dict] = []
            self.batches: dict[str, int] = {}
            self.fail_left = fail_first
            self.pushes = 0

        def push(self, *, reporter: str, batch: int, events: list[dict]) -> int:
            self.pushes += 1
            if batch > self.batches.get(reporter, 0):
                for ev in events:
                    self.events.append({**ev, "seq": len(self.events) + 1})
                self.batches[reporter] = batch
            if self.fail_left:
                self.fail_left -= 1
                raise RuntimeError("monitor hiccup (stand-in): reply lost")
            return len(self.events)

        def stored(self) -> list[dict]:
            return self.events

        def push_count(self) -> int:
            return self.pushes

    return FlakyMonitor


def test_ray_mode_failed_push_is_resent_and_deduped(ray_driver):
    import ray

    run_id = _run_id()
    monitor = (
        _stand_in_monitor_class()
        .options(name=monitor_name(run_id=run_id), namespace=MONITOR_NAMESPACE)
        .remote(2)
    )
    try:
        reporter = Reporter(
            transport=MonitorTransport.for_run(run_id=run_id),
            run_id=run_id,
            stage="train",
            retry_backoff_s=0.05,
        )
        for i in range(1000):
            reporter.report(step=i, metrics={"loss": float(i)})
        assert reporter.flush(timeout=60)
        reporter.metric("val_acc", 0.91, epoch=1)
        assert reporter.close(timeout=60)
        events = ray.get(monitor.stored.remote())
        pushes = ray.get(monitor.push_count.remote())
    finally:
        ray.kill(monitor)
    assert [e["step"] for e in events if e["kind"] == "progress"] == list(range(1000))
    assert [e["value"] for e in events if e["kind"] == "metric"] == [0.91]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert reporter.stats().failed_attempts == 2
    assert pushes == reporter.stats().sent_batches + 2


def test_get_reporter_without_a_monitor_falls_back_to_a_file(ray_driver, tmp_path):
    reporter = get_reporter(run_id=_run_id(), events_path=tmp_path / "ev.jsonl")
    assert reporter.mode == "file"
    reporter.close()


# --------------------------------------------------------------------------- local mode

_LOCAL_SCRIPT = """
import json, sys
from tether.cluster.reporter import get_reporter
ray_imported = "ray" in sys.modules
r = get_reporter(events_path=sys.argv[1])
assert r.mode == "file", r.mode
for i in range(1500):
    r.report(step=i, metrics={"loss": 1.0 / (i + 1)})
r.metric("val_acc", 0.9, epoch=1)
r.stage("train", "finished")
ok = r.close()
import ray
print(json.dumps({"ok": ok, "ray_imported": ray_imported, "ray_initialized": ray.is_initialized()}))
"""


def test_local_mode_writes_gap_free_events_jsonl_without_ray(tmp_path):
    path = tmp_path / "out" / "events.jsonl"
    env = {**os.environ, "TETHER_RUN_ID": "r-local", "TETHER_TRIAL": "i3d"}
    env.pop("RAY_ADDRESS", None)
    # Two processes append to one file at once: seq stays gap-free across both.
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _LOCAL_SCRIPT, str(path)],
            cwd=REPO_ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        assert json.loads(out.splitlines()[-1]) == {
            "ok": True,
            "ray_imported": False,
            "ray_initialized": False,
        }
    events = read_events(path)
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    workers = {e["worker"] for e in events}
    assert len(workers) == 2
    for w in workers:
        mine = [e for e in events if e["worker"] == w]
        assert [e["step"] for e in mine if e["kind"] == "progress"] == list(range(1500))
        assert [e["kind"] for e in mine if e["kind"] in ("metric", "stage")] == ["metric", "stage"]
        assert any(e["kind"] == "heartbeat" for e in mine)
    assert {(e["run"], e["trial"], e["stage"]) for e in events if e["kind"] != "stage"} == {
        ("r-local", "i3d", None)
    }
    assert [e["stage"] for e in events if e["kind"] == "stage"] == ["train", "train"]


@pytest.mark.parametrize(
    ("existing", "kept", "next_seq"),
    [
        # a write torn by a crash: the unacknowledged lines after the last batch end go
        ('{"seq":41,"kind":"log","batch_end":true}\n{"seq":42,"kind":"log"}\n{"seq":43,"ki', 1, 42),
        # a file from something that marks no batch ends: every complete line stays
        ('{"seq":41,"kind":"log"}\n{"seq":42,"kind":"log"}\n{"seq":43,"ki', 2, 43),
        ("", 0, 1),
    ],
)
def test_local_file_continues_after_its_last_complete_write(tmp_path, existing, kept, next_seq):
    path = tmp_path / "events.jsonl"
    path.write_text(existing)
    with Reporter(transport=JsonlTransport(path=path), run_id="r") as reporter:
        reporter.log("hello")
    lines = path.read_text().splitlines()
    assert lines[:kept] == existing.splitlines()[:kept]
    ours = [json.loads(x) for x in lines[kept:]]
    assert [e["seq"] for e in ours] == [next_seq, next_seq + 1]  # heartbeat and log
    assert {e["src"] for e in ours} == {reporter.worker}
    assert [e.get("batch_end") for e in ours][-1] is True


def test_local_events_file_is_one_the_run_monitor_can_rebuild_from(tmp_path):
    from tether.cluster.monitor import MonitorCore

    with Reporter(transport=JsonlTransport(path=tmp_path / "events.jsonl"), run_id="r1") as rep:
        rep.stage("train", "started")
        for i in range(700):
            rep.report(step=i, epoch=1 + i // 350, metrics={"loss": 1.0 / (i + 1)})
        rep.stage("train", "finished")
    n = len(read_events(tmp_path / "events.jsonl"))
    core = MonitorCore(run_id="r1", run_dir=str(tmp_path), check_every_s=None)
    assert core.last_seq() == n
    summary = core.summary()
    assert [(t["trial"], t["step"]) for t in summary["trials"]] == [(None, 699)]
    assert core.check_health() == {rep.worker: "finished"}


def test_values_are_made_json_safe_and_schema_breaks_become_alerts(tmp_path):
    path = tmp_path / "events.jsonl"
    reporter = Reporter(transport=JsonlTransport(path=path), run_id="r")
    np = pytest.importorskip("numpy")
    reporter.report(step=np.int64(3), metrics={"loss": np.float32(0.5), "ok": True})
    reporter.report(step=4.0, metrics={"loss": "0.25"})
    reporter.report(step=5, metrics={"loss": "not a number"})
    reporter.close()
    events = [e for e in read_events(path) if e["kind"] != "heartbeat"]
    assert [(e["kind"], e.get("step"), e.get("metrics")) for e in events[:2]] == [
        ("progress", 3, {"loss": 0.5, "ok": 1}),
        ("progress", 4, {"loss": 0.25}),
    ]
    assert events[2]["kind"] == "alert" and events[2]["code"] == "reporter:bad_event"
    assert reporter.stats().invalid == 1


def test_a_receiver_that_is_down_keeps_events_and_sheds_only_overflowing_logs(tmp_path):
    class Flaky:
        """A transport that refuses batches until told otherwise."""

        mode = "test"

        def __init__(self) -> None:
            self.up = False
            self.batches: dict[int, list[dict]] = {}

        def send(self, *, reporter, batch, events):
            if not self.up:
                raise ConnectionError("receiver down")
            self.batches[batch] = events
            return None

        def close(self) -> None:
            pass

    transport = Flaky()
    reporter = Reporter(
        transport=transport,
        run_id="r",
        max_batch=4,
        max_queued=8,
        max_send_attempts=1,
        flush_interval_s=0.05,
    )
    wait_for(lambda: reporter.stats().failed_attempts, timeout=10, what="a failed send")
    for i in range(40):
        reporter.log(f"line {i}")
    reporter.report(step=1, metrics={"loss": 1.0})
    time.sleep(0.3)
    transport.up = True
    assert reporter.close(timeout=30)
    events = [e for n in sorted(transport.batches) for e in transport.batches[n]]
    assert sorted(transport.batches) == list(range(1, len(transport.batches) + 1))
    assert [e["step"] for e in events if e["kind"] == "progress"] == [1]
    logs = [e["line"] for e in events if e["kind"] == "log"]
    assert logs and logs == [f"line {i}" for i in range(40 - len(logs), 40)] and len(logs) < 40
    assert reporter.stats().dropped == 40 - len(logs)
    alerts = [e for e in events if e["kind"] == "alert"]
    assert [a["code"] for a in alerts] == ["reporter:dropped"]
    assert f"dropped {40 - len(logs)} events" in alerts[0]["message"]


def test_reporter_validates_its_settings(tmp_path):
    transport = JsonlTransport(path=tmp_path / "e.jsonl")
    with pytest.raises(ReporterConfigError, match="heartbeat_s"):
        Reporter(transport=transport, heartbeat_s=0.5)
    with Reporter(transport=transport, run_id="r") as reporter:
        with pytest.raises(ReporterConfigError, match="started, finished, failed"):
            reporter.stage("train", "running")
        with pytest.raises(ReporterConfigError, match="info, warning, critical"):
            reporter.alert("x", level="error")


def test_module_level_functions_use_the_default_reporter(tmp_path):
    import tether.cluster.reporter as rep

    mine = Reporter(transport=JsonlTransport(path=tmp_path / "e.jsonl"), run_id="r", stage="s")
    previous = set_default_reporter(mine)
    try:
        rep.report(step=1, metrics={"loss": 2.0})
        rep.metric("acc", 0.5, step=1)
        rep.log("hello", stream="stderr")
        rep.alert("look", level="info", code="user:look")
        (tmp_path / "a.json").write_text("{}")
        record = rep.artifact(tmp_path / "a.json")
        assert rep.flush(timeout=10)
    finally:
        set_default_reporter(previous)
        mine.close()
    kinds = [e["kind"] for e in read_events(tmp_path / "e.jsonl") if e["kind"] != "heartbeat"]
    assert kinds == ["progress", "metric", "log", "alert", "artifact"]
    assert record.bytes == 2 and len(record.sha256) == 64


# --------------------------------------------------------------------------- command stages


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (
            'TETHER {"kind":"progress","step":1,"metrics":{"loss":0.5}}',
            {"kind": "progress", "step": 1, "epoch": None, "metrics": {"loss": 0.5}},
        ),
        ('TETHER {"step": 2}\r\n', {"kind": "progress", "step": 2, "epoch": None, "metrics": {}}),
        (
            'TETHER  {"kind":"alert","level":"info","code":"c","message":"m","seq":9}',
            {"kind": "alert", "level": "info", "code": "c", "message": "m"},
        ),
        ("epoch 1: loss=0.5", None),
        ("TETHERED to the mast", None),
        ("  TETHER {}", None),
    ],
)
def test_parse_tether_line(line, expected):
    assert parse_tether_line(line) == expected


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("TETHER {oops", "not valid JSON"),
        ("TETHER", "without a JSON object"),
        ("TETHER [1, 2]", "not an object"),
        ('TETHER {"kind": "telemetry"}', "unknown kind"),
        ('TETHER {"metrics": [1]}', "'metrics' must be an object"),
    ],
)
def test_parse_tether_line_rejects_malformed_lines(line, message):
    with pytest.raises(TetherLineError, match=message):
        parse_tether_line(line)


def test_command_stage_forwards_tether_lines_keeps_logs_and_the_exit_code(tmp_path):
    path = tmp_path / "events.jsonl"
    reporter = Reporter(
        transport=JsonlTransport(path=path), run_id="r", trial="magvit", stage="train"
    )
    command = "\n".join(
        [
            "echo starting",
            """echo 'TETHER {"kind":"progress","step":1,"metrics":{"loss":0.5}}'""",
            "echo 'to stderr' >&2",
            "echo 'TETHER {oops'",
            'echo "trial=$TETHER_TRIAL stage=$TETHER_STAGE extra=$EXTRA"',
            "exit 3",
        ]
    )
    outcome = run_command_stage(
        command=command, cwd=tmp_path, env={"EXTRA": "yes"}, reporter=reporter
    )
    assert reporter.close()
    assert outcome.exit_code == 3 and not outcome.timed_out
    assert outcome.events_forwarded == 1 and outcome.bad_lines == 1
    stdout_lines = ["starting", "TETHER {oops", "trial=magvit stage=train extra=yes"]
    assert [x for x in outcome.last_lines if x != "to stderr"] == stdout_lines
    assert "to stderr" in outcome.last_lines and len(outcome.last_lines) == 4

    events = read_events(path)
    progress = [e for e in events if e["kind"] == "progress"]
    assert [(e["step"], e["metrics"], e["trial"], e["stage"]) for e in progress] == [
        (1, {"loss": 0.5}, "magvit", "train")
    ]
    logs = [(e["stream"], e["line"]) for e in events if e["kind"] == "log"]
    assert [x for x in logs if x[0] == "stdout"] == [("stdout", x) for x in stdout_lines]
    assert ("stderr", "to stderr") in logs
    alerts = [e for e in events if e["kind"] == "alert"]
    assert [(a["level"], a["code"]) for a in alerts] == [("warning", "reporter:bad_tether_line")]
    assert "TETHER {oops" in alerts[0]["message"]


def test_command_stage_python_child_reports_through_get_reporter(tmp_path):
    path = tmp_path / "events.jsonl"
    reporter = Reporter(transport=JsonlTransport(path=path), run_id="r9", stage="train")
    script = (
        "from tether.cluster.reporter import get_reporter\n"
        "with get_reporter() as r:\n"
        "    print('plain output')\n"
        "    r.report(step=7, epoch=2, metrics={'acc': 1.0})\n"
        "    r.stage('eval', 'started')\n"
    )
    (tmp_path / "train.py").write_text(script)
    outcome = run_command_stage(
        command=f"{sys.executable} train.py",
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO_ROOT)},
        reporter=reporter,
    )
    assert reporter.close()
    assert outcome.exit_code == 0, outcome.last_lines
    assert outcome.last_lines == ["plain output"]
    events = read_events(path)
    by_kind = {e["kind"]: e for e in events}
    assert by_kind["progress"]["step"] == 7 and by_kind["progress"]["metrics"] == {"acc": 1.0}
    assert by_kind["progress"]["run"] == "r9" and by_kind["progress"]["stage"] == "train"
    assert by_kind["stage"]["stage"] == "eval" and by_kind["stage"]["status"] == "started"
    child_beats = [e for e in events if e["kind"] == "heartbeat" and e["pid"] != os.getpid()]
    assert child_beats  # the child's own heartbeat (its pid, its RSS) came through
    assert outcome.events_forwarded == 3


def test_command_stage_timeout_kills_the_process_group(tmp_path):
    path = tmp_path / "events.jsonl"
    reporter = Reporter(transport=JsonlTransport(path=path), run_id="r", stage="train")
    start = time.monotonic()
    outcome = run_command_stage(
        command="echo before; sleep 30 & sleep 30", cwd=tmp_path, reporter=reporter, timeout_s=1
    )
    elapsed = time.monotonic() - start
    reporter.close()
    assert outcome.timed_out and outcome.exit_code == 124
    assert outcome.last_lines == ["before"]
    assert elapsed < 15  # both sleeps died with their group
    alerts = [e for e in read_events(path) if e["kind"] == "alert"]
    assert [(a["level"], a["code"]) for a in alerts] == [("critical", "stage:timeout")]


# --------------------------------------------------------------------------- GPU probe


class _FakeNvml:
    """What the heartbeat reads from ``pynvml``: two GPUs, indices 0 and 1 (no GPU here)."""

    class _Mem:
        used, total = 3 * 1024**3, 80 * 1024**3

    class _Util:
        gpu = 42

    def nvmlInit(self):
        pass

    def nvmlDeviceGetCount(self):
        return 2

    def nvmlDeviceGetHandleByIndex(self, i):
        return f"h{i}"

    def nvmlDeviceGetHandleByUUID(self, uuid):
        return {"GPU-aaa": "h0", "GPU-bbb": "h1"}[uuid]

    def nvmlDeviceGetIndex(self, handle):
        return int(handle[1:])

    def nvmlDeviceGetMemoryInfo(self, handle):
        return self._Mem()

    def nvmlDeviceGetUtilizationRates(self, handle):
        return self._Util()


@pytest.mark.parametrize(
    ("visible", "indices"), [(None, [0, 1]), ("1", [1]), ("GPU-bbb,GPU-aaa", [1, 0]), ("", [])]
)
def test_gpu_probe_reads_the_visible_gpus_through_nvml(monkeypatch, visible, indices):
    from tether.cluster.probe import GpuProbe as _GpuProbe

    monkeypatch.setitem(sys.modules, "pynvml", _FakeNvml())
    if visible is None:
        monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    else:
        monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    gpus = _GpuProbe()()
    if not indices:
        assert gpus is None
        return
    assert [g["index"] for g in gpus] == indices
    assert gpus[0] == {
        "index": indices[0],
        "util_pct": 42.0,
        "mem_used_mb": 3072.0,
        "mem_total_mb": 81920.0,
    }


def test_gpu_probe_without_nvml_or_cuda_says_none(monkeypatch):
    from tether.cluster.probe import GpuProbe as _GpuProbe

    monkeypatch.setitem(sys.modules, "pynvml", None)  # import fails
    assert _GpuProbe()() is None


def test_reporter_lines_never_land_inside_what_the_program_prints(tmp_path):
    """print() writes text and newline separately; a reporter thread writing to the same
    stdout between them would glue a TETHER line onto the program's line."""
    path = tmp_path / "events.jsonl"
    reporter = Reporter(transport=JsonlTransport(path=path), run_id="r8", stage="train")
    script = (
        "from tether.cluster.reporter import get_reporter\n"
        "r = get_reporter(heartbeat_s=1)\n"
        "for i in range(3000):\n"
        "    print(f'out {i}')\n"
        "    r.report(step=i, metrics={'loss': 1.0})\n"
        "r.close()\n"
    )
    (tmp_path / "loud.py").write_text(script)
    outcome = run_command_stage(
        command=f"{sys.executable} loud.py",
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO_ROOT)},
        reporter=reporter,
    )
    assert reporter.close()
    assert outcome.exit_code == 0 and outcome.bad_lines == 0
    events = read_events(path)
    logs = [e["line"] for e in events if e["kind"] == "log"]
    assert logs == [f"out {i}" for i in range(3000)]
    steps = [e["step"] for e in events if e["kind"] == "progress"]
    assert steps == list(range(3000))


_CHILD = """
import os, signal, sys, time
from tether.cluster.reporter import get_reporter
r = get_reporter(heartbeat_s=1)
r.report(step=1, metrics={"loss": 1.0})
time.sleep(2.5)  # a few heartbeats of its own
assert r.flush(timeout=30)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
r.close()
"""


@pytest.mark.parametrize(
    ("how", "exit_code", "health"), [("exit", 0, "finished"), ("kill", 137, "failed")]
)
def test_a_command_stage_child_reports_under_its_own_worker_id(tmp_path, how, exit_code, health):
    """The child's heartbeats carry its pid and RSS under its own worker id (the stage
    task's worker keeps its own pid); when the command ends, that worker is marked ended
    with the exit code, so the monitor says finished or failed, not dead."""
    from tether.cluster.monitor import MonitorCore

    path = tmp_path / "events.jsonl"
    reporter = Reporter(
        transport=JsonlTransport(path=path), run_id="r7", stage="train", heartbeat_s=1
    )
    (tmp_path / "child.py").write_text(_CHILD)
    outcome = run_command_stage(
        command=f"{sys.executable} child.py {how}",
        cwd=tmp_path,
        env={"PYTHONPATH": str(REPO_ROOT)},
        reporter=reporter,
    )
    assert reporter.close()
    assert outcome.exit_code == exit_code, outcome.last_lines
    events = read_events(path)
    beats = [e for e in events if e["kind"] == "heartbeat"]
    pids: dict[str, set[int]] = {}
    for beat in beats:
        pids.setdefault(beat["worker"], set()).add(beat["pid"])
    assert pids[reporter.worker] == {os.getpid()}
    (child,) = set(pids) - {reporter.worker}
    assert len(pids[child]) == 1 and os.getpid() not in pids[child]
    child_beats = [b for b in beats if b["worker"] == child]
    assert len(child_beats) >= 3  # two of its own, at least, and the one marking its end
    assert [b.get("ended") for b in child_beats][-2:] == [None, True]
    assert child_beats[-1]["exit_code"] == exit_code and child_beats[-1]["pid"] in pids[child]
    progress = [e for e in events if e["kind"] == "progress"]
    assert [(e["worker"], e["step"], e["stage"]) for e in progress] == [(child, 1, "train")]
    core = MonitorCore(run_id="r7", run_dir=str(tmp_path), heartbeat_s=1)
    assert core.check_health()[child] == health
