"""The smoke test of `tether watch` in a real terminal: tmux runs `tether watch RUN` (the
installed console script) at 120x40 against a running run on the local Ray cluster; the test
reads the screen with `tmux capture-pane -p`, sees the step count advance, opens and closes
the help with keys, and quits with `q`: exit 0 and the terminal restored (tmux's alternate
screen off again, none of the TUI left on the pane).

tmux comes from scripts/ensure-test-deps.sh (`make test`); without it this test fails and
says so rather than skipping quietly.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from ray.job_submission import JobSubmissionClient
from test_watch_app import _spec, _submit, repo  # noqa: F401  (repo: the fixture)


def _tmux() -> str:
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.fail("tmux is not installed: run scripts/ensure-test-deps.sh (apt-get install tmux)")
    return tmux


def test_tether_watch_in_tmux_shows_progress_and_quits_cleanly(repo, ray_cluster, capsys):  # noqa: F811
    tmux = _tmux()
    _spec(repo, steps=400, pause=0.25, after=0)
    sub = _submit(capsys)
    run_id = sub["run_id"]
    socket = f"tether-test-{uuid.uuid4().hex[:8]}"

    def tm(*args: str) -> str:
        res = subprocess.run(
            [tmux, "-L", socket, "-f", "/dev/null", *args],
            capture_output=True, text=True, timeout=30,
        )  # fmt: skip
        assert res.returncode == 0, f"tmux {args}: {res.stderr}"
        return res.stdout

    def screen() -> str:
        return tm("capture-pane", "-p", "-t", "watch")

    def wait_for(cond: Callable[[str], object], what: str, timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while not cond(text := screen()):
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{text}"
            time.sleep(0.2)
        return text

    def step(text: str) -> int:
        found = re.search(r"train\s+\S*.*?\bs(\d+)\b", text)
        return int(found.group(1)) if found else 0

    exe = Path(sys.executable).parent / "tether"
    command = (
        f"cd {shlex.quote(str(repo))} && {shlex.quote(str(exe))} watch {run_id}; "
        "echo WATCH-EXIT=$?; sleep 300"
    )
    tm("new-session", "-d", "-s", "watch", "-x", "120", "-y", "40", command)
    try:
        first = wait_for(
            lambda s: run_id in s and "train running" in s and step(s) >= 2, "the run screen"
        )
        assert tm("display-message", "-p", "-t", "watch", "#{alternate_on}").strip() == "1"
        wait_for(lambda s: step(s) >= step(first) + 4, "the steps advancing")

        tm("send-keys", "-t", "watch", "?")
        wait_for(lambda s: "tether watch: keys" in s, "the help screen")
        tm("send-keys", "-t", "watch", "Escape")
        wait_for(lambda s: "tether watch: keys" not in s and "pipeline" in s, "the help closed")

        tm("send-keys", "-t", "watch", "q")
        after = wait_for(lambda s: "WATCH-EXIT=" in s, "the app to exit", timeout=60)
        assert "WATCH-EXIT=0" in after, after
        assert tm("display-message", "-p", "-t", "watch", "#{alternate_on}").strip() == "0"
        assert "pipeline" not in after and "Traceback" not in after, after
    finally:
        subprocess.run([tmux, "-L", socket, "kill-server"], capture_output=True, timeout=30)
        JobSubmissionClient(ray_cluster.dashboard_url).stop_job(sub["job_id"])
