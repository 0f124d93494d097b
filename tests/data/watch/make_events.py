"""Write the fixed event files the watch screen tests replay (run it to regenerate them):

    .venv/bin/python tests/data/watch/make_events.py

- ``compare_midway.jsonl``: a compare run part-way: a ``data`` stage done and committed, the
  ``compare`` stage fanning out 7 trials over 4 GPUs (3 extractors): four finished with
  ``test.accuracy``, one failed (CUDA out of memory), one running, one stalled (alive, no
  progress: the monitor's ``health:stalled`` alert), with alerts, job log lines and a pull.
- ``train_finished.jsonl``: a finished train run: ``train`` (12 epochs), ``evaluate`` and
  ``report``, each committed, then the run's terminal event.

Every event is checked with ``tether.cluster.events.validate_event``; times are fixed (from
``T0``), so the files, and the screens drawn from them, never change.
"""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

from tether.cluster.events import dumps, validate_event

HERE = Path(__file__).resolve().parent
T0 = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
HOST = "gpu-node-1"
COMPARE_RUN = "cmp-20231114-221320-ab12"
TRAIN_RUN = "train-20231114-221320-0f3a"
COMPARE_NOW = T0 + 600.0  # the tests' fixed clock for the compare run (a few s after the end)
TRAIN_NOW = T0 + 400.0


