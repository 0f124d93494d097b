"""Pull a run's lightweight results from the head into a local folder, without rsync.

Python's standard library on both sides plus the remote's command channel: one command per
pull. ``client/sync_agent.py`` runs on the head with the head's python (its text travels on
the command line; nothing is installed) and holds a short conversation on its stdin/stdout
(the protocol is described there):

1. **manifest**: the laptop sends what it holds (path, size, mtime_ns of each file it pulled
   before and still has intact); the agent walks the results root with lstat only and answers
   with the new and changed files, hashing only a file whose mtime changed but whose size did
   not (touched, maybe not modified). Excluded files (globs, ``max_file_mb``) are decided from
   the name and the lstat size: never opened on the head.
2. **send**: the laptop asks for the files it wants; the agent streams all of them on the same
   channel, framed: a JSON header line per file, its raw bytes, and a trailer with its sha256
   and whether it stayed unchanged while read.

Each file lands in a temp file in its destination folder, is fsynced (in batches, on a few
threads, so many small files do not wait for each other's disk flush), checked against its
frame (size, sha256, unchanged) and renamed into place: an interrupted pull never leaves a
partial file where a good one should be, and the next pull completes the work. A file the
head is still writing is skipped as ``changing`` and retried next time.

The head is not trusted: a path that is absolute, has ``..`` (or an empty or ``.`` part), a
NUL or line break, a name reserved here, or that would go through a local symlink or onto a
local non-file is refused and reported; symlinks and special files on the head are reported,
never recreated; a frame whose size differs from the manifest's is refused. Nothing is written
outside ``dest``.

Local state lives in ``dest/.tether-sync.json`` (written atomically); one pull at a time per
destination (``flock`` on ``dest/.tether-sync.lock``). Local files are never deleted unless
``mirror=True``, and then only regular files inside ``dest`` that a pull put there and that
are gone on the head.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import functools
import hashlib
import json
import logging
import os
import queue
import secrets
import shlex
import stat
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Protocol

from tether.ml.atomic import write_bytes_atomic

from . import sync_agent
from .config import SyncRules
from .errors import CommandFailed, ConnectionLost, HostKeyError, RemoteError, SyncError

_log = logging.getLogger(__name__)

STATE_NAME = ".tether-sync.json"
LOCK_NAME = ".tether-sync.lock"
MARKER_NAME = ".tether-sync.pulling"  # exists while a transfer runs: a killed pull left temps
PART_PREFIX = ".tether-"
PART_SUFFIX = ".tether-part"
SYNC_LOG_NAME = ".tether-sync.jsonl"  # tether pull's record of each pull (client/pullcmd.py)
RESERVED_NAMES = frozenset({STATE_NAME, LOCK_NAME, MARKER_NAME, SYNC_LOG_NAME})
STREAM_IDLE_S = 600.0  # the most a read waits for the head (a big tree's manifest is quiet)
MIB = 1024 * 1024

_STATE_VERSION = 1
_CHUNK = 1 << 20
_LINE_MAX = 1 << 20  # longest header/manifest line accepted from the head
_FSYNC_THREADS = 16
_BATCH_FILES = 128  # open temp files at most (macOS allows a process 256 by default)
_BATCH_BYTES = 64 * MIB
_BATCH_S = 1.0
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class PullResult:
    """What one pull did. ``refused``: (repr of the path, reason) for what the head sent that
    is unsafe here; ``skipped``: (path, reason) for what is to be retried or was left out."""

    transferred: list[str]
    bytes: int
    unchanged: int
    skipped: list[tuple[str, str]]
    refused: list[tuple[str, str]]
    deleted: list[str]
    duration_s: float


class BinaryRemote(Protocol):
    """What ``pull`` needs of a remote (``SSHRemote`` and ``LocalRemote`` both are one)."""

    name: str

    def open_binary(
        self, command: str, *, stdin: Iterable[bytes] | None = None, timeout: float | None = None
    ) -> AbstractContextManager[BinaryIO]: ...


def pull(
    *,
    remote: BinaryRemote,
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
    with _dest_lock(root, timeout_s=lock_timeout_s):
        job = _Pull(
            remote=remote,
            python=python,
            remote_root=remote_root,
            root=root,
            rules=rules,
            progress=progress,
            agent=agent if agent is not None else _agent_source(),
        )
        job.run(mirror=mirror)
    return PullResult(
        transferred=sorted(job.transferred),
        bytes=job.bytes,
        unchanged=job.unchanged,
        skipped=job.skipped,
        refused=job.refused,
        deleted=sorted(job.deleted),
        duration_s=time.monotonic() - started,
    )


# --------------------------------------------------------------------------- helpers


@functools.cache
def _agent_source() -> str:
    return Path(sync_agent.__file__).read_text(encoding="utf-8")


@functools.lru_cache(maxsize=8)
def _packed(agent: str) -> str:
    return base64.b64encode(zlib.compress(agent.encode("utf-8"), 9)).decode("ascii")


def _shell_path(path: str) -> str:
    """``path`` quoted for the head's shell, a leading ``~/`` still meaning its home."""
    if path == "~":
        return '"$HOME"'
    if path.startswith("~/"):
        return '"$HOME"/' + shlex.quote(path[2:])
    return shlex.quote(path)


