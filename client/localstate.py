"""What tether keeps in a user's repository is git-ignored from the moment it exists.

tether owns two kinds of folder in the laptop repository: ``.tether/`` (run worktrees of the
local profile, their secrets, the embedded cluster's record) and one folder per run under the
results directory (``results/<run-id>/``: the run record, the snapshot diff, pulled results).
Each gets a ``.gitignore`` holding ``*`` before anything else is written into it, so
``git status`` stays clean, ``git add -A`` stages nothing of tether's and a snapshot (which
honours ignores) never carries it, and no file the user tracks (their ``.gitignore``,
``.git/info/exclude``) is edited. The folders around a run folder (``results/`` itself, which
may hold the user's own tracked files) stay theirs.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from tether.ml.atomic import write_bytes_atomic

IGNORE_FILE = ".gitignore"
IGNORE_ALL = b"# written by tether: this folder is tether's local state, never committed\n*\n"
STATE_DIR = ".tether"


def own_folder(path: Path) -> Path:
    """Create ``path`` (and its parents) as a folder tether owns: ignored by git from the
    start. An existing ``.gitignore`` there is left as it is. Returns ``path``."""
    path.mkdir(parents=True, exist_ok=True)
    marker = path / IGNORE_FILE
    if not marker.exists():
        write_bytes_atomic(marker, IGNORE_ALL)
    return path


def state_dir(repo: Path) -> Path:
    """``<repo>/.tether``, created ignored."""
    return own_folder(repo / STATE_DIR)


def run_results_dir(*, repo: Path, results_dir: str, run_id: str) -> Path:
    """``<repo>/<results_dir>/<run-id>``, created ignored (an absolute ``results_dir`` is
    used as it is)."""
    return own_folder(repo / results_dir / run_id)


def tracked_state(*, repo: Path, results_dir: str) -> list[str]:
    """Paths git tracks inside folders tether owns: ``.tether/`` and the run folders under the
    results directory (files directly in ``results_dir``, such as a README, are the user's).
    Empty when ``repo`` is not a git work tree."""
    res = subprocess.run(
        ["git", "ls-files", "-z", "--", STATE_DIR, results_dir],
        cwd=repo,
        capture_output=True,
        env={**os.environ, "GIT_TERMINAL_PROMPT": "0"},
    )
    if res.returncode != 0:
        return []
    results = results_dir.strip("/")
    found = []
    for raw in res.stdout.split(b"\0"):
        if not raw:
            continue
        name = raw.decode(errors="surrogateescape")
        under_results = name.startswith(f"{results}/") and "/" in name[len(results) + 1 :]
        if name.startswith(f"{STATE_DIR}/") or under_results:
            found.append(name)
    return found