def sha(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def worker_id(name: str) -> str:
    return "w-" + sha(name)[:12]


class Run:
    """Builds one run's events in seq order, each validated against the schema."""

    def __init__(self, run: str) -> None:
        self.run, self.events, self.pids = run, [], {}

    def emit(self, kind: str, t: float, *, trial=None, stage=None, worker=None, **fields):
        event = {"time": round(t, 3), "run": self.run, "trial": trial, "stage": stage,
                 "worker": worker, "kind": kind, **fields}  # fmt: skip
        self.events.append(validate_event(event))

    def stored(self) -> list[dict]:
        """The events as the monitor stores them: in time order, seq 1, 2, 3, ..."""
        ordered = sorted(self.events, key=lambda e: e["time"])  # stable: ties keep their order
        return [validate_event({"seq": i, **e}) for i, e in enumerate(ordered, start=1)]

    def beat(self, t, *, worker, trial=None, stage=None, gpu=None, util=0.0, ended=False):
        pid = self.pids.setdefault(worker, 4100 + len(self.pids))
        gpus = None if gpu is None else [
            {"index": gpu, "util_pct": util, "mem_used_mb": 10240.0 + 512 * gpu,
             "mem_total_mb": 81920.0}
        ]  # fmt: skip
        extra = {"ended": True, "exit_code": 0} if ended else {}
        self.emit("heartbeat", t, trial=trial, stage=stage, worker=worker, host=HOST, pid=pid,
                  rss_mb=2048.0 + 64 * len(self.pids), gpus=gpus, **extra)  # fmt: skip

    def commit(self, t, *, stage, message):
        self.emit("alert", t, stage=stage, level="info", code="git:committed",
                  message=message, commit=sha(message))  # fmt: skip

    def write(self, name: str) -> Path:
        path = HERE / name
        path.write_text("".join(dumps(e) + "\n" for e in self.stored()))
        return path


def curve(epoch: int, *, start: float, end: float, epochs: int, k: float = 3.0) -> float:
    """A smooth training curve from ``start`` to near ``end``."""
    return round(end + (start - end) * math.exp(-k * epoch / epochs), 4)


def train_epochs(run: Run, *, trial, stage, worker, t0, epochs, upto, gpu, final, steps=50,
                 epoch_s=40.0):  # fmt: skip
    """Epochs 1..``upto`` of one training: steps, epoch summaries, heartbeats, log lines."""
    k = 2.0 + int(sha(trial or stage)[:2], 16) / 128  # each trial its own pace
    low = 0.25 + 2 * (0.95 - final)  # and its own floor: a worse extractor plateaus higher
    for epoch in range(1, upto + 1):
        t = t0 + epoch * epoch_s
        for half in (1, 2):  # two step reports per epoch
            step = (epoch - 1) * steps + half * steps // 2
            loss = curve(epoch - 1 + half / 2, start=2.3, end=low, epochs=epochs, k=k)
            run.emit("progress", t - epoch_s + half * epoch_s / 3, trial=trial, stage=stage,
                     worker=worker, step=step, epoch=epoch, metrics={"loss": loss})  # fmt: skip
        metrics = {
            "loss": curve(epoch, start=2.3, end=low, epochs=epochs, k=k),
            "accuracy": curve(epoch, start=0.1, end=final + 0.03, epochs=epochs, k=k),
            "val_loss": curve(epoch, start=2.4, end=low + 0.12, epochs=epochs, k=k),
            "val_accuracy": curve(epoch, start=0.1, end=final, epochs=epochs, k=k),
        }
        run.emit("progress", t, trial=trial, stage=stage, worker=worker, step=epoch * steps,
                 epoch=epoch, metrics=metrics, epoch_end=True)  # fmt: skip
        run.beat(t + 1, worker=worker, trial=trial, stage=stage, gpu=gpu, util=91.0 - epoch)
        line = (f"[{trial or stage}] epoch {epoch}/{epochs} loss={metrics['loss']:.4f} "
                f"val_accuracy={metrics['val_accuracy']:.4f}")  # fmt: skip
        run.emit("log", t + 2, trial=trial, stage=stage, worker=worker, stream="stdout", line=line)


def compare_midway() -> Run:
    r = Run(COMPARE_RUN)
    w = worker_id("data")
    r.emit("stage", T0, stage="data", worker=w, status="started", attempt=1)
    r.beat(T0 + 1, worker=w, stage="data")
    r.emit("log", T0 + 5, stage="data", worker=w, stream="stdout",
           line="downloading ucf101-tiny (12.4 MB)")  # fmt: skip
    r.emit("stage", T0 + 30, stage="data", worker=w, status="finished", summary="ucf101-tiny")
    r.beat(T0 + 30, worker=w, stage="data", ended=True)
    r.commit(T0 + 31, stage="data", message="data: ucf101-tiny 9537 clips")
    drv = worker_id("compare")
    r.emit("stage", T0 + 32, stage="compare", worker=drv, status="started", attempt=1)
    r.beat(T0 + 33, worker=drv, stage="compare")
    r.emit("log", T0 + 34, stage="compare", worker=drv, stream="stdout",
           line="compare: 7 trials submitted (num_gpus=1, 4 GPUs)")  # fmt: skip
    plan = [  # trial, gpu, start, epochs reached, outcome, test.accuracy
        ("i3d-s0", 0, T0 + 35, 10, "finished", 0.912),
        ("magvit-s0", 1, T0 + 35, 10, "finished", 0.874),
        ("i3d-s1", 2, T0 + 36, 10, "finished", 0.905),
        ("cnn-s0", 3, T0 + 36, 2, "failed", None),
        ("magvit-s1", 3, T0 + 85, 10, "finished", 0.861),
        ("i3d-s2", 0, T0 + 205, 3, "running", None),
        ("magvit-s2", 1, T0 + 206, 2, "stalled", None),
    ]
    for name, gpu, start, upto, outcome, acc in plan:
        wid = worker_id(name)
        r.emit("stage", start, trial=name, stage="compare", worker=wid, status="started",
               attempt=1, epochs=10, gpu_ids=[str(gpu)])  # fmt: skip
        r.beat(start + 1, worker=wid, trial=name, stage="compare", gpu=gpu, util=5.0)
        final = {"i3d": 0.9, "magvit": 0.86, "cnn": 0.7}[name.rsplit("-s", 1)[0]]
        epoch_s = 15.0 if outcome in ("finished", "failed") else 120.0
        train_epochs(r, trial=name, stage="compare", worker=wid, t0=start, epochs=10, upto=upto,
                     gpu=gpu, final=final, epoch_s=epoch_s)  # fmt: skip
        end = start + (upto + 1) * epoch_s
        if outcome == "finished":
            r.emit("metric", end, trial=name, stage="compare", worker=wid, name="test.accuracy",
                   value=acc, step=None, epoch=None)  # fmt: skip
            r.emit("metric", end, trial=name, stage="compare", worker=wid, name="test.loss",
                   value=round(1.3 - acc, 4), step=None, epoch=None)  # fmt: skip
            r.emit("stage", end + 1, trial=name, stage="compare", worker=wid, status="finished",
                   summary=f"{name} test.accuracy={acc:.4g}")  # fmt: skip
            r.beat(end + 1, worker=wid, trial=name, stage="compare", gpu=gpu, ended=True)
            r.commit(end + 2, stage="compare", message=f"compare: {name} test.accuracy={acc}")
        elif outcome == "failed":
            err = "CUDA out of memory. Tried to allocate 2.00 GiB"
            r.emit("log", end, trial=name, stage="compare", worker=wid, stream="stderr",
                   line=f"torch.OutOfMemoryError: {err}")  # fmt: skip
            r.emit("stage", end + 1, trial=name, stage="compare", worker=wid, status="failed",
                   error=err)  # fmt: skip
            r.emit("alert", end + 1, trial=name, stage="compare", worker=wid, level="critical",
                   code="health:failed", health="failed",
                   message=f"{name} failed in compare: {err}")  # fmt: skip
    r.emit("alert", T0 + 200, trial="magvit-s0", stage="compare", worker=worker_id("magvit-s0"),
           level="warning", code="curve:plateau", epoch=8,
           message="val_loss plateaued at 0.47 for 3 epochs")  # fmt: skip
    r.emit("alert", T0 + 210, trial="i3d-s0", stage="compare", worker=worker_id("i3d-s0"),
           level="info", code="milestone:best", epoch=10,
           message="best val_accuracy so far: 0.9151")  # fmt: skip
    # magvit-s2 stops progressing: the thread still beats, the monitor calls it stalled
    ws = worker_id("magvit-s2")
    for k in range(1, 6):
        r.beat(T0 + 530 + 10 * k, worker=ws, trial="magvit-s2", stage="compare", gpu=1, util=0.0)
    last = T0 + 206 + 2 * 120.0  # its last epoch's end
    r.emit("alert", T0 + 575, trial="magvit-s2", stage="compare", worker=ws, level="warning",
           code="health:stalled", health="stalled",
           message=f"magvit-s2 is stalled: alive, but no progress for {T0 + 575 - last:.0f} s "
           "(stall timeout 120 s)")  # fmt: skip
    r.emit("log", T0 + 576, trial="magvit-s2", stage="compare", worker=ws, stream="stderr",
           line="[rank0] NCCL WARN Call to recv failed: Connection timed out")  # fmt: skip
    r.beat(T0 + 590, worker=drv, stage="compare")
    r.emit("sync", T0 + 594, ok=True, files=14, bytes=187_392, unchanged=9,
           transferred=["compare/comparison.json", "compare/comparison.md", "PROGRESS.txt"],
           skipped=[], refused=[["compare/i3d-s0/checkpoint.pt", "over the 50 MB size cap"]],
           deleted=[], duration_s=0.42)  # fmt: skip
    return r


def train_finished() -> Run:
    r = Run(TRAIN_RUN)
    w = worker_id("train")
    r.emit("stage", T0, stage="train", worker=w, status="started", attempt=1, epochs=12)
    r.beat(T0 + 1, worker=w, stage="train", gpu=0, util=3.0)
    train_epochs(r, trial=None, stage="train", worker=w, t0=T0, epochs=12, upto=12, gpu=0,
                 final=0.93, epoch_s=20.0)  # fmt: skip
    r.emit("alert", T0 + 200, stage="train", worker=w, level="warning", code="curve:overfitting",
           epoch=10, message="val_loss rising while loss falls (epochs 8-10)")  # fmt: skip
    r.emit("stage", T0 + 262, stage="train", worker=w, status="finished",
           summary="12 epochs, val_accuracy=0.9288")  # fmt: skip
    r.beat(T0 + 262, worker=w, stage="train", gpu=0, ended=True)
    r.commit(T0 + 263, stage="train", message="train: 12 epochs, val_acc=0.929")
    for i, (stage, dur) in enumerate((("evaluate", 40.0), ("report", 25.0))):
        start = T0 + 270 + 50 * i
        wid = worker_id(stage)
        r.emit("stage", start, stage=stage, worker=wid, status="started", attempt=1)
        r.beat(start + 1, worker=wid, stage=stage)
        r.emit("log", start + 5, stage=stage, worker=wid, stream="stdout",
               line=f"{stage}: writing results/{TRAIN_RUN}/{stage}.json")  # fmt: skip
        if stage == "evaluate":
            r.emit("metric", start + dur - 1, stage=stage, worker=wid, name="test.accuracy",
                   value=0.9214, step=None, epoch=None)  # fmt: skip
        r.emit("stage", start + dur, stage=stage, worker=wid, status="finished")
        r.beat(start + dur, worker=wid, stage=stage, ended=True)
        r.commit(start + dur + 1, stage=stage, message=f"{stage}: {TRAIN_RUN}")
    r.emit("sync", T0 + 370, ok=True, files=23, bytes=1_482_113, unchanged=20,
           transferred=["report.html", "report.md", "PROGRESS.txt"], skipped=[], refused=[],
           deleted=[], duration_s=0.61)  # fmt: skip
    r.emit("stage", T0 + 372, stage=None, status="finished", terminal=True,
           run_status="succeeded")  # fmt: skip
    return r


def main() -> None:
    for run, name in ((compare_midway(), "compare_midway.jsonl"),
                      (train_finished(), "train_finished.jsonl")):  # fmt: skip
        path = run.write(name)
        print(f"{path.relative_to(HERE.parents[2])}: {len(run.events)} events")


if __name__ == "__main__":
    main()