def _agent_command(python: str, agent: str) -> str:
    """``python -I -S -c <bootstrap> pull``: the agent travels base64(zlib) on the command
    line (no quoting trouble in any shell), isolated from the head's site-packages and env."""
    boot = (
        "import base64,zlib;exec(compile(zlib.decompress(base64.b64decode("
        f"'{_packed(agent)}')),'tether-sync-agent','exec'),{{'__name__':'__main__'}})"
    )
    return f"{_shell_path(python)} -I -S -c {shlex.quote(boot)} pull"


def _named(exc: RemoteError, command: str) -> str:
    """``exc``'s message with the agent's long command line replaced by a short name."""
    name = "the sync agent"
    return exc.message.replace(repr(command), name).replace(command, name)


class _Requests:
    """The agent's stdin, fed as the pull goes: each ``send`` is one request (``<length>\\n``
    and zlib-compressed JSON); ``close`` ends stdin. Iterated by the remote's stdin thread."""

    def __init__(self) -> None:
        self._queue: queue.SimpleQueue[bytes | None] = queue.SimpleQueue()
        self._closed = False

    def send(self, obj: dict[str, Any]) -> None:
        data = zlib.compress(json.dumps(obj, separators=(",", ":")).encode("utf-8"), 1)
        self._queue.put(b"%d\n" % len(data) + data)

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._queue.put(None)

    def __iter__(self) -> Iterator[bytes]:
        while (item := self._queue.get()) is not None:
            yield item


@contextmanager
def _dest_lock(root: Path, *, timeout_s: float) -> Iterator[None]:
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


def _write_all(fd: int, data: bytes | memoryview) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _remove_parts(root: Path) -> None:
    """Delete the temp files a killed pull left below ``root`` (never following symlinks)."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX):
                path = os.path.join(folder, name)
                with contextlib.suppress(OSError):
                    if stat.S_ISREG(os.lstat(path).st_mode):
                        os.unlink(path)


class _Ended(Exception):
    """The agent's output stopped before its last line (or in the middle of a file)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def _malformed(what: str, detail: object) -> SyncError:
    text = repr(detail)
    return SyncError(
        f"the sync agent on the head sent a malformed {what}: {text[:200]}",
        hint="is the head running a different tether? the pull stopped; what arrived is kept",
    )


def _read_line(stream: BinaryIO, what: str) -> dict[str, Any] | None:
    """The next JSON-object line of ``stream``; None at the end of the stream."""
    line = stream.readline(_LINE_MAX)
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise _malformed(what, line[:200])
    try:
        obj = json.loads(line)
    except ValueError:
        raise _malformed(what, line[:200]) from None
    if not isinstance(obj, dict):
        raise _malformed(what, line[:200])
    return obj


def _is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


class _LocalTree:
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
        return f"a local {sync_agent.kind_of(st.st_mode)} is in the way"


@dataclass(frozen=True)
class _Record:
    """A pulled file: its size, mtime and sha256 on the head, and the mtime of the copy here
    (the head's, unless this filesystem keeps coarser times)."""

    size: int
    mtime_ns: int
    sha256: str
    local_mtime_ns: int


