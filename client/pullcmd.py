"""``tether pull RUN [--every S] [--mirror] [--until-done]``: bring a run's lightweight
results from the head into ``results/<run-id>/``, once or on a timer.

The work is ``client.sync.pull`` (stdlib on both sides, one manifest command and one framed
stream per pull, atomic verified writes, a lock per run folder). This module finds the run's
folder on the head, runs pulls on a timer (with jitter, backing off after failures), and
records each pull as a ``sync`` event line in ``results/<run-id>/.tether-sync.jsonl``.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from tether.cluster.events import Kind, dumps, make_event

from .config import TetherConfig
from .errors import TetherError
from .head import Head
from .localstate import own_folder
from .runid import check_run_id
from .sync import SYNC_LOG_NAME, PullResult, pull


@dataclass(frozen=True)
class PullPlan:
    run_id: str
    remote_root: str  # the run's results folder on the head
    dest: Path  # results/<run-id>/ on the laptop
    events: Path  # results/<run-id>/.tether-sync.jsonl


def plan_pull(*, head: Head, config: TetherConfig, run_id: str) -> PullPlan:
    check_run_id(run_id)
    results = config.results_dir.strip("/") or "results"
    # The sync log lives inside the run's folder, so nothing of tether's lands beside the
    # user's own files in results/ (pull_once creates that folder git-ignored).
    dest = head.laptop_repo / results / run_id
    return PullPlan(
        run_id=run_id,
        remote_root=f"{head.worktree(run_id)}/{results}/{run_id}",
        dest=dest,
        events=dest / SYNC_LOG_NAME,
    )


def pull_once(
    *,
    head: Head,
    plan: PullPlan,
    config: TetherConfig,
    mirror: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> PullResult:
    """One pull; its summary is appended to the plan's sync event log either way."""
    started = time.time()
    own_folder(plan.dest)  # git-ignored before the first file lands in it
    try:
        result = pull(
            remote=head.remote,
            python=head.python,
            remote_root=plan.remote_root,
            dest=plan.dest,
            rules=config.sync,
            mirror=mirror,
            progress=progress,
        )
    except TetherError as exc:
        _event(plan, {"time": started, "ok": False, "error": str(exc).splitlines()[0]})
        raise
    _event(plan, {"time": started, "ok": True, **summary_dict(result)})
    return result


def summary_dict(result: PullResult) -> dict:
    d = asdict(result)
    return {
        "files": len(result.transferred),
        "transferred": list(result.transferred),
        "bytes": result.bytes,
        "sent_bytes": result.sent_bytes,  # what crossed the channel (a grown file: its tail)
        "appended": list(result.appended),
        "unchanged": result.unchanged,
        "skipped": [list(x) for x in d["skipped"]],
        "refused": [list(x) for x in d["refused"]],
        "deleted": d["deleted"],
        "duration_s": round(result.duration_s, 3),
    }


def summary_line(result: PullResult) -> str:
    text = (
        f"{len(result.transferred)} files, {_size(result.bytes)} in {result.duration_s:.1f}s; "
        f"{result.unchanged} unchanged"
    )
    if result.skipped:
        changing = sum(1 for _, why in result.skipped if why == "changing")
        text += f", {len(result.skipped)} skipped"
        if changing:
            text += f" ({changing} still being written: next pull)"
    if result.refused:
        text += f", {len(result.refused)} REFUSED"
    if result.deleted:
        text += f", {len(result.deleted)} deleted (--mirror)"
    return text


def _event(plan: PullPlan, fields: dict) -> None:
    """Append a ``sync`` event (the schema's, checked) to the plan's sync log."""
    own_folder(plan.events.parent)
    line = dumps(make_event(kind=Kind.SYNC, run=plan.run_id, **fields))
    with open(plan.events, "a", encoding="utf-8") as f:
        f.write(line + "\n")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


# --------------------------------------------------------------------------- the timer


def next_delay(*, every_s: float, failures: int, jitter: float, max_backoff_s: float, rng) -> float:
    """Seconds to the next pull: ``every_s`` +- ``jitter`` (a fraction), doubled per failure
    in a row, at most ``max_backoff_s`` (never less than ``every_s``)."""
    base = every_s * (2 ** min(failures, 20)) if failures else every_s
    base = min(base, max(max_backoff_s, every_s))
    return max(0.0, base * (1 + rng.uniform(-jitter, jitter)))


def pull_every(
    *,
    every_s: float,
    pull_fn: Callable[[], PullResult],
    on_result: Callable[[PullResult], None],
    on_error: Callable[[Exception, float], None],
    done: Callable[[], bool] = lambda: False,
    stop: threading.Event | None = None,
    jitter: float = 0.1,
    max_backoff_s: float = 600.0,
    rng: random.Random | None = None,
    wait: Callable[[threading.Event, float], bool] | None = None,
) -> int:
    """Pull now, then every ``every_s`` seconds (with jitter), until ``stop`` is set or a pull
    after ``done()`` turned true succeeds (the final pull of a finished run). After a failed
    pull the interval doubles (up to ``max_backoff_s``) until one succeeds. Returns the
    number of successful pulls."""
    if every_s <= 0:
        raise TetherError("--every must be a positive number of seconds")
    stop = stop or threading.Event()
    rng = rng or random.Random()
    wait = wait or (lambda ev, s: ev.wait(s))
    failures = ok = 0
    while not stop.is_set():
        finished = done()
        try:
            result = pull_fn()
        except TetherError as exc:
            failures += 1
            delay = next_delay(
                every_s=every_s, failures=failures, jitter=jitter,
                max_backoff_s=max_backoff_s, rng=rng,
            )  # fmt: skip
            on_error(exc, delay)
        else:
            failures = 0
            ok += 1
            on_result(result)
            if finished:
                return ok
            delay = next_delay(
                every_s=every_s, failures=0, jitter=jitter, max_backoff_s=max_backoff_s, rng=rng
            )
        if wait(stop, delay):
            break
    return ok
