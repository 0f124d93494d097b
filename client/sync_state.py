"""The result puller's local state and lock, both in the destination folder.

``dest/.tether-sync.json`` (written atomically) remembers each pulled file: its size, mtime
and sha256 on the head and the mtime of the copy here. A copy still as pulled (same size and
local mtime) is "intact": the head is told it holds it, and a grown file may be extended by
its tail (its sha256 is the prefix the head checks). One pull at a time per destination:
``flock`` on ``dest/.tether-sync.lock``.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tether.ml.atomic import write_bytes_atomic

from .errors import SyncError
from .sync_paths import LOCK_NAME, STATE_NAME, path_problem

_log = logging.getLogger(__name__)

_STATE_VERSION = 1


@dataclass(frozen=True)
class Record:
    """A pulled file: its size, mtime and sha256 on the head, and the mtime of the copy here
    (the head's, unless this filesystem keeps coarser times)."""

    size: int
    mtime_ns: int
    sha256: str
    local_mtime_ns: int


@contextmanager
def dest_lock(root: Path, *, timeout_s: float) -> Iterator[None]:
    """Hold ``root/.tether-sync.lock`` (flock, exclusive), waiting up to ``timeout_s``."""
    path = root / LOCK_NAME
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
    try:
        deadline = time.monotonic() + timeout_s
        delay = 0.005
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SyncError(
                        f"another pull into {root} is still running "
                        f"(waited {timeout_s:g}s for {path})",
                        hint="let it finish, or stop the other tether process pulling there",
                    ) from None
                time.sleep(min(delay, left))
                delay = min(delay * 2, 0.1)
        yield
    finally:
        os.close(fd)  # releases the lock


def load_state(root: Path, *, remote_root: str) -> dict[str, Record]:
    """What earlier pulls of ``remote_root`` into ``root`` brought; empty when there is no
    state, it is unreadable (logged) or it is of another head folder."""
    path = root / STATE_NAME
    try:
        raw = json.loads(path.read_bytes())
        if raw.get("version") != _STATE_VERSION or raw.get("remote_root") != remote_root:
            return {}
        return {
            rel: Record(int(size), int(mtime), str(sha), int(local))
            for rel, (size, mtime, sha, local) in raw["files"].items()
            if path_problem(rel) is None
        }
    except FileNotFoundError:
        return {}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        _log.warning("ignoring unreadable sync state %s (%s): pulling everything", path, exc)
        return {}


def save_state(root: Path, *, remote_root: str, state: dict[str, Record]) -> None:
    files = {
        rel: [r.size, r.mtime_ns, r.sha256, r.local_mtime_ns] for rel, r in sorted(state.items())
    }
    doc = {"version": _STATE_VERSION, "remote_root": remote_root, "files": files}
    write_bytes_atomic(root / STATE_NAME, json.dumps(doc, separators=(",", ":")).encode())


def is_intact(path: str, record: Record) -> bool:
    """The local copy at ``path`` is still a regular file as the pull left it."""
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return (
        stat.S_ISREG(st.st_mode)
        and st.st_size == record.size
        and st.st_mtime_ns == record.local_mtime_ns
    )


def known_files(root: Path, state: dict[str, Record]) -> tuple[list[list[Any]], set[str]]:
    """What to tell the agent we hold: files whose local copy is still as pulled are sent
    with their size and mtime; a copy changed or deleted here with size -1 (pull it again).
    Also returns the intact paths."""
    known: list[list[Any]] = []
    intact: set[str] = set()
    base = str(root)
    for rel, rec in state.items():
        if is_intact(f"{base}/{rel}", rec):
            intact.add(rel)
            known.append([rel, rec.size, rec.mtime_ns])
        else:
            known.append([rel, -1, rec.mtime_ns])
    return known, intact