class _Finisher:
    """Makes received temp files durable and renames them into place, in batches: the files
    of a batch are fsynced in parallel (one disk flush per file is what makes many small
    files slow; flushes issued together share the journal commits), then renamed. A batch
    holds at most ``_BATCH_FILES`` files or ``_BATCH_BYTES`` bytes and waits at most
    ``_BATCH_S`` seconds for more."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._batch: list[tuple[int, str, str, str, _Record]] = []
        self._batch_bytes = 0
        self._batch_since = 0.0
        self.done: list[tuple[str, _Record]] = []
        self.failed: list[tuple[str, BaseException]] = []

    def add(self, fd: int, tmp: str, target: str, rel: str, record: _Record) -> None:
        if not self._batch:
            self._batch_since = time.monotonic()
        self._batch.append((fd, tmp, target, rel, record))
        self._batch_bytes += record.size
        if (
            len(self._batch) >= _BATCH_FILES
            or self._batch_bytes >= _BATCH_BYTES
            or time.monotonic() - self._batch_since >= _BATCH_S
        ):
            self.flush()

    @staticmethod
    def _sync(item: tuple[int, str, str, str, _Record]) -> BaseException | None:
        fd = item[0]
        try:
            os.fsync(fd)
            return None
        except OSError as exc:
            return exc
        finally:
            os.close(fd)

    def flush(self) -> None:
        batch, self._batch, self._batch_bytes = self._batch, [], 0
        if not batch:
            return
        if len(batch) == 1:
            errors = [self._sync(batch[0])]
        else:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(
                    _FSYNC_THREADS, thread_name_prefix="tether-sync-fsync"
                )
            errors = list(self._pool.map(self._sync, batch))
        for (_fd, tmp, target, rel, record), error in zip(batch, errors, strict=True):
            if error is None:
                try:
                    os.replace(tmp, target)
                    self.done.append((rel, record))
                    continue
                except OSError as exc:
                    error = exc
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self.failed.append((rel, error))

    def close(self) -> None:
        """Finish what is pending (also after an error: those files arrived whole)."""
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)


# --------------------------------------------------------------------------- one pull


class _Pull:
    def __init__(
        self,
        *,
        remote: BinaryRemote,
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
        self.max_bytes = int(rules.max_file_mb * MIB)
        self._include = sync_agent.rule_matcher(rules.include)
        self._exclude = sync_agent.rule_matcher(rules.exclude)
        self.progress = progress
        self.agent = agent
        self.tree = _LocalTree(root)
        self.state: dict[str, _Record] = {}
        self.new_state: dict[str, _Record] = {}
        self.transferred: list[str] = []
        self.bytes = 0
        self.unchanged = 0
        self.skipped: list[tuple[str, str]] = []
        self.refused: list[tuple[str, str]] = []
        self._refused_paths: set[object] = set()
        self.deleted: list[str] = []
        self._done_bytes = 0
        self._planned_bytes = 0
        self._token = secrets.token_hex(4)
        self._temps = 0

    # ------------------------------------------------------------------ flow

    def run(self, *, mirror: bool) -> None:
        """One conversation with the agent (see ``client/sync_agent.py``): it starts on the
        head while the state here is read, answers the manifest request, then streams what
        the plan asks for."""
        self.state = self._load_state()
        self.new_state = dict(self.state)
        marker = self.root / MARKER_NAME
        if marker.exists():
            _remove_parts(self.root)
        requests = _Requests()
        gone: list[str] = []
        try:
            with self._agent(requests) as stream:
                known, intact = self._known()
                requests.send(
                    {
                        "root": self.remote_root,
                        "include": list(self.rules.include),
                        "exclude": list(self.rules.exclude),
                        "max_bytes": self.max_bytes,
                        "known": known,
                    }
                )
                wanted, gone = self._plan(self._manifest(stream), intact)
                if wanted:
                    requests.send({"files": [list(w) for w in wanted]})
                requests.close()
                if wanted:
                    self._transfer(stream, wanted, marker)
            self._gone(gone, mirror=mirror)
        finally:
            requests.close()
            if self.new_state != self.state:
                self._save_state()
            with contextlib.suppress(OSError):
                marker.unlink()

    def _refuse(self, path: object, reason: str) -> None:
        self.refused.append((repr(path), reason))
        with contextlib.suppress(TypeError):
            self._refused_paths.add(path)

    def _rules_problem(self, rel: str, size: int) -> str | None:
        name = rel.rpartition("/")[2]
        if not self._include(name, rel) or self._exclude(name, rel):
            return "excluded by the sync rules"
        if size > self.max_bytes:
            return f"over max_file_mb ({self.rules.max_file_mb:g})"
        return None

    # ------------------------------------------------------------------ state

    def _load_state(self) -> dict[str, _Record]:
        path = self.root / STATE_NAME
        try:
            raw = json.loads(path.read_bytes())
            if raw.get("version") != _STATE_VERSION or raw.get("remote_root") != self.remote_root:
                return {}
            return {
                rel: _Record(int(size), int(mtime), str(sha), int(local))
                for rel, (size, mtime, sha, local) in raw["files"].items()
                if path_problem(rel) is None
            }
        except FileNotFoundError:
            return {}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            _log.warning("ignoring unreadable sync state %s (%s): pulling everything", path, exc)
            return {}

    def _save_state(self) -> None:
        files = {
            rel: [r.size, r.mtime_ns, r.sha256, r.local_mtime_ns]
            for rel, r in sorted(self.new_state.items())
        }
        doc = {"version": _STATE_VERSION, "remote_root": self.remote_root, "files": files}
        write_bytes_atomic(self.root / STATE_NAME, json.dumps(doc, separators=(",", ":")).encode())

    def _known(self) -> tuple[list[list[Any]], set[str]]:
        """What to tell the agent we hold: files whose local copy is still as pulled are sent
        with their size and mtime; a copy changed or deleted here with size -1 (pull it again)."""
        known: list[list[Any]] = []
        intact: set[str] = set()
        base = str(self.root)
        for rel, rec in self.state.items():
            try:
                st = os.lstat(f"{base}/{rel}")
                ok = (
                    stat.S_ISREG(st.st_mode)
                    and st.st_size == rec.size
                    and st.st_mtime_ns == rec.local_mtime_ns
                )
            except OSError:
                ok = False
            if ok:
                intact.add(rel)
                known.append([rel, rec.size, rec.mtime_ns])
            else:
                known.append([rel, -1, rec.mtime_ns])
        return known, intact

    # ------------------------------------------------------------------ manifest

    @contextmanager
    def _agent(self, requests: _Requests) -> Iterator[BinaryIO]:
        """The agent's stdout; ``requests`` feed its stdin. A stream that ends early
        (``_Ended``) is first checked for the agent's exit status: a failure to run it tells
        more than the short stream."""
        command = _agent_command(self.python, self.agent)
        ended: _Ended | None = None
        try:
            with self.remote.open_binary(command, stdin=requests, timeout=STREAM_IDLE_S) as stream:
                try:
                    yield stream
                except _Ended as exc:
                    ended = exc
                finally:
                    requests.close()  # the agent's stdin ends: it will not wait for more
        except ConnectionLost as exc:  # the same error, named without the agent's text
            raise ConnectionLost(_named(exc, command), hint=exc.hint) from exc
        except CommandFailed as exc:
            if exc.exit_code == 127:
                raise SyncError(
                    f"cannot run the sync agent on {self.remote.name}: {self.python} not found",
                    hint="set `python` in the profile to the head's interpreter",
                ) from exc
            last = "\n".join(exc.output.rstrip().splitlines()[-10:])
            raise SyncError(
                f"the sync agent exited {exc.exit_code} on {self.remote.name}"
                + (f"\n  last output:\n{last}" if last else ""),
                hint=f"check that `{self.python}` runs on {self.remote.name} (Python 3.8+)",
            ) from exc
        except HostKeyError:
            raise
        except RemoteError as exc:  # a timeout, a refused session: same error, named short
            raise RemoteError(_named(exc, command), hint=exc.hint) from exc
        if ended is not None:
            raise SyncError(
                f"the {ended.what} from {self.remote.name} ended early",
                hint="the sync agent stopped before its last line; the next pull tries again",
            )

    def _root_error(self, obj: dict[str, Any]) -> SyncError:
        where = obj.get("root", self.remote_root)
        if obj.get("error") == "missing":
            return SyncError(
                f"the run's results folder {where} does not exist on {self.remote.name}",
                hint="was the run pruned? `tether fetch RUN` still has its branch",
            )
        if obj.get("error") == "notdir":
            return SyncError(f"{where} on {self.remote.name} is not a folder")
        return _malformed("answer", obj)

    def _manifest(self, stream: BinaryIO) -> list[dict[str, Any]]:
        """The agent's manifest lines, up to its end line."""
        entries: list[dict[str, Any]] = []
        while True:
            obj = _read_line(stream, "manifest line")
            if obj is None:
                raise _Ended("manifest")
            if "error" in obj:
                raise self._root_error(obj)
            if "end" in obj:
                return entries
            entries.append(obj)

    def _plan(
        self, entries: list[dict[str, Any]], intact: set[str]
    ) -> tuple[list[tuple[str, int, int]], list[str]]:
        wanted: dict[str, tuple[int, int]] = {}
        gone: list[str] = []
        reported: set[str] = set()
        for obj in entries:
            if "gone" in obj or "drop" in obj:
                rel = obj.get("gone", obj.get("drop"))
                if isinstance(rel, str) and rel in self.state:
                    reported.add(rel)
                    if "gone" in obj:
                        gone.append(rel)  # remembered until deleted here (mirror)
                    else:
                        self.new_state.pop(rel, None)  # not ours to track any more
                continue
            rel = obj.get("p")
            problem = path_problem(rel)
            if problem is not None:
                self._refuse(rel, problem)
                continue
            assert isinstance(rel, str)
            if rel in reported:
                self._refuse(rel, "listed twice by the head")
                continue
            reported.add(rel)
            if "t" in obj:
                self._refuse(rel, f"{str(obj['t'])[:40]} on the head (never copied)")
                self.new_state.pop(rel, None)
            elif "big" in obj:
                self.skipped.append((rel, f"over max_file_mb ({self.rules.max_file_mb:g})"))
                self.new_state.pop(rel, None)
            elif "err" in obj:
                self.skipped.append((rel, f"unreadable on the head: {str(obj['err'])[:200]}"))
            else:
                size, mtime_ns, digest = obj.get("s"), obj.get("m"), obj.get("h")
                if not _is_count(size) or not _is_count(mtime_ns):
                    self._refuse(rel, "no valid size/mtime")
                    continue
                assert isinstance(size, int) and isinstance(mtime_ns, int)
                problem = self._rules_problem(rel, size) or self.tree.problem(rel, create=False)
                if problem is not None:
                    self._refuse(rel, problem)
                    continue
                if not self._same_content(rel, size, mtime_ns, digest, intact):
                    wanted[rel] = (size, mtime_ns)
        self.unchanged += len(intact - reported)
        return [(rel, size, m) for rel, (size, m) in sorted(wanted.items())], gone

    def _same_content(
        self, rel: str, size: int, mtime_ns: int, digest: object, intact: set[str]
    ) -> bool:
        """Only the mtime changed on the head (same size and sha256 as our intact copy): take
        the new mtime here too, transfer nothing."""
        old = self.state.get(rel)
        if old is None or rel not in intact or old.size != size or digest != old.sha256:
            return False
        local = f"{self.root}/{rel}"
        try:
            os.utime(local, ns=(mtime_ns, mtime_ns), follow_symlinks=False)
            local_mtime_ns = os.lstat(local).st_mtime_ns
        except OSError:
            return False
        self.new_state[rel] = _Record(size, mtime_ns, old.sha256, local_mtime_ns)
        self.unchanged += 1
        return True

    # ------------------------------------------------------------------ transfer

    def _transfer(self, stream: BinaryIO, wanted: list[tuple[str, int, int]], marker: Path) -> None:
        self._planned_bytes = sum(size for _, size, _ in wanted)
        pending = {rel: (size, mtime) for rel, size, mtime in wanted}
        fd = os.open(marker, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        os.close(fd)
        finisher = _Finisher()
        try:
            self._frames(stream, pending, finisher)
        finally:
            finisher.close()
            for rel, record in finisher.done:
                self.new_state[rel] = record
                self.transferred.append(rel)
                self.bytes += record.size
        if finisher.failed:
            rel, exc = finisher.failed[0]
            raise SyncError(
                f"could not write {rel!r} into {self.root}: {exc}",
                hint="check free space and permissions there; the next pull tries again",
            ) from exc
        for rel in pending:
            self.skipped.append((rel, "not sent by the head"))

    def _frames(
        self, stream: BinaryIO, pending: dict[str, tuple[int, int]], finisher: _Finisher
    ) -> None:
        while True:
            obj = _read_line(stream, "frame header")
            if obj is None:
                raise _Ended("file stream")
            if "end" in obj:
                return
            if "skip" in obj:
                rel = obj["skip"]
                if isinstance(rel, str) and rel in pending:
                    del pending[rel]
                    self.skipped.append((rel, str(obj.get("reason", "skipped"))[:200]))
                continue
            if "f" not in obj or not _is_count(obj.get("n")):
                raise _malformed("frame header", obj)
            rel, size = obj["f"], obj["n"]
            want = pending.pop(rel, None) if isinstance(rel, str) else None
            if want is None:
                if not (isinstance(rel, str) and rel in self._refused_paths):
                    self._refuse(rel, "sent without being asked for")
                self._discard(stream, size)
                continue
            if size != want[0]:
                self._refuse(rel, f"{size} bytes sent, {want[0]} announced")
                self._discard(stream, size)
                continue
            problem = self.tree.problem(rel, create=True)
            if problem is not None:
                self._refuse(rel, problem)
                self._discard(stream, size)
                continue
            self._receive(stream, rel, size, want[1], finisher)

    def _trailer(self, stream: BinaryIO) -> tuple[str, bool]:
        obj = _read_line(stream, "frame trailer")
        if obj is None:
            raise _Ended("file stream")
        digest, ok = obj.get("h"), obj.get("ok")
        if not isinstance(digest, str) or not isinstance(ok, bool):
            raise _malformed("frame trailer", obj)
        return digest, ok

    def _discard(self, stream: BinaryIO, size: int) -> None:
        left = size
        while left:
            block = stream.read(min(_CHUNK, left))
            if not block:
                raise _Ended("file stream")
            left -= len(block)
        self._trailer(stream)

    def _receive(
        self, stream: BinaryIO, rel: str, size: int, mtime_ns: int, finisher: _Finisher
    ) -> None:
        """One frame's bytes into a temp file beside the target; checked, it goes to the
        finisher (fsync + rename); otherwise the temp file is removed."""
        if size >= _BATCH_BYTES // 8:
            finisher.flush()  # what arrived so far is not held back by a long file
        folder, _, _ = rel.rpartition("/")
        base = f"{self.root}/{folder}" if folder else str(self.root)
        tmp, fd = self._temp_file(base)
        handed = False
        try:
            h = hashlib.sha256()
            left = size
            while True:
                block = stream.read(min(_CHUNK, left)) if left else b""
                if left and not block:
                    raise _Ended("file stream")
                if block:
                    h.update(block)
                    _write_all(fd, block)
                    left -= len(block)
                    self._done_bytes += len(block)
                if self.progress is not None and (block or not size):
                    self.progress(rel, self._done_bytes, self._planned_bytes)
                if not left:
                    break
            digest, ok = self._trailer(stream)
            if digest != h.hexdigest():
                self._refuse(rel, "sha256 differs from the head's")
                return
            if not ok:
                self.skipped.append((rel, "changing"))
                return
            os.utime(fd, ns=(mtime_ns, mtime_ns))
            record = _Record(size, mtime_ns, digest, os.fstat(fd).st_mtime_ns)
            finisher.add(fd, tmp, f"{self.root}/{rel}", rel, record)
            handed = True
        finally:
            if not handed:
                os.close(fd)
                with contextlib.suppress(OSError):
                    os.unlink(tmp)

    def _temp_file(self, folder: str) -> tuple[str, int]:
        """A new temp file in ``folder`` (never an existing file, never through a symlink)."""
        while True:
            self._temps += 1
            tmp = f"{folder}/{PART_PREFIX}{self._token}-{self._temps}{PART_SUFFIX}"
            try:
                return tmp, os.open(tmp, _CREATE, 0o644)
            except FileExistsError:
                continue

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
                self.new_state.pop(rel, None)
                continue
            except OSError:
                continue
            if not mirror or not stat.S_ISREG(st.st_mode):
                continue
            try:
                os.unlink(full)
            except OSError:
                continue
            self.new_state.pop(rel, None)
            self.deleted.append(rel)
            folder = rel.rpartition("/")[0]
            while folder:  # folders left empty go too
                try:
                    os.rmdir(f"{self.root}/{folder}")
                except OSError:
                    break
                folder = folder.rpartition("/")[0]
