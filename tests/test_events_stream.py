"""The laptop end of the event path (client/eventstream.py, `tether events`).

- The resume logic against a real subprocess on the local remote: a stand-in for the head's
  `python -m tether.cluster.stream` that dies mid-line, repeats events, skips one, exits
  3 or is killed; clock and sleep are the test's, so backoff and give-up are exact.
- `tether events` over the embedded local profile on the real Ray cluster: human lines, --since,
  --json, an unknown run.
- The SSH cut: `tether events RUN -f --json` while the test sshd's connection is killed twice
  mid-stream prints every seq from 1 to the last exactly once, in order.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import psutil
import pytest
from conftest import git, write_local_profile
from ray.job_submission import JobStatus, JobSubmissionClient
from test_submit import laptop  # noqa: F401  (the fixture: an ssh profile over the test sshd)

from tether.client.cli import main as tether
from tether.client.eventscmd import describe
from tether.client.eventstream import (
    EventStream,
    EventStreamError,
    StreamedEvent,
    StreamState,
    backoff_s,
    stream_command,
)
from tether.client.remote import LocalRemote

RUN = "fake-run"

# Stands in for `python -m tether.cluster.stream RUN --since N ...` (the EventStream's
# `python` is this script): each call logs its argv and plays the next entry of the plan.
FAKE_STREAM = """\
#!{python}
import json, os, signal, sys, time
args = sys.argv[1:]
assert args[:2] == ["-m", "tether.cluster.stream"], args
run, since = args[2], int(args[args.index("--since") + 1])
with open({calls!r}, "a") as f:
    f.write(json.dumps(args) + "\\n")
with open({calls!r}) as f:
    call = len(f.readlines()) - 1
plan = json.load(open({plan!r}))
step = plan[min(call, len(plan) - 1)]

def event(n):
    e = {{"seq": n, "time": 1700000000.0 + n, "run": run, "trial": None, "stage": "emit",
         "worker": "w-1"}}
    if n == {total}:
        return {{**e, "stage": None, "kind": "stage", "status": "finished", "terminal": True,
                "run_status": "succeeded"}}
    return {{**e, "kind": "log", "stream": "stdout", "line": f"line {{n}} [x]"}}

for n in range(max(1, since + 1 - step.get("back", 0)), step.get("to", 0) + 1):
    if n not in step.get("skip", []):
        print(json.dumps(event(n)), flush=True)
if step.get("torn"):
    sys.stdout.write(json.dumps(event(step["to"] + 1))[:25])
    sys.stdout.flush()
if step.get("stderr"):
    print(step["stderr"], file=sys.stderr, flush=True)
if step.get("exit") == "kill":
    os.kill(os.getpid(), signal.SIGKILL)
sys.exit(step.get("exit", 0))
"""


class FakeTime:
    """The stream's clock and sleep: sleeping moves the clock, nothing waits."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def fake_stream(tmp_path: Path, plan: list[dict], *, total: int = 1000):
    """A fake head-side stream playing ``plan``; returns (python path, calls log path)."""
    calls, plan_file = tmp_path / "calls.jsonl", tmp_path / "plan.json"
    plan_file.write_text(json.dumps(plan))
    script = tmp_path / "fakepython"
    script.write_text(
        FAKE_STREAM.format(
            python=sys.executable, calls=str(calls), plan=str(plan_file), total=total
        )
    )
    script.chmod(0o755)
    return str(script), calls


def sinces(calls: Path) -> list[int]:
    return [int(a[a.index("--since") + 1]) for a in map(json.loads, calls.read_text().splitlines())]


def make_stream(python: str, fake: FakeTime, states: list, **kw) -> EventStream:
    return EventStream(
        remote=LocalRemote(),
        python=python,
        run_id=RUN,
        dashboard_port=8265,
        on_state=states.append,
        clock=fake.clock,
        sleep=fake.sleep,
        **kw,
    )


# --------------------------------------------------------------------------- resume logic


