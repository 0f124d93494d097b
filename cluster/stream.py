"""Print a run's events as JSON lines as they arrive: ``python -m tether.cluster.stream RUN_ID``.

Runs on the head node (``tether watch`` reads its stdout over SSH). Prints every event with
``seq > --since`` once, in seq order, one JSON object per line, flushed; exits 0 when the
run is terminal and every event is printed, 2 when no monitor exists for the run. When the
monitor actor is restarting it waits and carries on from the last printed seq.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import time
from collections.abc import Callable
from typing import TextIO

import ray

from .events import dumps
from .monitor import NAMESPACE, MonitorError, MonitorNotFoundError, get_monitor

PAGE = 1000  # events asked for per call

# The monitor died or is being restarted by Ray: wait, look it up again, go on.
_RESTARTING = (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError)


class StreamError(MonitorError):
    """The monitor stayed unreachable; the message says for how long."""


def stream_events(
    *,
    run_id: str,
    since: int = 0,
    out: TextIO,
    poll_s: float = 0.5,
    is_done: Callable[[], bool] | None = None,
    reconnect_s: float = 120.0,
    call_timeout_s: float = 60.0,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Write each event with ``seq > since`` to ``out`` as one JSON line, in order, until the
    run is terminal and all its events are written (or ``is_done()`` says stop). Returns the
    last seq written (``since`` if none). Raises :class:`MonitorNotFoundError` when the run
    has no monitor, :class:`StreamError` when the monitor is unreachable for ``reconnect_s``."""
    handle = get_monitor(run_id=run_id)
    last = since
    down_since: float | None = None
    while True:
        try:
            page = ray.get(handle.events.remote(since_seq=last, limit=PAGE), timeout=call_timeout_s)
            terminal = False
            if len(page) < PAGE:
                # Terminal is set after the last event is stored: ask, then read once more.
                terminal = ray.get(handle.is_terminal.remote(), timeout=call_timeout_s)
                if terminal:
                    page += ray.get(
                        handle.events.remote(since_seq=page[-1]["seq"] if page else last),
                        timeout=call_timeout_s,
                    )
        except _RESTARTING as exc:
            now = clock()
            down_since = now if down_since is None else down_since
            if now - down_since > reconnect_s:
                raise StreamError(
                    f"the monitor of run {run_id!r} has been unreachable for {reconnect_s:.0f} s "
                    f"(last event printed: seq {last}): {type(exc).__name__}. Resume with "
                    f"--since {last} once `ray status` shows the head node."
                ) from None
            sleep(poll_s)
            # Being restarted, or gone: the deadline above decides.
            with contextlib.suppress(MonitorNotFoundError):
                handle = get_monitor(run_id=run_id)
            continue
        down_since = None
        for event in page:
            if event["seq"] != last + 1:  # the monitor guarantees this; never print a gap
                raise StreamError(f"run {run_id!r}: expected seq {last + 1}, got {event['seq']}")
            out.write(dumps(event) + "\n")
            last = event["seq"]
        if page:
            out.flush()
        if terminal and len(page) < PAGE:
            return last
        if is_done is not None and is_done():
            return last
        if len(page) < PAGE:
            sleep(poll_s)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tether.cluster.stream", description="Print a run's events as JSON lines."
    )
    parser.add_argument("run_id")
    parser.add_argument("--since", type=int, default=0, help="print events after this seq")
    parser.add_argument("--poll-s", type=float, default=0.5, help="seconds between polls")
    parser.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
    args = parser.parse_args(argv)
    if args.since < 0 or args.poll_s <= 0:
        parser.error("--since must be >= 0 and --poll-s > 0")
    try:
        ray.init(
            address=args.address,
            namespace=NAMESPACE,
            log_to_driver=False,
            logging_level=logging.WARNING,
            ignore_reinit_error=True,
        )
    except ConnectionError as exc:
        print(f"stream: cannot connect to Ray at {args.address!r}: {exc}", file=sys.stderr)
        return 2
    try:
        stream_events(run_id=args.run_id, since=args.since, out=sys.stdout, poll_s=args.poll_s)
    except MonitorNotFoundError as exc:
        print(f"stream: {exc}", file=sys.stderr)
        return 2
    except StreamError as exc:
        print(f"stream: {exc}", file=sys.stderr)
        return 3
    except (BrokenPipeError, KeyboardInterrupt):
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
