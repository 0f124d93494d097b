"""Processes both sides need to handle, kept in the lowest layer because ``client`` and
``cluster`` may not import each other:

- stopping a command together with everything it started, its process group (the local
  command channel, ``client/remote_local.py``, and command stages,
  ``cluster/command_stage.py``; both start commands with ``start_new_session=True``, so the
  command's pid is its process group id);
- finding the Ray dashboard process that serves a port and the options it was started with
  (``tether cluster status`` on the laptop, ``python -m tether.cluster.stream`` on the head).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

import psutil


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


def dashboard_options(*, port: int) -> dict[str, str] | None:
    """The ``--name=value`` options of this user's Ray dashboard process serving ``port``
    (``gcs-address``, ``temp-dir``, ...), or None when no such process is found."""
    script = os.path.join("dashboard", "dashboard.py")
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []  # None for another user's process
        if f"--port={port}" not in cmdline or not any(p.endswith(script) for p in cmdline):
            continue
        return dict(
            part[2:].split("=", 1) for part in cmdline if part.startswith("--") and "=" in part
        )
    return None