def test_the_stream_resumes_from_the_last_seq_without_a_gap_or_a_duplicate(tmp_path):
    plan = [
        {"to": 12, "torn": True, "exit": "kill"},  # killed in the middle of line 13
        {"back": 2, "to": 25, "exit": 3, "stderr": "stream: the monitor is unreachable"},
        {"to": 33, "skip": [31]},  # a gap: never yielded, asked for again
        {"exit": "kill"},  # nothing, twice: the backoff grows
        {"exit": 137},
        {"to": 40},  # to the run's end, exit 0
    ]
    python, calls = fake_stream(tmp_path, plan, total=40)
    fake, states = FakeTime(), []
    stream = make_stream(python, fake, states)
    events = list(stream)

    assert [e.seq for e in events] == list(range(1, 41))
    assert events[0].kind.value == "log" and events[0].get("line") == "line 1 [x]"
    assert events[-1].ends_run and not events[-2].ends_run
    assert stream.status.state is StreamState.ENDED and stream.last_seq == 40
    # Each attempt asked for what came after the last event yielded.
    assert sinces(calls) == [0, 12, 25, 30, 30, 30]
    # An attempt that brought events starts the backoff over; empty ones double it.
    assert fake.sleeps == [0.5, 0.5, 0.5, 1.0, 2.0]
    reasons = [s.reason for s in states if s.state is StreamState.RECONNECTING]
    assert "exit -9" in reasons[0]
    assert reasons[1] == "stream: the monitor is unreachable"
    assert reasons[2] == "expected seq 31, got 32"
    # Three failed attempts in a row: one "reconnecting since T", counting up.
    run3 = [s for s in states if s.state is StreamState.RECONNECTING][2:]
    assert [s.attempts for s in run3] == [1, 2, 3]
    assert len({s.since for s in run3}) == 1 and all(s.last_seq == 30 for s in run3)
    order = [s.state for s in states]
    assert order[-2:] == [StreamState.CONNECTED, StreamState.ENDED]
    assert order.count(StreamState.CONNECTED) == 4


def test_the_stream_gives_up_after_give_up_s_with_a_capped_backoff(tmp_path):
    python, calls = fake_stream(tmp_path, [{"to": 3, "exit": "kill"}, {"exit": "kill"}])
    fake, states = FakeTime(), []
    stream = make_stream(python, fake, states, give_up_s=30)
    got = []
    with pytest.raises(EventStreamError) as err:
        for e in stream:
            got.append(e.seq)
    assert got == [1, 2, 3]
    # The attempt that brought events starts the clock; then 0.5 s doubling up to 10 s,
    # until 30 s have passed without an event.
    assert fake.sleeps == [0.5, 1, 2, 4, 8, 10, 10]
    assert "has been down for" in err.value.message and "seq 3" in err.value.message
    assert f"tether events {RUN} -f --since 3" in err.value.hint
    assert states[-1].state is StreamState.FAILED and stream.status.state.is_terminal()
    assert set(sinces(calls)) == {0, 3}
    assert [backoff_s(n) for n in range(7)] == [0.5, 1, 2, 4, 8, 10, 10]


def test_an_unknown_run_fails_and_a_starting_one_is_waited_for(tmp_path):
    no_monitor = {"exit": 2, "stderr": f"stream: no run monitor for run {RUN!r} (actor x)"}
    python, _ = fake_stream(tmp_path, [no_monitor, no_monitor, {"to": 5}], total=5)
    fake, states = FakeTime(), []
    answers = iter([True, True])  # the job is starting: its monitor comes
    stream = make_stream(python, fake, states, is_pending=lambda: next(answers))
    assert [e.seq for e in stream] == [1, 2, 3, 4, 5]
    assert [s.reason for s in states if s.state is StreamState.RECONNECTING] == [
        f"waiting for the monitor of run {RUN!r} to start"
    ] * 2
    assert fake.sleeps == [0.5, 1.0]  # waiting never gives up, but asks less and less often

    (tmp_path / "unknown").mkdir()
    python, _ = fake_stream(tmp_path / "unknown", [no_monitor])
    stream = make_stream(python, FakeTime(), [], is_pending=lambda: False)
    with pytest.raises(EventStreamError) as err:
        list(stream)
    assert f"no events for run {RUN!r} on localhost" in err.value.message
    assert "no run monitor" in err.value.message and "tether runs" in err.value.hint
    # Without follow, a run still starting simply has no events yet.
    stream = make_stream(python, FakeTime(), [], is_pending=lambda: True, follow=False)
    assert list(stream) == [] and stream.status.state is StreamState.ENDED
    assert "--once" in stream.command()


