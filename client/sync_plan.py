"""What one pull asks the head for: the agent's manifest, read against the local state.

Each manifest line is checked (path safety, the sync rules, the local folders on the way)
before it counts. A file is asked for whole, or, when it grew past an intact local copy, from
that copy's size (the agent sends only the tail if the head's first bytes still hash to the
copy's sha256). A file whose only change is its mtime (same size, same sha256) is not asked
for: its new mtime is taken here. ``Tally`` keeps what the pull found as it goes.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import sync_agent
from .config import SyncRules
from .sync_paths import LocalTree, path_problem
from .sync_state import Record
from .sync_wire import is_count

MIB = 1024 * 1024


@dataclass(frozen=True)
class Want:
    """A file asked for: its manifest size and mtime, and the byte its tail is asked from
    (0: the whole file)."""

    size: int
    mtime_ns: int
    offset: int


class Tally:
    """A pull's findings so far: the state to save (``new_state``, from the loaded
    ``state``), files unchanged, skipped (path, reason) and refused (repr of the path,
    reason)."""

    def __init__(self, state: dict[str, Record]) -> None:
        self.state = state
        self.new_state = dict(state)
        self.unchanged = 0
        self.skipped: list[tuple[str, str]] = []
        self.refused: list[tuple[str, str]] = []
        self._refused_paths: set[object] = set()

    def refuse(self, path: object, reason: str) -> None:
        self.refused.append((repr(path), reason))
        with contextlib.suppress(TypeError):
            self._refused_paths.add(path)

    def was_refused(self, path: object) -> bool:
        return isinstance(path, str) and path in self._refused_paths


class Planner:
    """Reads the manifest for one pull into ``root`` under ``rules``."""

    def __init__(self, *, root: Path, rules: SyncRules, tree: LocalTree, tally: Tally) -> None:
        self.root = root
        self.rules = rules
        self.max_bytes = int(rules.max_file_mb * MIB)
        self.tree = tree
        self.tally = tally
        self._include = sync_agent.rule_matcher(rules.include)
        self._exclude = sync_agent.rule_matcher(rules.exclude)

    def rules_problem(self, rel: str, size: int) -> str | None:
        name = rel.rpartition("/")[2]
        if not self._include(name, rel) or self._exclude(name, rel):
            return "excluded by the sync rules"
        if size > self.max_bytes:
            return f"over max_file_mb ({self.rules.max_file_mb:g})"
        return None

    def plan(
        self, entries: list[dict[str, Any]], intact: set[str]
    ) -> tuple[list[tuple[str, Want]], list[str]]:
        """The files to ask for (sorted by path) and the known files gone on the head."""
        tally = self.tally
        wanted: dict[str, Want] = {}
        gone: list[str] = []
        reported: set[str] = set()
        for obj in entries:
            if "gone" in obj or "drop" in obj:
                rel = obj.get("gone", obj.get("drop"))
                if isinstance(rel, str) and rel in tally.state:
                    reported.add(rel)
                    if "gone" in obj:
                        gone.append(rel)  # remembered until deleted here (mirror)
                    else:
                        tally.new_state.pop(rel, None)  # not ours to track any more
                continue
            rel = obj.get("p")
            problem = path_problem(rel)
            if problem is not None:
                tally.refuse(rel, problem)
                continue
            assert isinstance(rel, str)
            if rel in reported:
                tally.refuse(rel, "listed twice by the head")
                continue
            reported.add(rel)
            want = self._entry(rel, obj, intact)
            if want is not None:
                wanted[rel] = want
        tally.unchanged += len(intact - reported)
        return sorted(wanted.items()), gone

    def _entry(self, rel: str, obj: dict[str, Any], intact: set[str]) -> Want | None:
        """What to ask for of one manifest line (None: nothing)."""
        tally = self.tally
        if "t" in obj:
            tally.refuse(rel, f"{str(obj['t'])[:40]} on the head (never copied)")
            tally.new_state.pop(rel, None)
            return None
        if "big" in obj:
            tally.skipped.append((rel, f"over max_file_mb ({self.rules.max_file_mb:g})"))
            tally.new_state.pop(rel, None)
            return None
        if "err" in obj:
            tally.skipped.append((rel, f"unreadable on the head: {str(obj['err'])[:200]}"))
            return None
        size, mtime_ns, digest = obj.get("s"), obj.get("m"), obj.get("h")
        if not is_count(size) or not is_count(mtime_ns):
            tally.refuse(rel, "no valid size/mtime")
            return None
        assert isinstance(size, int) and isinstance(mtime_ns, int)
        problem = self.rules_problem(rel, size) or self.tree.problem(rel, create=False)
        if problem is not None:
            tally.refuse(rel, problem)
            return None
        if self._same_content(rel, size, mtime_ns, digest, intact):
            return None
        old = tally.state.get(rel)  # grown past an intact copy: ask for the tail only
        grown = old is not None and rel in intact and 0 < old.size < size
        return Want(size, mtime_ns, old.size if grown else 0)

    def _same_content(
        self, rel: str, size: int, mtime_ns: int, digest: object, intact: set[str]
    ) -> bool:
        """Only the mtime changed on the head (same size and sha256 as our intact copy): take
        the new mtime here too, transfer nothing."""
        old = self.tally.state.get(rel)
        if old is None or rel not in intact or old.size != size or digest != old.sha256:
            return False
        local = f"{self.root}/{rel}"
        try:
            os.utime(local, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
            local_mtime_ns = os.lstat(local).st_mtime_ns
        except OSError:
            return False
        self.tally.new_state[rel] = Record(size, mtime_ns, old.sha256, local_mtime_ns)
        self.tally.unchanged += 1
        return True
