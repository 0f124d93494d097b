"""What both command channels (``remote_local.py``, ``remote_ssh.py``) share: the result of a
command, the stdin types, deadlines, the line splitter, the errors for a failed, timed-out or
silent command, and the pieces of a binary stream (stdin chunks, the stderr tail, the drain).

Nothing here opens a process or a connection; callers import the remotes from
``client/remote.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import BinaryIO

from .errors import CommandFailed, RemoteError, StreamSilent

CHUNK = 65536
STDERR_TAIL_BYTES = 64 * 1024  # what a stream keeps of stderr for CommandFailed
BINARY_BUFFER = 1 << 20  # the buffer of open_binary's reader
LOOPBACK = frozenset({"127.0.0.1", "localhost", "::1"})
BACKOFF_S = 0.5  # first wait before another attempt; doubles each time (0.5 s, 1 s, 2 s...)

Stdin = bytes | bytearray | memoryview | str | None
BinaryStdin = Stdin | Iterable[bytes]  # open_binary: an iterable is fed chunk by chunk


@dataclass(frozen=True)
class CommandResult:
    command: str
    exit_code: int
    stdout: str
    stderr: str

    @property
    def ok(self) -> bool:
        return self.exit_code == 0


def backoff_s(attempt: int, *, cap: float | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (0-based): 0.5, 1, 2, ...,
    at most ``cap`` when given."""
    wait = BACKOFF_S * 2 ** min(attempt, 32)
    return wait if cap is None else min(cap, wait)


def as_bytes(stdin: Stdin) -> bytes | None:
    if stdin is None:
        return None
    if isinstance(stdin, str):
        return stdin.encode("utf-8")
    return bytes(stdin)


def text(data: bytes | bytearray) -> str:
    return bytes(data).decode("utf-8", "replace")


def expand_home(path: str, home: Callable[[], str]) -> str:
    """``~`` or a leading ``~/`` replaced by ``home()``; any other path unchanged."""
    if path == "~":
        return home()
    if path.startswith("~/"):
        return home().rstrip("/") + path[1:]
    return path


def deadline_after(timeout: float | None) -> float | None:
    return None if timeout is None else time.monotonic() + timeout


def wait_s(deadline: float | None, *, cap: float = 0.5) -> float:
    """How long to block before looking again: at most ``cap``, never past ``deadline``."""
    if deadline is None:
        return cap
    return max(0.0, min(cap, deadline - time.monotonic()))


def expired(deadline: float | None) -> bool:
    return deadline is not None and time.monotonic() >= deadline


def keep_tail(buf: bytearray, data: bytes) -> None:
    buf += data
    if len(buf) > STDERR_TAIL_BYTES:
        del buf[: len(buf) - STDERR_TAIL_BYTES]


class LineBuffer:
    """Splits a byte stream into text lines (no newline) as chunks arrive."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[str]:
        self._buf += data
        *lines, rest = self._buf.split(b"\n")
        self._buf = rest
        return [text(line).removesuffix("\r") for line in lines]

    def flush(self) -> list[str]:
        """The last line when the stream ended without a newline."""
        if not self._buf:
            return []
        line, self._buf = self._buf, bytearray()
        return [text(line).removesuffix("\r")]


def checked(result: CommandResult, *, check: bool, host: str) -> CommandResult:
    if check and not result.ok:
        raise CommandFailed(
            command=result.command,
            exit_code=result.exit_code,
            output=result.stdout + result.stderr,
            host=host,
        )
    return result


def failed(*, host: str, command: str, exit_code: int, stderr: bytearray) -> CommandFailed:
    return CommandFailed(command=command, exit_code=exit_code, output=text(stderr), host=host)


def timed_out(host: str, command: str, timeout: float | None) -> RemoteError:
    return RemoteError(
        f"command on {host} timed out after {timeout}s: {command}",
        hint="raise the timeout or check what the command waits for",
    )


def silent(host: str, command: str, timeout: float | None) -> StreamSilent:
    return StreamSilent(
        f"no output for {timeout}s from a stream on {host}: {command}",
        hint="the command stopped printing; check it on the head, or pass a longer timeout",
    )


# --------------------------------------------------------------------------- binary streams
#
# ``open_binary`` (on both remotes): a command's stdout as a readable binary file, for bulk
# transfers (the result puller streams files through it). Bytes arrive as sent, nothing is
# decoded; reading never holds more than one buffer in memory.


def stdin_chunks(stdin: BinaryStdin) -> Iterable[bytes] | None:
    """``open_binary``'s ``stdin`` as chunks to feed (None: the command gets no stdin)."""
    if stdin is None or isinstance(stdin, bytes | bytearray | memoryview | str):
        data = as_bytes(stdin)
        return None if data is None else (data,)
    return stdin


def discard_rest(reader: BinaryIO) -> None:
    while reader.read(BINARY_BUFFER):
        pass


def collect_tail(
    read: Callable[[int], bytes], tail: bytearray, *, errors: tuple[type[BaseException], ...]
) -> None:
    """Read a stream to its end (a thread), keeping its last ``STDERR_TAIL_BYTES``; a read
    that times out is tried again, one that raises one of ``errors`` ends it."""
    while True:
        try:
            data = read(CHUNK)
        except TimeoutError:
            continue
        except errors:
            return
        if not data:
            return
        keep_tail(tail, data)
