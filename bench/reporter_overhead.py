"""Reporter overhead and run-monitor throughput.

(a) What ``Reporter.report(step=i, metrics={"loss": x})`` costs the training loop, against a
    baseline loop doing the same work (computing ``x``, building the metrics dict) without
    reporting, measured in the same run. Two figures per mode (local file, Ray):
    * ``hot path``: the call itself, with the reporter's thread idle while the loop runs
      (its batch size and flush interval set beyond the loop), i.e. what a training step pays;
    * ``sustained``: default settings, the reporter's thread turning events into JSON/pickle
      batches and shipping them while the loop runs, competing for the GIL; at these rates
      (millions of calls per second, no training work) this is the worst case.
(b) Events/s that ONE run monitor (cluster/monitor.py, fsync per push) sustains from 8
    concurrent reporter Ray tasks, each pushing N progress events; counted at the end from
    the monitor's last seq and its events.jsonl, so nothing lost or doubled goes unnoticed.

    .venv/bin/python bench/reporter_overhead.py [--calls 200000] [--tasks 8] [--events 25000]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from tether.cluster.reporter import Reporter
from tether.cluster.transports import JsonlTransport

REPEATS = 5


def _baseline(n: int, burst: int) -> float:
    """The loop's own work (a value, a metrics dict per step), timed in bursts like below."""
    total = 0.0
    sink = None
    for first in range(0, n, burst):
        t = time.perf_counter()
        for i in range(first, min(n, first + burst)):
            x = 1.0 / (i + 1)
            sink = {"loss": x}
        total += time.perf_counter() - t
    del sink
    return total


def _reporting(reporter: Reporter, n: int, burst: int, *, flush_between: bool) -> float:
    """The same loop reporting each step; with ``flush_between`` the reporter's queue is
    flushed (untimed) after each burst, as its thread does between a training loop's steps."""
    report = reporter.report
    total = 0.0
    for first in range(0, n, burst):
        t = time.perf_counter()
        for i in range(first, min(n, first + burst)):
            x = 1.0 / (i + 1)
            report(step=i, metrics={"loss": x})
        total += time.perf_counter() - t
        if flush_between:
            assert reporter.flush(timeout=60)
    return total


def measure_hot_path(make: Callable[..., Reporter], n: int, *, idle_thread: bool) -> dict:
    """Median over REPEATS of (baseline s, reporting s); a fresh reporter per repeat.
    ``idle_thread``: timed bursts of 500 calls while the reporter's thread sleeps (batch size
    and flush interval beyond a burst), flushed between bursts; else one timed run at the
    default settings with the thread shipping batches concurrently."""
    base, rep = [], []
    burst = 500 if idle_thread else n
    for _ in range(REPEATS):
        kw = {"max_batch": 10 * burst, "flush_interval_s": 3600.0}
        reporter = make(**(kw if idle_thread else {}))
        time.sleep(0.2)  # let the first heartbeat go out
        base.append(_baseline(n, burst))
        rep.append(_reporting(reporter, n, burst, flush_between=idle_thread))
        assert reporter.close(timeout=300), "reporter did not deliver everything"
        assert reporter.stats().sent_events >= n
    b, r = statistics.median(base), statistics.median(rep)
    return {
        "base_ns": b / n * 1e9,
        "report_ns": r / n * 1e9,
        "overhead_ns": (r - b) / n * 1e9,
        "ratio": r / b,
    }


# --------------------------------------------------------------------------- throughput


