"""Path safety of the result puller: the head is not trusted.

A path the head sends is usable only when it is a plain relative UTF-8 path (no ``..``, no
empty or ``.`` part, no NUL or line break, not absolute), is not a name reserved by tether in
the destination, and reaches a regular file (or nothing) through real local folders: never
through a local symlink, never onto a local non-file (``LocalTree``). Nothing is written
outside the destination.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from .sync_agent import kind_of

STATE_NAME = ".tether-sync.json"  # what the last pulls brought (client/sync_state.py)
LOCK_NAME = ".tether-sync.lock"  # one pull at a time per destination
MARKER_NAME = ".tether-sync.pulling"  # exists while a transfer runs: a killed pull left temps
PART_PREFIX = ".tether-"
PART_SUFFIX = ".tether-part"  # temp files of a transfer (client/sync_writer.py)
SYNC_LOG_NAME = ".tether-sync.jsonl"  # tether pull's record of each pull (client/pullcmd.py)
RESERVED_NAMES = frozenset({STATE_NAME, LOCK_NAME, MARKER_NAME, SYNC_LOG_NAME})


def path_problem(path: object) -> str | None:
    """Why a path sent by the head cannot be used here as is (None: it can, as far as its
    text goes; the local folders on the way are checked separately)."""
    if not isinstance(path, str) or not path:
        return "not a path"
    if "\x00" in path:
        return "name contains a NUL byte"
    if "\n" in path or "\r" in path:
        return "name contains a line break"
    if path.startswith("/"):
        return "absolute path"
    parts = path.split("/")
    if ".." in parts:
        return "'..' in the path"
    if "" in parts or "." in parts:
        return "not a plain relative path"
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        return "name is not valid UTF-8"
    if path in RESERVED_NAMES or parts[-1].endswith(PART_SUFFIX):
        return "name reserved by tether sync"
    return None


class LocalTree:
    """The destination folder, checked component by component with lstat: a path is usable
    only through real folders and onto a regular file (or nothing). Folders found real (or
    missing, to be made) are remembered for the rest of the pull."""

    def __init__(self, root: Path) -> None:
        self.root = str(root)
        self._folders: dict[str, bool] = {"": True}  # folder -> exists (real) / missing

    def _folder_problem(self, folder: str, *, create: bool) -> str | None:
        done = ""
        for part in folder.split("/"):
            done = f"{done}/{part}" if done else part
            exists = self._folders.get(done)
            if exists or (exists is not None and not create):
                if exists is False:
                    return None  # missing: all below it is too
                continue
            full = f"{self.root}/{done}"
            if exists is None:
                try:
                    st = os.lstat(full)
                except FileNotFoundError:
                    exists = False
                else:
                    if stat.S_ISLNK(st.st_mode):
                        return f"goes through a local symlink ({done!r})"
                    if not stat.S_ISDIR(st.st_mode):
                        return f"{done!r} is not a folder here"
                    self._folders[done] = True
                    continue
            if not create:
                self._folders[done] = False
                return None
            try:
                os.mkdir(full)
            except FileExistsError:
                st = os.lstat(full)
                if not stat.S_ISDIR(st.st_mode):  # a symlink is not S_ISDIR under lstat
                    return f"{done!r} appeared here and is not a folder"
            self._folders[done] = True
        return None

    def problem(self, rel: str, *, create: bool) -> str | None:
        """Why ``rel`` cannot be written here (None: it can). With ``create`` the missing
        folders on the way are made; without, the target is checked too."""
        folder = rel.rpartition("/")[0]
        if folder and self._folders.get(folder) is not True:
            problem = self._folder_problem(folder, create=create)
            if problem is not None or create or self._folders.get(folder) is False:
                return problem
        if create:
            return None
        try:
            st = os.lstat(f"{self.root}/{rel}")
        except FileNotFoundError:
            return None
        if stat.S_ISREG(st.st_mode):
            return None
        return f"a local {kind_of(st.st_mode)} is in the way"
