"""Replay 100,000 events of a 4-trial run into ``tether watch``'s Run screen (issue 15).

    .venv/bin/python bench/tui_replay.py [--events 100000]

The events are generated here, schema-checked with ``tether.cluster.events.validate_event``:
for each of 4 trials a start, step progress with ``loss``, ``epoch_end`` progress with val
metrics, heartbeats, log lines and alerts. They are fed to a real ``RunModel`` and
``RunScreen`` inside a Textual test app (``App.run_test(size=(140, 40))``) in batches of 500,
as ``client/watch/feeds.py`` delivers them. Measured (printed as JSON):

- ingest: events/s applied to the model (``RunModel.apply_all``, the UI excluded);
- per UI update: ``update_view()`` plus the refresh it causes (``await pilot.pause()``),
  median and p95 in ms;
- RSS after 10,000 and after 100,000 events, and their ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import psutil
from textual.app import App

from tether.client.watch.model import RunModel
from tether.client.watch.run_screen import RunScreen
from tether.cluster.events import validate_event

RUN = "bench-20261202-000000-tui1"
T0 = 1_700_000_000.0
TRIALS = ("i3d-s0", "i3d-s1", "magvit-s0", "magvit-s1")
STEPS_PER_EPOCH = 100
BATCH = 500


def make_events(total: int) -> list[dict]:
    """``total`` schema-valid events of a 4-trial compare run, seq 1..total, time ordered."""
    out: list[dict] = []

    def emit(kind, t, **fields):
        out.append({"seq": len(out) + 1, "time": round(t, 3), "run": RUN, "kind": kind,
                    "trial": None, "stage": None, "worker": None, **fields})  # fmt: skip

    emit("stage", T0, stage="compare", worker="w-driver", status="started", attempt=1)
    for i, name in enumerate(TRIALS):
        emit("stage", T0 + 1, trial=name, stage="compare", worker=f"w-{name}",
             status="started", attempt=1, epochs=10_000, gpu_ids=[str(i)])  # fmt: skip
    step, t = 0, T0 + 2
    while len(out) < total:
        step += 1
        t += 0.05
        for i, name in enumerate(TRIALS):
            if len(out) >= total:
                break
            w = f"w-{name}"
            loss = round(0.2 + 2.0 / (1 + step / 500) + 0.01 * i, 5)
            emit("progress", t, trial=name, stage="compare", worker=w, step=step,
                 epoch=step // STEPS_PER_EPOCH + 1, metrics={"loss": loss})  # fmt: skip
            if step % STEPS_PER_EPOCH == 0 and len(out) < total:
                metrics = {"loss": loss, "val_loss": round(loss + 0.1, 5),
                           "val_accuracy": round(1 - loss / 3, 5)}  # fmt: skip
                emit(
                    "progress",
                    t,
                    trial=name,
                    stage="compare",
                    worker=w,
                    step=step,
                    epoch=step // STEPS_PER_EPOCH,
                    metrics=metrics,
                    epoch_end=True,
                )
            if step % 20 == 0 and len(out) < total:
                emit("heartbeat", t, trial=name, stage="compare", worker=w, host="gpu-node-1",
                     pid=4100 + i, rss_mb=2048.0 + step % 7,
                     gpus=[{"index": i, "util_pct": 90.0, "mem_used_mb": 10240.0,
                            "mem_total_mb": 81920.0}])  # fmt: skip
            if step % 25 == 0 and len(out) < total:
                emit(
                    "log",
                    t,
                    trial=name,
                    stage="compare",
                    worker=w,
                    stream="stdout",
                    line=f"[{name}] step {step} loss={loss:.5f}",
                )
            if step % 1000 == 0 and len(out) < total:
                emit(
                    "alert",
                    t,
                    trial=name,
                    stage="compare",
                    worker=w,
                    level="warning",
                    code="bench:slow",
                    message=f"{name}: step {step} slower than usual",
                )
    return [validate_event(e) for e in out]


class ReplayApp(App):
    def __init__(self, model: RunModel) -> None:
        super().__init__()
        self.model = model
        self.run_screen = RunScreen(model, clock=lambda: T0 + 10_000.0, offline=True)

    def on_mount(self) -> None:
        self.push_screen(self.run_screen)


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


async def replay(events: list[dict]) -> dict:
    model = RunModel(RUN)
    app = ReplayApp(model)
    ui_ms: list[float] = []
    ingest_s = 0.0
    rss_10k = None
    async with app.run_test(size=(140, 40)) as pilot:
        await pilot.pause()
        for i in range(0, len(events), BATCH):
            batch = events[i : i + BATCH]
            t = time.perf_counter()
            model.apply_all(batch)
            ingest_s += time.perf_counter() - t
            t = time.perf_counter()
            app.run_screen.update_view()
            await pilot.pause()
            ui_ms.append((time.perf_counter() - t) * 1000)
            if rss_10k is None and i + BATCH >= 10_000:
                rss_10k = rss_mb()
        rss_end = rss_mb()
    ui_sorted = sorted(ui_ms)
    return {
        "events": len(events),
        "batches": len(ui_ms),
        "ingest_events_per_s": round(len(events) / ingest_s),
        "ui_update_ms_median": round(statistics.median(ui_ms), 2),
        "ui_update_ms_p95": round(ui_sorted[int(0.95 * (len(ui_sorted) - 1))], 2),
        "ui_update_ms_max": round(ui_sorted[-1], 2),
        "rss_mb_10k": round(rss_10k, 1),
        "rss_mb_end": round(rss_end, 1),
        "rss_ratio": round(rss_end / rss_10k, 3),
        "last_seq": model.last_seq,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    args = parser.parse_args()
    t = time.perf_counter()
    events = make_events(args.events)
    gen_s = time.perf_counter() - t
    result = asyncio.run(replay(events))
    result["generate_s"] = round(gen_s, 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