def throughput(*, tasks: int, events: int, run_dir: Path) -> dict:
    import ray

    from tether.cluster.monitor import start_monitor, stop_monitor

    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    monitor = start_monitor(run_id=run_id, run_dir=run_dir)

    @ray.remote(num_cpus=0)
    class Gate:
        def __init__(self) -> None:
            self.arrived = 0
            self.go = False

        def arrive(self) -> None:
            self.arrived += 1

        def count(self) -> int:
            return self.arrived

        def open(self) -> None:
            self.go = True

        def is_open(self) -> bool:
            return self.go

    @ray.remote(num_cpus=0)
    def push_events(gate, run_id: str, trial: str, n: int) -> dict:
        from tether.cluster.reporter import get_reporter

        reporter = get_reporter(run_id=run_id, trial=trial, stage="bench")
        assert reporter.mode == "ray", reporter.mode
        ray.get(gate.arrive.remote())
        while not ray.get(gate.is_open.remote()):
            time.sleep(0.005)
        start = time.time()
        for i in range(n):
            reporter.report(step=i, metrics={"loss": 1.0 / (i + 1)})
        ok = reporter.close(timeout=600)
        end = time.time()
        s = reporter.stats()
        return {"start": start, "end": end, "ok": ok, "sent": s.sent_events, "worker": s.worker}

    gate = Gate.remote()
    refs = [push_events.remote(gate, run_id, f"t{k}", events) for k in range(tasks)]
    deadline = time.monotonic() + 300
    while ray.get(gate.count.remote()) < tasks:
        if time.monotonic() > deadline:
            raise TimeoutError("the reporter tasks did not all start")
        time.sleep(0.05)
    ray.get(gate.open.remote())
    results = ray.get(refs, timeout=900)
    last_seq = ray.get(monitor.last_seq.remote())
    stop_monitor(run_id=run_id)

    stored = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    by_worker: dict[str, list[int]] = {}
    for e in stored:
        if e["kind"] == "progress":
            by_worker.setdefault(e["worker"], []).append(e["step"])
    exact = all(by_worker.get(r["worker"]) == list(range(events)) for r in results)
    pushed = sum(r["sent"] for r in results)
    from_reporters = sum(1 for e in stored if e["src"] != "@monitor")
    span = max(r["end"] for r in results) - min(r["start"] for r in results)
    return {
        "tasks": tasks,
        "events": events * tasks,
        "pushed": pushed,
        "stored_from_reporters": from_reporters,
        "last_seq": last_seq,
        "lines": len(stored),
        "all_ok": all(r["ok"] for r in results),
        "exactly_once_in_order": exact and pushed == from_reporters,
        "seconds": span,
        "events_per_s": pushed / span,
    }


def _measure(args: argparse.Namespace, tmp: Path) -> tuple[list, dict | None]:
    rows = []

    def file_reporter(**kw) -> Reporter:
        path = tmp / f"local-{uuid.uuid4().hex[:6]}.jsonl"
        return Reporter(transport=JsonlTransport(path=path), run_id="bench", **kw)

    for what, idle in (("hot path", True), ("sustained", False)):
        r = measure_hot_path(file_reporter, args.calls, idle_thread=idle)
        rows.append(("local file", what, r))
    if args.skip_ray:
        return rows, None

    import ray

    from tether.cluster.monitor import start_monitor, stop_monitor
    from tether.cluster.transports import MonitorTransport

    # Like the project's own local cluster: no token auth. Left unset, a new local ray.init()
    # writes ~/.ray/auth_token, which then turns token auth on for every later `ray start` on
    # this machine (and breaks its unauthenticated Jobs API clients).
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    ray.init(num_cpus=max(8, args.tasks), include_dashboard=False, log_to_driver=False)
    try:
        run_id = f"bench-hot-{uuid.uuid4().hex[:6]}"
        start_monitor(run_id=run_id, run_dir=tmp / run_id)

        def ray_reporter(**kw) -> Reporter:
            transport = MonitorTransport.for_run(run_id=run_id)
            return Reporter(transport=transport, run_id=run_id, **kw)

        for what, idle in (("hot path", True), ("sustained", False)):
            r = measure_hot_path(ray_reporter, args.calls, idle_thread=idle)
            rows.append(("Ray (monitor)", what, r))
        stop_monitor(run_id=run_id)
        tp = throughput(tasks=args.tasks, events=args.events, run_dir=tmp / "throughput")
    finally:
        ray.shutdown()
    return rows, tp


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=200_000, help="report() calls per repeat")
    parser.add_argument("--tasks", type=int, default=8)
    parser.add_argument("--events", type=int, default=25_000, help="events per reporter task")
    parser.add_argument("--skip-ray", action="store_true")
    args = parser.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="tether-bench-"))
    try:
        rows, tp = _measure(args, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print(
        f"\n{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}; median of {REPEATS} x {args.calls:,} calls\n"
    )
    print(
        "| mode | measure | baseline ns/iter | with report() ns/iter | report() ns/call | ratio |"
    )
    print("|---|---|---:|---:|---:|---:|")
    for mode, what, r in rows:
        print(
            f"| {mode} | {what} | {r['base_ns']:.0f} | {r['report_ns']:.0f} | "
            f"{r['overhead_ns']:.0f} | {r['ratio']:.1f}x |"
        )
    if tp:
        print(
            f"\n| reporters | events | seconds | events/s into one monitor | monitor last seq "
            f"| every event once, in order |\n|---:|---:|---:|---:|---:|---|\n"
            f"| {tp['tasks']} Ray tasks | {tp['pushed']:,} | {tp['seconds']:.2f} | "
            f"{tp['events_per_s']:,.0f} | {tp['last_seq']:,} | "
            f"{'yes' if tp['exactly_once_in_order'] and tp['all_ok'] else 'NO'} |"
        )
        print(
            f"\n({tp['pushed']:,} events pushed = {tp['events']:,} progress + heartbeats; "
            f"the monitor stored {tp['lines']:,} lines, {tp['lines'] - tp['stored_from_reporters']}"
            " of them its own health alerts.)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
