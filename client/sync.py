"""Pull a run's lightweight results from the head into a local folder, without rsync.

Python's standard library on both sides plus the remote's command channel: one command per
pull. ``client/sync_agent.py`` runs on the head with the head's python (its text travels on
the command line; nothing is installed) and holds a short conversation on its stdin/stdout
(the protocol is described there; ``client/sync_wire.py`` is the laptop's half):

1. **manifest**: the laptop sends what it holds (path, size, mtime_ns of each file it pulled
   before and still has intact); the agent walks the results root with lstat only and answers
   with the new and changed files, hashing only a file whose mtime changed but whose size did
   not (touched, maybe not modified). Excluded files (globs, ``max_file_mb``) are decided from
   the name and the lstat size: never opened on the head.
2. **send**: the laptop asks for the files it wants; the agent streams all of them on the same
   channel, framed: a JSON header line per file, its raw bytes, and a trailer with its sha256
   and whether it stayed unchanged while read. A file that grew past an intact local copy is
   asked for from that copy's size with the copy's sha256: the agent hashes the file's first
   bytes and, when they still match, sends only the tail (``events.jsonl`` and logs only
   grow); any other change, or a prefix that no longer matches, comes whole.

Each file lands in a temp file in its destination folder (a tail after a copy of the local
prefix, made ahead while the head hashes its side: ``client/sync_prefix.py``), is fsynced
(in batches, on a few threads, so many small files do not wait for each other's disk
flush), checked against its frame (size, sha256 of the whole file, unchanged) and renamed
into place (``client/sync_writer.py``): an interrupted pull never leaves a partial file
where a good one should be, and the next pull completes the work. A file the head is still
writing is skipped as ``changing`` and retried next time.

What to ask for, from the manifest and the local state: ``client/sync_plan.py``. The head is
not trusted (``client/sync_paths.py``): unsafe paths are refused and reported; symlinks and
special files on the head are reported, never recreated; a frame whose size or starting byte
differs from what was asked is refused. Nothing is written outside ``dest``.

Local state lives in ``dest/.tether-sync.json``; one pull at a time per destination (``flock``
on ``dest/.tether-sync.lock``): ``client/sync_state.py``. Local files are never deleted unless
``mirror=True``, and then only regular files inside ``dest`` that a pull put there and that
are gone on the head.
"""

from __future__ import annotations

import contextlib
import os
import stat
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from .config import SyncRules
from .errors import SyncError
from .remote import Remote
from .sync_paths import (
    LOCK_NAME,
    MARKER_NAME,
    PART_SUFFIX,
    STATE_NAME,
    SYNC_LOG_NAME,
    LocalTree,
    path_problem,
)
from .sync_plan import Planner, Tally, Want
from .sync_prefix import PrefixCopies
from .sync_state import Record, dest_lock, known_files, load_state, save_state
from .sync_wire import (
    Frame,
    Requests,
    agent_source,
    discard_frame,
    open_agent,
    read_header,
    read_manifest,
    read_trailer,
)
from .sync_writer import (
    BATCH_BYTES,
    Finisher,
    Landed,
    TempFiles,
    receive,
    remove_parts,
)

__all__ = [
    "LOCK_NAME",
    "MARKER_NAME",
    "PART_SUFFIX",
    "STATE_NAME",
    "SYNC_LOG_NAME",
    "Progress",
    "PullResult",
    "path_problem",
    "pull",
]

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PullResult:
    """What one pull did. ``transferred``: the files that landed, ``bytes`` their sizes;
    ``sent_bytes``: what came over the channel for them (for ``appended``, the files extended
    by their tail, only the tail). ``refused``: (repr of the path, reason) for what the head
    sent that is unsafe here; ``skipped``: (path, reason) for what is to be retried or was
    left out."""

    transferred: list[str]
    bytes: int
    unchanged: int
    skipped: list[tuple[str, str]]
    refused: list[tuple[str, str]]
    deleted: list[str]
    duration_s: float
    sent_bytes: int = 0
    appended: list[str] = field(default_factory=list)


