"""The sshd fixture skips loudly without sshd, and fails instead under TETHER_REQUIRE_SSHD=1."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TARGET = "tests/test_sshd_remote.py::test_runs_a_command_on_the_head_with_a_verified_host_key"


def _run_without_sshd(require: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TETHER_SSHD_BINARY": "/nonexistent/sshd", "TETHER_REQUIRE_SSHD": require}
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", TARGET],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.usefixtures("sshd")  # only meaningful where sshd exists, so the real run is green
def test_missing_sshd_skips_loudly_by_default():
    res = _run_without_sshd("0")
    assert res.returncode == 0, res.stdout + res.stderr
    assert "1 skipped" in res.stdout
    assert "NO sshd BINARY" in res.stdout
    assert "sshd               1 skipped" in res.stdout  # the summary names it too


@pytest.mark.usefixtures("sshd")
def test_missing_sshd_fails_when_required():
    res = _run_without_sshd("1")
    assert res.returncode == 1, res.stdout + res.stderr
    assert "1 error" in res.stdout
    assert "TETHER_REQUIRE_SSHD=1 makes this a failure" in res.stdout
