"""The one event schema (cluster/events.py): the kinds the issue added (sync, a heartbeat's
``ended``, a retried stage's ``attempt``/``resumed_from_epoch``), JSON coercion, and the run's
actor names; what `tether pull` records is a sync event of this schema."""

from __future__ import annotations

import json
import subprocess
import sys
from enum import Enum
from pathlib import Path

import pytest

from tether.client import pullcmd
from tether.client.sync import PullResult
from tether.cluster.events import (
    NAMESPACE,
    EventError,
    dumps,
    head_actor_name,
    make_event,
    monitor_name,
    surely_valid,
    validate_event,
)

ROOT = Path(__file__).resolve().parents[1]


def _result(**kw) -> PullResult:
    base = dict(
        transferred=["events.jsonl", "train/plot.png"], bytes=2048, unchanged=3,
        skipped=[("big.bin", "over the size cap")], refused=[], deleted=[], duration_s=0.25,
    )  # fmt: skip
    return PullResult(**{**base, **kw})


def test_a_pull_summary_is_a_valid_sync_event_and_a_broken_one_is_named():
    fields = pullcmd.summary_dict(_result())
    e = make_event(kind="sync", run="exp-1", time=10.0, ok=True, **fields)
    assert e["kind"] == "sync" and e["files"] == 2 and e["trial"] is None
    failed = make_event(kind="sync", run="exp-1", time=11.0, ok=False, error="ssh: timed out")
    assert failed["error"] == "ssh: timed out"
    with pytest.raises(EventError, match="sync event: missing field 'error'"):
        make_event(kind="sync", run="exp-1", ok=False)
    with pytest.raises(EventError, match="field 'files' is -1; expected a count"):
        make_event(kind="sync", run="exp-1", ok=True, **{**fields, "files": -1})
    with pytest.raises(EventError, match="missing field 'duration_s'"):
        make_event(
            kind="sync", run="exp-1", ok=True, **{k: fields[k] for k in fields if k != "duration_s"}
        )
    with pytest.raises(EventError, match="field 'ok' is 'yes'"):
        make_event(kind="sync", run="exp-1", ok="yes", error="x")


def test_tether_pull_writes_its_records_through_the_schema(tmp_path):
    plan = pullcmd.PullPlan(
        run_id="exp-1", remote_root="/head/results/exp-1", dest=tmp_path / "exp-1",
        events=tmp_path / "exp-1" / ".tether-sync.jsonl",
    )  # fmt: skip
    pullcmd._event(plan, {"time": 5.0, "ok": True, **pullcmd.summary_dict(_result())})
    pullcmd._event(plan, {"time": 6.0, "ok": False, "error": "the head did not answer"})
    lines = [json.loads(x) for x in plan.events.read_text().splitlines()]
    assert [validate_event(e)["ok"] for e in lines] == [True, False]
    assert lines[0]["run"] == "exp-1" and lines[0]["skipped"] == [["big.bin", "over the size cap"]]
    with pytest.raises(EventError, match="missing field 'error'"):  # refused, not written
        pullcmd._event(plan, {"time": 7.0, "ok": False})
    assert len(plan.events.read_text().splitlines()) == 2


def test_retries_and_ended_processes_are_fields_of_their_kinds():
    beat = dict(kind="heartbeat", run="r", worker="w", host="h", pid=7, rss_mb=1.0, gpus=None)
    assert make_event(**beat, ended=True, exit_code=137)["exit_code"] == 137
    with pytest.raises(EventError, match="field 'ended' is 1; expected a boolean"):
        make_event(**beat, ended=1)
    started = make_event(kind="stage", run="r", stage="train", status="started", attempt=2,
                         resumed_from_epoch=2)  # fmt: skip
    assert (started["attempt"], started["resumed_from_epoch"]) == (2, 2)
    with pytest.raises(EventError, match="field 'attempt' is 0"):
        make_event(kind="stage", run="r", status="started", attempt=0)


class Color(Enum):
    RED = "red"


class Scalar:
    """Stands in for a numpy/torch scalar: ``.item()`` gives the Python number."""

    def item(self) -> float:
        return 0.5


def test_dumps_writes_values_json_cannot_hold_as_json_values():
    line = dumps({"a": Scalar(), "b": (1, 2), "c": Color.RED, "d": Path("x/y"), "e": object})
    assert json.loads(line) == {"a": 0.5, "b": [1, 2], "c": "red", "d": "x/y", "e": str(object)}
    assert dumps({"loss": float("nan")}) == '{"loss":NaN}'
    fast = {"time": 1.0, "kind": "progress", "step": 1, "epoch": None, "metrics": {"l": 0.1}}
    assert surely_valid(fast) and not surely_valid({**fast, "step": 1.5})


def test_the_run_actors_have_one_name_each():
    assert (NAMESPACE, monitor_name(run_id="x")) == ("tether", "run:x")
    assert [head_actor_name(kind=k, run_id="x") for k in ("sink", "ckpt")] == ["sink:x", "ckpt:x"]
    with pytest.raises(ValueError, match="head actor kind"):
        head_actor_name(kind="nope", run_id="x")


def test_the_laptop_reads_events_without_ray_or_torch():
    code = (
        "import sys\n"
        "from tether.cluster.events import validate_event\n"
        "validate_event({'time': 1.0, 'run': 'r', 'kind': 'log', 'stream': 'o', 'line': 'x'})\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('ray', 'torch', 'psutil'))\n"
        "print(bad)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "[]"
