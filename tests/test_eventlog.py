"""events.jsonl (cluster/eventlog.py): one write and one fsync per batch, a torn tail cut
after a crash, a damaged middle refused; the same file for the monitor and local writers."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from tether.cluster.eventlog import EventLog, EventLogCorruptError
from tether.cluster.events import make_event
from tether.ml.atomic import write_all


def log_event(n: int) -> dict:
    return make_event(kind="log", run="r", time=1.0, stream="stdout", line=f"line {n}")


def batch(first_seq: int, n: int, *, src: str = "w", number: int = 1) -> list[dict]:
    return [
        {**log_event(first_seq + i), "src": src, "batch": number, "seq": first_seq + i}
        for i in range(n)
    ]


class Counted:
    """The real write and fsync, counted: (what, fd, bytes written) per call."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int, int]] = []

    def write(self, fd: int, data: bytes) -> None:
        self.calls.append(("write", fd, len(data)))
        write_all(fd, data)

    def sync(self, fd: int) -> None:
        self.calls.append(("fsync", fd, os.fstat(fd).st_size))
        os.fsync(fd)


def test_each_batch_is_one_write_then_one_fsync(tmp_path):
    counted = Counted()
    log = EventLog(tmp_path / "events.jsonl", write=counted.write, sync=counted.sync)
    sizes = []
    for number, (first, n) in enumerate([(1, 5), (6, 1), (7, 300)], 1):
        offsets = log.append(batch(first, n, number=number))
        assert len(offsets) == n and offsets[0] == (sizes[-1] if sizes else 0)
        sizes.append(os.path.getsize(log.path))
    assert [c[0] for c in counted.calls] == ["write", "fsync"] * 3
    # Each write is the whole batch, and the fsync comes after it, at that size.
    written = [c[2] for c in counted.calls if c[0] == "write"]
    assert written == [sizes[0], sizes[1] - sizes[0], sizes[2] - sizes[1]]
    assert [c[2] for c in counted.calls if c[0] == "fsync"] == sizes
    lines = [json.loads(x) for x in log.path.read_text().splitlines()]
    assert [e["seq"] for e in lines] == list(range(1, 307))
    assert [e["seq"] for e in lines if e.get("batch_end")] == [5, 6, 306]
    # Not durable (a local script's file): the write only.
    local = Counted()
    EventLog(tmp_path / "local.jsonl", durable=False, write=local.write, sync=local.sync).append(
        batch(1, 3)
    )
    assert [c[0] for c in local.calls] == ["write"]


def test_a_torn_tail_is_cut_and_the_next_batch_follows_the_last_complete_one(tmp_path):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.append(batch(1, 2, number=1))
    log.append(batch(3, 2, number=2))
    good = path.read_bytes()
    log.close()
    with open(path, "ab") as f:  # a crash in the middle of batch 3: one whole line, half one
        f.write(json.dumps(batch(5, 1, number=3)[0]).encode() + b"\n")
        f.write(b'{"time": 1.0, "run": "r", "ki')
    reopened = EventLog(path)
    replayed = list(reopened.replay())
    assert [e["seq"] for e, _ in replayed] == [1, 2, 3, 4]
    assert [off for _, off in replayed][:2] == [0, good.index(b"\n") + 1]
    assert path.read_bytes() == good and reopened.size == len(good)
    reopened.append(batch(5, 1, number=3))
    assert [json.loads(x)["seq"] for x in path.read_text().splitlines()] == [1, 2, 3, 4, 5]
    assert [e["seq"] for e in reopened.events_from(replayed[2][1])] == [3, 4, 5]


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda lines: [lines[0][:15] + b"\n", *lines[1:]], "line 1 is damaged but complete"),
        (lambda lines: [lines[0], lines[2], lines[3]], "line 2 has seq 3, expected 2"),
    ],
)
def test_a_damaged_middle_is_refused_and_the_file_left_as_it_is(tmp_path, damage, message):
    path = tmp_path / "events.jsonl"
    log = EventLog(path)
    log.append(batch(1, 1, number=1))
    log.append(batch(2, 1, number=2))
    log.append(batch(3, 2, number=3))
    log.close()
    path.write_bytes(b"".join(damage(path.read_bytes().splitlines(keepends=True))))
    before = path.read_bytes()
    with pytest.raises(EventLogCorruptError, match=message):
        list(EventLog(path).replay())
    assert path.read_bytes() == before


def test_an_appender_sharing_the_file_reads_its_tail_backwards(tmp_path):
    path = tmp_path / "events.jsonl"
    first, second = EventLog(path, durable=False), EventLog(path, durable=False)
    first.append(batch(1, 3, src="a"))
    big = [{**e, "line": "x" * 300} for e in batch(4, 400, src="a", number=2)]  # > 64 KiB
    first.append(big)
    with open(path, "ab") as f:
        f.write(b'{"seq": 404, "kind": "log"}\n{"seq": 405, "ki')  # torn, after the last end
    with second.locked():
        assert second.recover_tail() == 403
    assert second.size == os.path.getsize(path)
    second.append(batch(404, 1, src="b"))
    seqs = [json.loads(x)["seq"] for x in path.read_text().splitlines()]
    assert seqs == list(range(1, 405))


def test_the_progress_views_never_recreate_a_removed_run_folder(tmp_path):
    """A stopped run's monitor keeps its periodic view writes; after `tether prune` removed
    the run's worktree they must not bring the folder back."""
    from tether.cluster.health import HealthRules
    from tether.cluster.monitor_state import MonitorState
    from tether.cluster.progress_files import HEARTBEAT_FILE, ProgressFiles

    run_dir = tmp_path / "wt" / "results" / "r-1"
    run_dir.mkdir(parents=True)
    files = ProgressFiles(run_dir=run_dir, run_id="r-1", heartbeat_every_s=0)
    rules = HealthRules(heartbeat_s=1, stall_timeout_s=30)
    files.write(MonitorState(), now=1.0, rules=rules, force=True)
    assert (run_dir / HEARTBEAT_FILE).is_file()
    shutil.rmtree(tmp_path / "wt")
    files.write(MonitorState(), now=2.0, rules=rules, force=True)
    assert not (tmp_path / "wt").exists()
