"""The installed `tether` console script, and clean errors for user mistakes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tether.client import __version__

TETHER = str(Path(sys.executable).with_name("tether"))


def _run(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [TETHER, *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, "COLUMNS": "200", **env},
        timeout=120,
        stdin=subprocess.DEVNULL,
    )


def test_version_and_help():
    res = _run("--version")
    assert res.returncode == 0
    assert res.stdout.strip() == f"tether {__version__}"
    assert __version__ != "0.0.0+unknown"
    res = _run("--help")
    assert res.returncode == 0
    for command in ("doctor", "demo"):
        assert command in res.stdout


def test_bad_config_is_a_clear_error_with_file_and_line_not_a_traceback(git_repo):
    (git_repo.path / "tether.toml").write_text(
        '[profiles.gpu]\nkind = "ssh"\nhost = "head"\ndashbord_port = 8265\n'
    )
    res = _run("demo", cwd=git_repo.path)
    assert res.returncode == 2
    assert "Traceback" not in res.stderr
    assert "tether.toml:4: profiles.gpu.dashbord_port: unknown key" in res.stderr
    # With TETHER_DEBUG=1 the traceback is shown for bug reports.
    res = _run("demo", cwd=git_repo.path, TETHER_DEBUG="1")
    assert res.returncode != 0 and "Traceback" in res.stderr