def pull(
    *,
    remote: Remote,
    python: str,
    remote_root: str,
    dest: Path,
    rules: SyncRules,
    mirror: bool = False,
    progress: Progress | None = None,
    agent: str | None = None,
    lock_timeout_s: float = 600,
) -> PullResult:
    """Pull the new and changed files of ``remote_root`` on the head into ``dest``.

    ``python``: the head's interpreter (``~/`` allowed). ``rules``: include/exclude globs (a
    glob with a ``/`` matches the path below the root, any other the file name) and the size
    cap. ``progress(path, bytes_done, bytes_planned)`` is called after each chunk of each file
    received. ``agent``: the head-side script's text (default: ``client/sync_agent.py``).
    Waits up to ``lock_timeout_s`` for another pull into ``dest`` to finish.

    Raises ``SyncError`` (root missing on the head, lock not had, the agent failed or sent
    something malformed, a local write failed) and ``ConnectionLost`` when the connection
    drops mid-pull; what was complete by then is kept, the rest comes with the next pull.
    """
    started = time.monotonic()
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    with dest_lock(root, timeout_s=lock_timeout_s):
        job = _Pull(
            remote=remote,
            python=python,
            remote_root=remote_root,
            root=root,
            rules=rules,
            progress=progress,
            agent=agent if agent is not None else agent_source(),
        )
        job.run(mirror=mirror)
    landed = sorted(job.landed, key=lambda f: f.rel)
    return PullResult(
        transferred=[f.rel for f in landed],
        bytes=sum(f.record.size for f in landed),
        unchanged=job.tally.unchanged,
        skipped=job.tally.skipped,
        refused=job.tally.refused,
        deleted=sorted(job.deleted),
        duration_s=time.monotonic() - started,
        sent_bytes=sum(f.record.size - f.offset for f in landed),
        appended=[f.rel for f in landed if f.offset],
    )


