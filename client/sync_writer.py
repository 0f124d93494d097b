"""The result puller's writer: each received file goes into a temp file beside its target,
is fsynced and renamed into place, so an interrupted pull never leaves a partial file where a
good one should be (a killed pull's temp files are removed by the next one).

A grown file is rebuilt in its temp file from the intact local copy (``client/sync_prefix.py``)
and the tail the head sent; the sha256 of all it then holds is checked against the head's
before it replaces the copy.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import os
import secrets
import stat
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, BinaryIO

from tether.ml.atomic import write_all

from .sync_paths import PART_PREFIX, PART_SUFFIX
from .sync_state import Record
from .sync_wire import CHUNK, Ended

# A hashlib hash object (``hashlib._Hash`` exists only in the type stubs, not at run time).
HashObject = Any

MIB = 1024 * 1024
_FSYNC_THREADS = 16
_BATCH_FILES = 128  # open temp files at most (macOS allows a process 256 by default)
BATCH_BYTES = 64 * MIB
_BATCH_S = 1.0
_CREATE = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Landed:
    """A file ready to go into place: its state record, and the byte it was sent from (0: the
    whole file came; more: only the tail after a prefix already here)."""

    rel: str
    record: Record
    offset: int


class TempFiles:
    """Names and creates the temp files of one pull (``.tether-<token>-<n>.tether-part``),
    from any thread."""

    def __init__(self) -> None:
        self._token = secrets.token_hex(4)
        self._count = itertools.count(1)

    def create(self, folder: str) -> tuple[str, int]:
        """A new temp file in ``folder`` (never an existing file, never through a symlink)."""
        while True:
            tmp = f"{folder}/{PART_PREFIX}{self._token}-{next(self._count)}{PART_SUFFIX}"
            try:
                return tmp, os.open(tmp, _CREATE, 0o644)
            except FileExistsError:
                continue


def remove_parts(root: str | os.PathLike[str]) -> None:
    """Delete the temp files a killed pull left below ``root`` (never following symlinks)."""
    for folder, _dirs, files in os.walk(root):
        for name in files:
            if name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX):
                path = os.path.join(folder, name)
                with contextlib.suppress(OSError):
                    if stat.S_ISREG(os.lstat(path).st_mode):
                        os.unlink(path)


def receive(
    stream: BinaryIO,
    fd: int,
    size: int,
    *,
    on_chunk: Callable[[int], None],
    hasher: HashObject | None = None,
) -> str:
    """``size`` bytes of ``stream`` into ``fd``; the sha256 of what ``fd`` holds then (of
    those bytes, or of what ``hasher`` hashed before them too). ``on_chunk(n)`` after each
    chunk (once with 0 for an empty frame). ``Ended`` when the stream stops short."""
    h = hasher if hasher is not None else hashlib.sha256()
    left = size
    if not size:
        on_chunk(0)
    while left:
        block = stream.read(min(CHUNK, left))
        if not block:
            raise Ended("file stream")
        h.update(block)
        write_all(fd, block)
        left -= len(block)
        on_chunk(len(block))
    return h.hexdigest()


class Finisher:
    """Makes received temp files durable and renames them into place, in batches: the files
    of a batch are fsynced in parallel (one disk flush per file is what makes many small
    files slow; flushes issued together share the journal commits), then renamed. A batch
    holds at most ``_BATCH_FILES`` files or ``BATCH_BYTES`` bytes and waits at most
    ``_BATCH_S`` seconds for more."""

    def __init__(self) -> None:
        self._pool: ThreadPoolExecutor | None = None
        self._batch: list[tuple[int, str, str, Landed]] = []
        self._batch_bytes = 0
        self._batch_since = 0.0
        self.done: list[Landed] = []
        self.failed: list[tuple[str, BaseException]] = []

    def add(self, fd: int, tmp: str, target: str, landed: Landed) -> None:
        """Take ``fd`` (closed here) of ``tmp``, to be renamed to ``target``."""
        if not self._batch:
            self._batch_since = time.monotonic()
        self._batch.append((fd, tmp, target, landed))
        self._batch_bytes += landed.record.size
        if (
            len(self._batch) >= _BATCH_FILES
            or self._batch_bytes >= BATCH_BYTES
            or time.monotonic() - self._batch_since >= _BATCH_S
        ):
            self.flush()

    @staticmethod
    def _sync(item: tuple[int, str, str, Landed]) -> BaseException | None:
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
        for (_fd, tmp, target, landed), error in zip(batch, errors, strict=True):
            if error is None:
                try:
                    os.replace(tmp, target)
                    self.done.append(landed)
                    continue
                except OSError as exc:
                    error = exc
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            self.failed.append((landed.rel, error))

    def close(self) -> None:
        """Finish what is pending (also after an error: those files arrived whole)."""
        try:
            self.flush()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
