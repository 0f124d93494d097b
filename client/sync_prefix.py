"""The local half of a tail pull: a grown file's intact local copy, copied into the temp file
that will replace it, and hashed on the way.

The copies are made ahead, on one thread, in the order the head sends the frames, while the
head hashes its own side of the same prefix: by the time a tail arrives its temp file
usually holds the prefix already. At most ``AHEAD`` copies wait at a time (each holds an
open file and the prefix's size on disk). A copy no longer as the last pull left it (size,
local mtime) is not used: the frame is skipped and the next pull brings the file whole.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import stat
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from tether.ml.atomic import write_all

from .sync_state import Record
from .sync_wire import CHUNK
from .sync_writer import HashObject, TempFiles

AHEAD = 2
_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC


@dataclass(frozen=True)
class Prefix:
    """A temp file holding the local copy's bytes, and the hash of them (to go on with)."""

    tmp: str
    fd: int
    hasher: HashObject

    def discard(self) -> None:
        os.close(self.fd)
        with contextlib.suppress(OSError):
            os.unlink(self.tmp)


def _copy_hashed(src: int, dst: int, size: int, h: HashObject) -> bool:
    """``size`` bytes from ``src`` into ``dst`` and ``h``; False when ``src`` ends early."""
    left = size
    while left:
        block = os.read(src, min(CHUNK, left))
        if not block:
            return False
        h.update(block)
        write_all(dst, block)
        left -= len(block)
    return True


def copy_prefix(temps: TempFiles, *, source: str, folder: str, record: Record) -> Prefix | None:
    """A temp file in ``folder`` holding the local file at ``source``, hashed; None (no temp
    file left) when that file is no longer the regular file the last pull left there."""
    try:
        src = os.open(source, _READ)
    except OSError:
        return None
    try:
        st = os.fstat(src)
        if not (
            stat.S_ISREG(st.st_mode)
            and st.st_size == record.size
            and st.st_mtime_ns == record.local_mtime_ns
        ):
            return None
        tmp, fd = temps.create(folder)
        prefix = Prefix(tmp, fd, hashlib.sha256())
        try:
            copied = _copy_hashed(src, fd, record.size, prefix.hasher)
        except BaseException:
            prefix.discard()
            raise
        if not copied:
            prefix.discard()
            return None
        return prefix
    finally:
        os.close(src)


class PrefixCopies:
    """Prefix copies made ahead for the tails a pull asked for, ``take``n as frames come."""

    def __init__(self, temps: TempFiles, *, ahead: int = AHEAD) -> None:
        self._temps = temps
        self._ahead = ahead
        self._queue: OrderedDict[str, tuple[str, str, Record]] = OrderedDict()
        self._ready: dict[str, Future[Prefix | None]] = {}
        self._pool: ThreadPoolExecutor | None = None

    def plan(self, rel: str, *, source: str, folder: str, record: Record) -> None:
        """A tail of ``rel`` is expected (in the order of these calls)."""
        self._queue[rel] = (source, folder, record)
        self._fill()

    def _fill(self) -> None:
        while self._queue and len(self._ready) < self._ahead:
            rel, (source, folder, record) = self._queue.popitem(last=False)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(1, thread_name_prefix="tether-sync-prefix")
            self._ready[rel] = self._pool.submit(
                copy_prefix, self._temps, source=source, folder=folder, record=record
            )

    def take(self, rel: str) -> Prefix | None:
        """``rel``'s prefix copy (made now if it was not made ahead); the caller owns it."""
        future = self._ready.pop(rel, None)
        if future is None:
            planned = self._queue.pop(rel, None)
            if planned is None:
                return None
            self._fill()
            source, folder, record = planned
            return copy_prefix(self._temps, source=source, folder=folder, record=record)
        self._fill()
        return future.result()

    def drop(self, rel: str) -> None:
        """No tail of ``rel`` is coming (skipped, refused, or sent whole)."""
        self._queue.pop(rel, None)
        future = self._ready.pop(rel, None)
        if future is not None:
            self._discard(future)
        self._fill()

    @staticmethod
    def _discard(future: Future[Prefix | None]) -> None:
        with contextlib.suppress(Exception):
            prefix = future.result()
            if prefix is not None:
                prefix.discard()

    def close(self) -> None:
        """Remove every copy not taken."""
        self._queue.clear()
        for future in self._ready.values():
            self._discard(future)
        self._ready.clear()
        if self._pool is not None:
            self._pool.shutdown(wait=True)