class _Pull:
    def __init__(
        self,
        *,
        remote: Remote,
        python: str,
        remote_root: str,
        root: Path,
        rules: SyncRules,
        progress: Progress | None,
        agent: str,
    ) -> None:
        self.remote = remote
        self.python = python
        self.remote_root = remote_root
        self.root = root
        self.rules = rules
        self.progress = progress
        self.agent = agent
        self.tree = LocalTree(root)
        self.temps = TempFiles()
        self.prefixes = PrefixCopies(self.temps)
        self.tally = Tally({})
        self.landed: list[Landed] = []
        self.deleted: list[str] = []
        self._done_bytes = 0
        self._planned_bytes = 0

    def run(self, *, mirror: bool) -> None:
        """One conversation with the agent (see ``client/sync_agent.py``): it starts on the
        head while the state here is read, answers the manifest request, then streams what
        the plan asks for."""
        state = load_state(self.root, remote_root=self.remote_root)
        self.tally = tally = Tally(state)
        planner = Planner(root=self.root, rules=self.rules, tree=self.tree, tally=tally)
        marker = self.root / MARKER_NAME
        if marker.exists():
            remove_parts(self.root)
        requests = Requests()
        gone: list[str] = []
        try:
            with open_agent(
                remote=self.remote, python=self.python, agent=self.agent, requests=requests
            ) as stream:
                known, intact = known_files(self.root, state)
                requests.send(
                    {
                        "root": self.remote_root,
                        "include": list(self.rules.include),
                        "exclude": list(self.rules.exclude),
                        "max_bytes": planner.max_bytes,
                        "known": known,
                    }
                )
                entries = read_manifest(stream, host=self.remote.name, remote_root=self.remote_root)
                wanted, gone = planner.plan(entries, intact)
                if wanted:
                    requests.send({"files": [self._ask(rel, want) for rel, want in wanted]})
                requests.close()
                if wanted:
                    self._transfer(stream, dict(wanted), marker)
            self._gone(gone, mirror=mirror)
        finally:
            requests.close()
            if tally.new_state != state:
                save_state(self.root, remote_root=self.remote_root, state=tally.new_state)
            with contextlib.suppress(OSError):
                marker.unlink()

    def _ask(self, rel: str, want: Want) -> list[Any]:
        """One entry of the send request: a tail also names the prefix's sha256."""
        if want.offset:
            return [rel, want.size, want.mtime_ns, want.offset, self.tally.state[rel].sha256]
        return [rel, want.size, want.mtime_ns]

    # ------------------------------------------------------------------ transfer

    def _transfer(self, stream: BinaryIO, pending: dict[str, Want], marker: Path) -> None:
        self._planned_bytes = sum(w.size - w.offset for w in pending.values())
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        os.close(fd)
        finisher = Finisher()
        for rel, want in pending.items():  # in the order the frames come
            if want.offset:
                source, record = f"{self.root}/{rel}", self.tally.state[rel]
                self.prefixes.plan(rel, source=source, folder=self._folder(rel), record=record)
        try:
            self._frames(stream, pending, finisher)
        finally:
            self.prefixes.close()
            finisher.close()
            for landed in finisher.done:
                self.tally.new_state[landed.rel] = landed.record
                self.landed.append(landed)
        if finisher.failed:
            rel, exc = finisher.failed[0]
            raise SyncError(
                f"could not write {rel!r} into {self.root}: {exc}",
                hint="check free space and permissions there; the next pull tries again",
            ) from exc
        for rel in pending:
            self.tally.skipped.append((rel, "not sent by the head"))

    def _frames(self, stream: BinaryIO, pending: dict[str, Want], finisher: Finisher) -> None:
        while (header := read_header(stream)) is not None:
            if not isinstance(header, Frame):
                rel, reason = header
                if isinstance(rel, str) and rel in pending:
                    del pending[rel]
                    self.prefixes.drop(rel)
                    self.tally.skipped.append((rel, reason))
                continue
            rel = header.path
            want = pending.pop(rel, None) if isinstance(rel, str) else None
            problem = self._frame_problem(header, want)
            if problem is None:
                assert isinstance(rel, str)
                problem = self.tree.problem(rel, create=True)
            if problem is not None:
                if problem:  # "": refused already
                    self.tally.refuse(rel, problem)
                if want is not None:
                    self.prefixes.drop(str(rel))
                discard_frame(stream, header.size)
                continue
            assert isinstance(rel, str) and want is not None
            self._receive(stream, rel, header, want, finisher)

    def _frame_problem(self, frame: Frame, want: Want | None) -> str | None:
        """Why a frame is refused (None: it is not; "": its path was refused before)."""
        if want is None:
            if self.tally.was_refused(frame.path):
                return ""
            return "sent without being asked for"
        if frame.offset and frame.offset != want.offset:
            asked = f"byte {want.offset}" if want.offset else "the start"
            return f"tail from byte {frame.offset} sent, asked from {asked}"
        if frame.offset + frame.size != want.size:
            start = f" from byte {frame.offset}" if frame.offset else ""
            return f"{frame.size} bytes sent{start}, {want.size - frame.offset} announced"
        return None

    def _receive(
        self, stream: BinaryIO, rel: str, frame: Frame, want: Want, finisher: Finisher
    ) -> None:
        """One frame into a temp file beside the target (a tail after the copy of the local
        prefix made ahead); checked, it goes to the finisher (fsync + rename); otherwise the
        temp file is removed."""
        if frame.size >= BATCH_BYTES // 8:
            finisher.flush()  # what arrived so far is not held back by a long file
        hasher = None
        if frame.offset:
            prefix = self.prefixes.take(rel)
            if prefix is None:
                discard_frame(stream, frame.size)
                self.tally.skipped.append((rel, "changed here during the pull"))
                return
            tmp, fd, hasher = prefix.tmp, prefix.fd, prefix.hasher
        else:
            self.prefixes.drop(rel)
            self._planned_bytes += want.offset  # a tail was asked for, the whole file came
            tmp, fd = self.temps.create(self._folder(rel))
        handed = False
        try:
            digest = receive(
                stream, fd, frame.size, on_chunk=lambda n: self._chunk(rel, n), hasher=hasher
            )
            head_digest, ok = read_trailer(stream)
            if digest != head_digest:  # of the whole file, for a tail too
                self.tally.refuse(rel, "sha256 differs from the head's")
                if frame.offset:
                    self.tally.new_state.pop(rel, None)  # the next pull brings it whole
                return
            if not ok:
                self.tally.skipped.append((rel, "changing"))
                return
            os.utime(fd, ns=(want.mtime_ns, want.mtime_ns))
            record = Record(want.size, want.mtime_ns, digest, os.fstat(fd).st_mtime_ns)
            finisher.add(fd, tmp, f"{self.root}/{rel}", Landed(rel, record, frame.offset))
            handed = True
        finally:
            if not handed:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _folder(self, rel: str) -> str:
        folder = rel.rpartition("/")[0]
        return f"{self.root}/{folder}" if folder else str(self.root)

    def _chunk(self, rel: str, n: int) -> None:
        self._done_bytes += n
        if self.progress is not None:
            self.progress(rel, self._done_bytes, self._planned_bytes)

    # ------------------------------------------------------------------ mirror

    def _gone(self, gone: list[str], *, mirror: bool) -> None:
        """Files gone on the head: with ``mirror`` their local copies are deleted (regular
        files inside ``root`` only); without, they stay and are remembered, so a later mirror
        pull still knows them. Forgotten once no local copy is left."""
        for rel in gone:
            full = f"{self.root}/{rel}"
            if path_problem(rel) is not None or self.tree.problem(rel, create=False):
                continue
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                self.tally.new_state.pop(rel, None)
                continue
            except OSError:
                continue
            if not mirror or not stat.S_ISREG(st.st_mode):
                continue
            try:
                os.unlink(full)
            except OSError:
                continue
            self.tally.new_state.pop(rel, None)
            self.deleted.append(rel)
            folder = rel.rpartition("/")[0]
            while folder:  # folders left empty go too
                try:
                    os.rmdir(f"{self.root}/{folder}")
                except OSError:
                    break
                folder = folder.rpartition("/")[0]
