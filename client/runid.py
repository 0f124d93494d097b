"""Run ids: the one rule for what a run id may be, and how a new one is made.

A run id names the run's Ray job (``tether-<run id>``), its branch (``tether/<spec>/<run
id>``), its worktree on the head and ``results/<run id>/`` on the laptop, so it is a safe
path component: 1-128 letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit,
never containing ``..``.
"""

from __future__ import annotations

import re
import secrets
import time

from .errors import TetherError

RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
RUN_ID_RULE = "1-128 letters, digits, '.', '_' or '-', starting with a letter or digit, no '..'"


def is_run_id(text: object) -> bool:
    """Whether ``text`` is a valid run id (see the module docstring)."""
    return isinstance(text, str) and RUN_ID.fullmatch(text) is not None and ".." not in text


def check_run_id(run_id: str) -> str:
    """``run_id`` when it is valid; a ``TetherError`` saying what run ids look like otherwise."""
    if not is_run_id(run_id):
        raise TetherError(
            f"{run_id!r} is not a run id",
            hint="run ids look like exp-20261122-101500-ab12: see `tether runs`",
        )
    return run_id


def new_run_id(prefix: str) -> str:
    """``<prefix>-<YYYYmmdd-HHMMSS>-<4 hex digits>``: sortable by time, unique in practice."""
    return f"{prefix}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}"
