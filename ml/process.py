"""Stopping a command together with everything it started: its process group.

Shared by the local command channel (``client/remote_local.py``) and command stages
(``cluster/command_stage.py``); both start commands with ``start_new_session=True``, so the
command's pid is its process group id. It lives here, in the lowest layer, because ``client``
and ``cluster`` may not import each other.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def stop_process_group(proc: subprocess.Popen, *, grace_s: float, sweep: bool) -> None:
    """SIGTERM ``proc``'s process group, give its leader ``grace_s`` to exit, then SIGKILL the
    group; reap the leader.

    ``sweep=False``: only while the leader still runs (a command that ended is left alone, and
    one that exits within the grace period is not killed). ``sweep=True``: the group is
    signalled even when the leader has exited, for children that still hold its pipes.
    """
    if sweep or proc.poll() is None:
        _signal_group(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=grace_s)
        if sweep or proc.poll() is None:
            _signal_group(proc.pid, signal.SIGKILL)
    proc.wait()
