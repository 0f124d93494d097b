"""ml/process.py: the one process-group stop shared by the local channel and command stages,
on real processes."""

from __future__ import annotations

import subprocess
import time

import psutil

from tether.ml.process import stop_process_group


def _group(script: str, *, before: str = "") -> tuple[subprocess.Popen, int]:
    """A bash leader in its own session that runs ``before``, starts a background sleeper,
    says its pid (so ``before`` has taken effect when the test reads it), then runs
    ``script``; (leader, child pid)."""
    proc = subprocess.Popen(
        ["bash", "-c", f"{before}sleep 60 & echo $!; {script}"],
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def _gone(pid: int, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.05)
    return False


def test_a_running_group_is_stopped_with_its_children():
    proc, child = _group("sleep 60")
    stop_process_group(proc, grace_s=2.0, sweep=False)
    assert proc.returncode is not None and _gone(child)


def test_a_leader_that_ignores_sigterm_is_killed_after_the_grace():
    proc, child = _group("sleep 60", before="trap '' TERM; ")
    started = time.monotonic()
    stop_process_group(proc, grace_s=0.5, sweep=False)
    assert proc.returncode == -9 and time.monotonic() - started >= 0.5 and _gone(child)


def test_sweep_takes_children_an_exited_leader_left_and_no_sweep_leaves_them():
    left, left_child = _group("exit 0")
    left.wait()
    stop_process_group(left, grace_s=0.5, sweep=False)
    assert not _gone(left_child, timeout=0.5)  # a command that ended is left alone
    swept, swept_child = _group("exit 0")
    swept.wait()
    stop_process_group(swept, grace_s=0.5, sweep=True)
    assert _gone(swept_child)
    psutil.Process(left_child).kill()
