"""`tether pull`: the timer (jitter, backoff, final pull) and the command on the embedded
local profile, end to end after a real run."""

from __future__ import annotations

import json
import random
import threading
import time

import pytest
from conftest import git, write_local_profile
from ray.job_submission import JobSubmissionClient

from tether.client.cli import main as tether
from tether.client.errors import TetherError
from tether.client.pullcmd import next_delay, pull_every
from tether.client.sync import PART_SUFFIX


def test_the_timer_jitters_backs_off_after_failures_and_ends_after_the_final_pull():
    outcomes = iter(["fail", "fail", "ok", "fail", "ok", "ok"])
    delays: list[float] = []
    results, errors = [], []
    finished = {"now": False}

    def pull_fn():
        what = next(outcomes)
        if what == "fail":
            raise TetherError("head unreachable")
        return what

    def wait(stop: threading.Event, seconds: float) -> bool:
        delays.append(seconds)
        if len(delays) == 5:
            finished["now"] = True  # the run ended: one more pull, then stop
        return False

    n = pull_every(
        every_s=60, pull_fn=pull_fn, on_result=results.append,
        on_error=lambda exc, d: errors.append((str(exc), d)),
        done=lambda: finished["now"], jitter=0.1, max_backoff_s=200,
        rng=random.Random(7), wait=wait,
    )  # fmt: skip
    assert n == 3 and results == ["ok", "ok", "ok"] and len(errors) == 3
    # fail -> ~120 s, fail -> ~200 s (capped), ok -> ~60 s, fail -> ~120 s, ok -> ~60 s
    for got, base in zip(delays, [120, 200, 60, 120, 60], strict=True):
        assert base * 0.9 <= got <= base * 1.1, delays
    assert len(set(delays)) == len(delays)  # jittered, not a fixed beat
    assert next_delay(every_s=60, failures=30, jitter=0, max_backoff_s=600, rng=random) == 600
    with pytest.raises(TetherError, match="positive"):
        pull_every(every_s=0, pull_fn=pull_fn, on_result=print, on_error=print)


def test_pull_brings_a_finished_runs_results_and_a_second_pull_moves_nothing(
    git_repo, ray_cluster, capsys, monkeypatch
):
    repo = git_repo.path
    write_local_profile(repo, ray_cluster)
    (repo / "quick.toml").write_text('name = "quick"\n[[stages]]\nname = "setup"\n')
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "quick spec", cwd=repo)
    monkeypatch.chdir(repo)
    capsys.readouterr()
    assert tether(["submit", "quick.toml", "--json"]) == 0
    sub = json.loads(capsys.readouterr().out)
    client = JobSubmissionClient(ray_cluster.dashboard_url)
    deadline = time.monotonic() + 180
    while not client.get_job_status(sub["job_id"]).is_terminal():
        assert time.monotonic() < deadline
        time.sleep(0.5)
    run_id = sub["run_id"]
    head_run = repo / ".tether" / "runs" / run_id / "results" / run_id

    assert tether(["pull", run_id, "--json"]) == 0
    first = json.loads(capsys.readouterr().out)
    dest = repo / "results" / run_id
    assert first["dest"] == str(dest) and first["files"] >= 5 and first["bytes"] > 0
    for rel in ("setup/environment.json", "setup/stage.json", "events.jsonl", "PROGRESS.txt"):
        assert (dest / rel).read_bytes() == (head_run / rel).read_bytes(), rel
    # No temp file of the transfer is left behind (the suffix sync's writer gives them).
    assert not [p for p in dest.rglob("*") if p.name.endswith(PART_SUFFIX)]
    assert tether(["pull", run_id, "--json"]) == 0
    second = json.loads(capsys.readouterr().out)
    assert second["files"] == 0 and second["bytes"] == 0 and second["unchanged"] >= 5
    # Each pull is a sync event beside the run folder.
    events = [json.loads(x) for x in (repo / "results" / run_id / ".tether-sync.jsonl").open()]
    assert [e["files"] for e in events] == [first["files"], 0]
    assert [e["sent_bytes"] for e in events] == [first["sent_bytes"], 0] and first["sent_bytes"] > 0
    assert all(e["kind"] == "sync" and e["ok"] for e in events)
    # The human form: one summary line.
    assert tether(["pull", run_id]) == 0
    human = capsys.readouterr().out
    assert f"{run_id}: 0 files, 0 B" in human, (human, head_run.stat(), sorted(head_run.rglob("*")))
    # On a timer, for a run that has ended: one final pull, then it stops by itself.
    assert tether(["pull", run_id, "--every", "1", "--until-done", "--json"]) == 0
    final = json.loads(capsys.readouterr().out)
    assert final["files"] == 0, final
    # Bad input: a clear error, nothing pulled.
    assert tether(["pull", "../etc"]) == 2
    assert "is not a run id" in capsys.readouterr().err
    assert tether(["pull", "no-such-run"]) == 2
    assert "does not exist" in capsys.readouterr().err