def test_a_head_without_the_cluster_fails_at_once_with_the_heads_words(tmp_path):
    line = "stream: cannot connect to Ray: no Ray dashboard serves port 8265 on this machine"
    python, calls = fake_stream(tmp_path, [{"exit": 2, "stderr": line}])
    fake = FakeTime()
    with pytest.raises(EventStreamError) as err:
        list(make_stream(python, fake, []))
    assert line in err.value.message and "(exit 2)" in err.value.message
    assert "tether cluster status" in err.value.hint
    assert fake.sleeps == [] and len(sinces(calls)) == 1


def test_the_command_quotes_what_it_sends():
    cmd = stream_command(python="/opt/my env/python", run_id="r-1", since=7, dashboard_port=9)
    assert cmd == "'/opt/my env/python' -m tether.cluster.stream r-1 --since 7 --dashboard-port 9"


def test_human_lines_say_what_changed():
    def ev(**kw) -> StreamedEvent:
        base = {"seq": 1, "time": 1.7e9, "run": "r", "trial": None, "stage": "train"}
        return StreamedEvent.from_dict({**base, "worker": "w-2", **kw})

    def text(e: StreamedEvent) -> str | None:
        line = describe(e)
        return None if line is None else re.sub(r"^\d\d:\d\d:\d\d  ", "", line)

    assert text(ev(kind="stage", status="started", attempt=2, resumed_from_epoch=4)) == (
        "[train] started on w-2 (attempt 2, resumed from epoch 4)"
    )
    failed = ev(kind="stage", status="failed", error="boom [x]", last_log_lines=["a", "b"])
    assert text(failed) == "[train] FAILED on w-2: boom [x]\n    | a\n    | b"
    epoch = ev(kind="progress", step=9, epoch=3, epoch_end=True, metrics={"loss": 1 / 3, "n": 2})
    assert text(epoch) == "[train] epoch 3: loss=0.3333 n=2"
    assert text(ev(kind="progress", step=9, epoch=3, metrics={"loss": 0.1})) is None
    # a loop of the user's that reports once per epoch (no step) is an epoch summary too
    assert (
        text(ev(kind="progress", step=None, epoch=4, metrics={"loss": 0.25}))
        == "[train] epoch 4: loss=0.25"
    )
    assert text(ev(kind="progress", step=None, epoch=4, metrics={})) is None
    alert = ev(
        kind="alert", level="warning", code="health:stalled", message="no step", health="stalled"
    )
    assert text(alert) == "[train] ALERT warning health:stalled w-2: no step"
    beat = dict(kind="heartbeat", host="h", pid=1, rss_mb=1.0, gpus=None)
    assert text(ev(**beat)) is None
    assert text(ev(**beat, ended=True, exit_code=-9)) == "[train] worker w-2 ended (exit -9)"
    end = ev(kind="stage", status="failed", terminal=True, run_status="failed", error="x")
    assert text(end) == "[train] run failed: x"


# --------------------------------------------------------------------------- real runs

EMIT = """\
import json, os, sys, time

def tether(**event):
    print("TETHER " + json.dumps(event), flush=True)

stop, most = sys.argv[1], int(sys.argv[2])
tether(kind="alert", level="warning", code="demo:literal", message="loader [data] is :slow:")
deadline = time.time() + 120
step = 0
while step < most and not os.path.exists(stop) and time.time() < deadline:
    step += 1
    tether(step=step, epoch=(step - 1) // 10 + 1, epoch_end=step % 10 == 0,
           metrics={"loss": 1.0 / step})
    time.sleep(0.1)
"""


