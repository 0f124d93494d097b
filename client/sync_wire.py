"""The laptop's half of the conversation with the sync agent (``client/sync_agent.py``, whose
docstring describes the protocol): the command that runs the agent on the head, the requests
fed to its stdin, and the reading of what it prints (manifest lines, frame headers, raw
bytes, trailers), every line checked before it is used.

Errors: ``SyncError`` for a malformed line or an agent that could not run or failed;
``ConnectionLost`` / ``RemoteError`` from the remote, named without the agent's long text.
"""

from __future__ import annotations

import base64
import functools
import json
import queue
import shlex
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from . import sync_agent
from .errors import CommandFailed, ConnectionLost, HostKeyError, RemoteError, SyncError
from .remote import Remote

STREAM_IDLE_S = 600.0  # the most a read waits for the head (a big tree's manifest is quiet)
CHUNK = 1 << 20
_LINE_MAX = 1 << 20  # longest header/manifest line accepted from the head


@functools.cache
def agent_source() -> str:
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


def agent_command(python: str, agent: str) -> str:
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


class Requests:
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


class Ended(Exception):
    """The agent's output stopped before its last line (or in the middle of a file)."""

    def __init__(self, what: str) -> None:
        super().__init__(what)
        self.what = what


def malformed(what: str, detail: object) -> SyncError:
    text = repr(detail)
    return SyncError(
        f"the sync agent on the head sent a malformed {what}: {text[:200]}",
        hint="is the head running a different tether? the pull stopped; what arrived is kept",
    )


def is_count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


@contextmanager
def open_agent(
    *, remote: Remote, python: str, agent: str, requests: Requests
) -> Iterator[BinaryIO]:
    """The agent's stdout; ``requests`` feed its stdin. A stream that ends early (``Ended``)
    is first checked for the agent's exit status: a failure to run it tells more than the
    short stream."""
    command = agent_command(python, agent)
    ended: Ended | None = None
    try:
        with remote.open_binary(command, stdin=requests, timeout=STREAM_IDLE_S) as stream:
            try:
                yield stream
            except Ended as exc:
                ended = exc
            finally:
                requests.close()  # the agent's stdin ends: it will not wait for more
    except ConnectionLost as exc:  # the same error, named without the agent's text
        raise ConnectionLost(_named(exc, command), hint=exc.hint) from exc
    except CommandFailed as exc:
        if exc.exit_code == 127:
            raise SyncError(
                f"cannot run the sync agent on {remote.name}: {python} not found",
                hint="set `python` in the profile to the head's interpreter",
            ) from exc
        last = "\n".join(exc.output.rstrip().splitlines()[-10:])
        raise SyncError(
            f"the sync agent exited {exc.exit_code} on {remote.name}"
            + (f"\n  last output:\n{last}" if last else ""),
            hint=f"check that `{python}` runs on {remote.name} (Python 3.8+)",
        ) from exc
    except HostKeyError:
        raise
    except RemoteError as exc:  # a timeout, a refused session: same error, named short
        raise RemoteError(_named(exc, command), hint=exc.hint) from exc
    if ended is not None:
        raise SyncError(
            f"the {ended.what} from {remote.name} ended early",
            hint="the sync agent stopped before its last line; the next pull tries again",
        )


def read_line(stream: BinaryIO, what: str) -> dict[str, Any] | None:
    """The next JSON-object line of ``stream``; None at the end of the stream."""
    line = stream.readline(_LINE_MAX)
    if not line:
        return None
    if not line.endswith(b"\n"):
        raise malformed(what, line[:200])
    try:
        obj = json.loads(line)
    except ValueError:
        raise malformed(what, line[:200]) from None
    if not isinstance(obj, dict):
        raise malformed(what, line[:200])
    return obj


def read_manifest(stream: BinaryIO, *, host: str, remote_root: str) -> list[dict[str, Any]]:
    """The agent's manifest lines, up to its end line (``SyncError`` when the root is not a
    folder on the head)."""
    entries: list[dict[str, Any]] = []
    while True:
        obj = read_line(stream, "manifest line")
        if obj is None:
            raise Ended("manifest")
        if "error" in obj:
            raise _root_error(obj, host=host, remote_root=remote_root)
        if "end" in obj:
            return entries
        entries.append(obj)


def _root_error(obj: dict[str, Any], *, host: str, remote_root: str) -> SyncError:
    where = obj.get("root", remote_root)
    if obj.get("error") == "missing":
        return SyncError(
            f"the run's results folder {where} does not exist on {host}",
            hint="was the run pruned? `tether fetch RUN` still has its branch",
        )
    if obj.get("error") == "notdir":
        return SyncError(f"{where} on {host} is not a folder")
    return malformed("answer", obj)


@dataclass(frozen=True)
class Frame:
    """A frame header: ``size`` bytes of ``path`` follow, from byte ``offset`` of the file
    (0: the whole file; more: the tail after the prefix the laptop holds)."""

    path: object
    size: int
    offset: int


def read_header(stream: BinaryIO) -> Frame | tuple[object, str] | None:
    """The next frame header; ``(path, reason)`` for a skip line; None after the end line."""
    obj = read_line(stream, "frame header")
    if obj is None:
        raise Ended("file stream")
    if "end" in obj:
        return None
    if "skip" in obj:
        return obj["skip"], str(obj.get("reason", "skipped"))[:200]
    offset = obj.get("o", 0)
    if "f" not in obj or not is_count(obj.get("n")) or not is_count(offset):
        raise malformed("frame header", obj)
    return Frame(path=obj["f"], size=obj["n"], offset=offset)


def read_trailer(stream: BinaryIO) -> tuple[str, bool]:
    """A frame's trailer: the sha256 of the whole file and whether it stayed unchanged."""
    obj = read_line(stream, "frame trailer")
    if obj is None:
        raise Ended("file stream")
    digest, ok = obj.get("h"), obj.get("ok")
    if not isinstance(digest, str) or not isinstance(ok, bool):
        raise malformed("frame trailer", obj)
    return digest, ok


def discard_frame(stream: BinaryIO, size: int) -> None:
    """Read past a frame's ``size`` bytes and its trailer (a frame refused here)."""
    left = size
    while left:
        block = stream.read(min(CHUNK, left))
        if not block:
            raise Ended("file stream")
        left -= len(block)
    read_trailer(stream)
