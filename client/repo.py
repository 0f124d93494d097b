"""The laptop's repository: the git work tree tether is run from."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .errors import ConfigError


def repo_root(cwd: Path) -> Path:
    """The top folder of the git work tree that holds ``cwd``; ``ConfigError`` outside one."""
    res = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], capture_output=True, text=True, cwd=cwd
    )
    if res.returncode != 0:
        raise ConfigError(
            f"{cwd} is not inside a git repository",
            hint="run tether from your project's repository (or `git init` there)",
        )
    return Path(res.stdout.strip())