def _emit_spec(repo: Path, *, stop: Path, most: int) -> None:
    (repo / "emit.py").write_text(EMIT)
    command = f"{sys.executable} emit.py {stop} {most}"
    (repo / "emit.toml").write_text(
        f'name = "emit"\n[[stages]]\nname = "emit"\ncommand = \'{command}\'\n'
    )
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "emitting spec", cwd=repo)


def _submit(capsys) -> dict:
    capsys.readouterr()
    assert tether(["submit", "emit.toml", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def _wait(dashboard: str, job_id: str, timeout: float = 240) -> str:
    client = JobSubmissionClient(dashboard)
    deadline = time.monotonic() + timeout
    while not (status := client.get_job_status(job_id)).is_terminal():
        assert time.monotonic() < deadline, client.get_job_logs(job_id)[-3000:]
        time.sleep(0.5)
    return status


def _run(capsys, argv: list[str]) -> tuple[int, str, str]:
    capsys.readouterr()
    code = tether(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_tether_events_prints_human_lines_since_and_json_over_the_local_profile(
    git_repo, ray_cluster, tmp_path, capsys, monkeypatch
):
    repo = git_repo.path
    write_local_profile(repo, ray_cluster)
    _emit_spec(repo, stop=tmp_path / "never", most=30)
    monkeypatch.chdir(repo)
    monkeypatch.setenv("COLUMNS", "200")
    sub = _submit(capsys)
    run_id = sub["run_id"]
    assert _wait(ray_cluster.dashboard_url, sub["job_id"]) == JobStatus.SUCCEEDED

    code, out, err = _run(capsys, ["events", run_id, "--json"])
    assert code == 0, err
    events = [json.loads(line) for line in out.splitlines()]
    last = events[-1]["seq"]
    assert [e["seq"] for e in events] == list(range(1, last + 1))
    assert events[-1]["terminal"] is True and events[-1]["run_status"] == "succeeded"
    steps = [e["step"] for e in events if e["kind"] == "progress" and e["stage"] == "emit"]
    assert steps == list(range(1, 31))

    code, out, err = _run(capsys, ["events", run_id])
    assert code == 0, err
    lines = [re.sub(r"^\d\d:\d\d:\d\d  ", "", line) for line in out.splitlines()]
    alert = r"\[emit\] ALERT warning demo:literal \S+: loader \[data\] is :slow:"
    assert any(re.fullmatch(alert, line) for line in lines), lines  # printed literally
    epochs = [line for line in lines if line.startswith("[emit] epoch ")]
    assert epochs == ["[emit] epoch 1: loss=0.1", "[emit] epoch 2: loss=0.05",
                      "[emit] epoch 3: loss=0.03333"]  # fmt: skip
    assert any(re.fullmatch(r"\[emit\] started on \S+", line) for line in lines), lines
    assert any(re.fullmatch(r"\[emit\] finished on \S+", line) for line in lines), lines
    assert "run succeeded" in lines
    assert lines[-1] == (
        f"{last} events after seq 0, up to seq {last}; "
        f"follow on: tether events {run_id} -f --since {last}"
    )
    assert not any("step" in line for line in lines)  # steps and heartbeats are left out

    code, out, err = _run(capsys, ["events", run_id, "--since", str(last - 3), "--json"])
    assert code == 0, err
    assert [json.loads(line)["seq"] for line in out.splitlines()] == list(range(last - 2, last + 1))
    code, out, err = _run(capsys, ["events", run_id, "--since", str(last)])
    assert code == 0 and out.splitlines()[-1].startswith(f"0 events after seq {last}"), err

    code, out, err = _run(capsys, ["events", f"nosuch-{uuid.uuid4().hex[:6]}"])
    assert code == 2 and "error: no events for run 'nosuch-" in err, err
    assert "hint:" in err and "Traceback" not in err and out == ""
    code, out, err = _run(capsys, ["events", "../x"])
    assert code == 2 and "is not a run id" in err


def test_the_head_side_finds_the_cluster_by_its_dashboard_port(ray_cluster, tmp_path):
    """`--dashboard-port`: the GCS of the cluster whose dashboard serves it, reached from a
    shell without Ray's single-machine setting (the stream sets it for a loopback address)."""
    from tether.client.localcluster import free_port

    env = {k: v for k, v in os.environ.items() if k != "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"}
    port = ray_cluster.dashboard_url.rsplit(":", 1)[1]

    def stream(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "tether.cluster.stream", "missing-run", *args],
            capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path,
        )  # fmt: skip

    res = stream("--dashboard-port", port)
    assert res.returncode == 2 and res.stdout == ""
    assert "stream: no run monitor for run 'missing-run'" in res.stderr, res.stderr[-2000:]
    res = stream("--dashboard-port", str(free_port()), "--once")
    assert res.returncode == 2
    assert "no Ray dashboard serves port" in res.stderr.strip().splitlines()[-1]


def _kill_connections(sshd_pid: int) -> list[int]:
    """Kill each sshd child serving a connection, with the session below it."""
    killed = []
    for conn in psutil.Process(sshd_pid).children():
        for proc in [*conn.children(recursive=True), conn]:
            try:
                proc.send_signal(signal.SIGKILL)
                killed.append(proc.pid)
            except psutil.NoSuchProcess:
                pass
    return killed


def test_events_follow_prints_every_seq_once_across_two_killed_ssh_connections(
    laptop,  # noqa: F811  (the fixture imported from test_submit)
    sshd,
    ray_cluster,
    tmp_path,
    capsys,
):
    repo = laptop  # the ssh profile "head": this machine over the test sshd
    stop = tmp_path / "stop-emitting"
    _emit_spec(repo, stop=stop, most=1200)
    sub = _submit(capsys)

    stderr = tmp_path / "events.stderr"
    with stderr.open("w") as err_file:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tether.client.cli", "events", sub["run_id"], "-f", "--json"],
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=err_file,
            text=True,
        )
    watchdog = threading.Timer(240, proc.kill)
    watchdog.start()
    seqs: list[int] = []
    kills: list[tuple[int, list[int]]] = []  # (last seq printed before the cut, pids)
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            seqs.append(json.loads(line)["seq"])
            since_cut = seqs[-1] - (kills[-1][0] if kills else 0)
            if len(kills) < 2 and since_cut >= 25:
                kills.append((seqs[-1], _kill_connections(sshd.pid)))
            elif len(kills) == 2 and since_cut >= 25 and not stop.exists():
                stop.touch()  # the emitter ends, then the run: the stream must end too
        code = proc.wait(timeout=120)
    finally:
        watchdog.cancel()
        if proc.poll() is None:
            proc.kill()
    err = stderr.read_text()
    assert code == 0, err[-3000:]
    assert len(kills) == 2 and all(pids for _, pids in kills), kills
    # Events kept coming after each cut, through a new connection.
    assert seqs[-1] > kills[1][0] > kills[0][0], (kills, seqs[-1])
    # stderr told of each drop, and each reconnect resumed after what was printed before it.
    resumed = [
        int(n) for n in re.findall(r"reconnecting \(attempt \d+\), resuming after seq (\d+)", err)
    ]
    assert any(kills[0][0] <= n < kills[1][0] for n in resumed), err[-3000:]
    assert any(n >= kills[1][0] for n in resumed), err[-3000:]
    # Every seq from 1 to the last, once each, in order; the last is the run's end.
    assert seqs == list(range(1, seqs[-1] + 1))
    assert _wait(ray_cluster.dashboard_url, sub["job_id"]) == JobStatus.SUCCEEDED
    events_file = Path(sub["worktree"]) / "results" / sub["run_id"] / "events.jsonl"
    stored = [json.loads(line) for line in events_file.read_text().splitlines()]
    assert stored[-1]["seq"] == seqs[-1] and stored[-1]["terminal"] is True
