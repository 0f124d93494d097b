"""Print a run's events as JSON lines as they arrive: ``python -m tether.cluster.stream RUN_ID``.

Runs on the head node (``tether watch`` and ``tether events`` read its stdout over SSH).
Prints every event with ``seq > --since`` once, in seq order, one JSON object per line,
flushed; exits 0 when the run is terminal and every event is printed, 2 when no monitor exists
for the run (or no Ray cluster answers). When the monitor actor is restarting it waits and
carries on from the last printed seq. ``--once``: print the events there are now and exit 0
(``tether events`` without ``-f``).

Which cluster: ``--address`` (default ``auto``, Ray's own lookup: right on a head with one
cluster), or ``--dashboard-port P``: the cluster whose dashboard serves port P on this machine,
its GCS address read from that dashboard process's command line. The laptop passes the
profile's ``dashboard_port`` (``client/eventstream.py``): on a machine with several clusters
(the embedded one beside a test suite's, or two users' on one head) ``auto`` may pick another.
A loopback cluster (the embedded one, Ray's single-machine mode) is reached only when Ray is
imported with ``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``: ``main`` sets it for a loopback address
before it imports Ray (so Ray is imported in the functions, not at the top of this module).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import TextIO

from tether.ml.process import dashboard_options

from .errors import ClusterRuntimeError
from .events import NAMESPACE, dumps

PAGE = 1000  # events asked for per call
# Ray's single-machine mode, needed to reach a cluster bound to loopback (client/localcluster.py)
SINGLE_MACHINE_ENV = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"
_LOOPBACK_HOSTS = ("127.", "localhost:", "[::1]:", "::1:")


class StreamError(ClusterRuntimeError):
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
    has no monitor, :class:`StreamError` when the monitor is unreachable for ``reconnect_s``.
    ``is_done`` is asked each time the stream has caught up with the monitor."""
    import ray

    from .monitor import MonitorNotFoundError, get_monitor

    # The monitor died or is being restarted by Ray: wait, look it up again, go on.
    restarting = (ray.exceptions.RayActorError, ray.exceptions.GetTimeoutError)
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
        except restarting as exc:
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
        if is_done is not None and len(page) < PAGE and is_done():
            return last
        if len(page) < PAGE:
            sleep(poll_s)


def gcs_address_for_dashboard(*, port: int) -> str | None:
    """The GCS address (host:port) of the Ray cluster whose dashboard serves ``port`` on this
    machine, from that dashboard process's ``--gcs-address``; None when none serves it."""
    return (dashboard_options(port=port) or {}).get("gcs-address")


def _is_loopback(address: str) -> bool:
    return address.startswith(_LOOPBACK_HOSTS)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tether.cluster.stream", description="Print a run's events as JSON lines."
    )
    parser.add_argument("run_id")
    parser.add_argument("--since", type=int, default=0, help="print events after this seq")
    parser.add_argument("--poll-s", type=float, default=0.5, help="seconds between polls")
    parser.add_argument("--address", default="auto", help="Ray cluster address (default: auto)")
    parser.add_argument(
        "--dashboard-port",
        type=int,
        help="with the default --address: the cluster whose dashboard serves this port here",
    )
    parser.add_argument(
        "--once", action="store_true", help="print the events there are now, then exit"
    )
    args = parser.parse_args(argv)
    if args.since < 0 or args.poll_s <= 0:
        parser.error("--since must be >= 0 and --poll-s > 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    address = args.address
    if args.dashboard_port is not None and address == "auto":
        address = gcs_address_for_dashboard(port=args.dashboard_port)
        if address is None:
            print(
                f"stream: cannot connect to Ray: no Ray dashboard serves port "
                f"{args.dashboard_port} on this machine",
                file=sys.stderr,
            )
            return 2
    if _is_loopback(address):  # before Ray is imported: it reads this once
        os.environ[SINGLE_MACHINE_ENV] = "0"
    import ray

    from .monitor import MonitorNotFoundError

    try:
        ray.init(
            address=address,
            namespace=NAMESPACE,
            log_to_driver=False,
            logging_level=logging.WARNING,
            ignore_reinit_error=True,
        )
    except ConnectionError as exc:
        print(f"stream: cannot connect to Ray at {address!r}: {exc}", file=sys.stderr)
        return 2
    try:
        stream_events(
            run_id=args.run_id,
            since=args.since,
            out=sys.stdout,
            poll_s=args.poll_s,
            is_done=(lambda: True) if args.once else None,
        )
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
